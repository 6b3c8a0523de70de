"""Errors for bad user input, shared by every layer: one family, each shown to the user as one line.

Only bad input belongs here (the CLI answers exit 2, the API a 4xx); anything else is a bug or an outage and
surfaces as an internal error.
"""


class InputError(ValueError):
    """Bad user input (file, array, option). The message names the problem and is shown as one line."""


class OptionsError(InputError):
    """An option value out of its bounds or inconsistent with another (reconstruction, simulation, training)."""


class InputFileError(InputError):
    """An input file that is missing, unreadable, or lacks the dataset or layout it should have."""


class ScanRefError(InputError):
    """A scan reference (Tiled path, scan number, detector, run uid) that is malformed or names nothing."""


class SettingsError(InputError):
    """Service settings (environment variables, config file) that are missing, malformed or inconsistent."""


class AccessError(InputError, PermissionError):
    """A key the user gave was refused (a Tiled API key, a gateway key): one line, naming the server. Also a
    PermissionError, so code that handles refused access by its standard type keeps working."""
