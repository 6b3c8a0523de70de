"""The model card's flattening rule (issue: gain in val coherence over the last 3 CPU hours under 0.01 per CPU hour)."""
from bench.model_card import flattening_sentence


def test_flattening_rule_on_a_flat_and_a_rising_curve():
    flat = [(0.25 * k, 0.15 + (0.004 if k % 2 else -0.004)) for k in range(17)]  # 4 CPU h, noise only
    assert "has flattened" in flattening_sentence(flat)
    rising = [(0.25 * k, 0.10 + 0.05 * 0.25 * k) for k in range(17)]  # +0.05 per CPU hour
    text = flattening_sentence(rising)
    assert "not flattened" in text and "+0.0500" in text
    assert "needs 3 CPU hours" in flattening_sentence(flat[:5])  # 1 CPU hour recorded: the rule cannot apply yet
