"""Errors shared by every layer: bad user input is one exception type, shown as one line."""


class InputError(ValueError):
    """Bad user input (file, array, option). The message names the problem and is shown as one line."""
