"""Errors that mean "the user's input is wrong": the commands print them as one message, exit 2, no traceback."""


class UserError(Exception):
    """Bad config value, data file or checkpoint. The message names the value/file and says how to fix it."""


class DataError(UserError):
    """Missing, corrupt or malformed data."""


class ConfigError(UserError):
    """A config value that is out of range or a combination that makes no sense."""
