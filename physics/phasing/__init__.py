"""phasing."""
