"""Errors that mean "the user's input is wrong": the commands print them as one message, exit 2, no traceback."""


class UserError(Exception):
    """Bad config value, data file or checkpoint. The message names the value/file and says how to fix it."""


class DataError(UserError):
    """Missing, corrupt or malformed data."""


class ConfigError(UserError):
    """A config value that is out of range or a combination that makes no sense."""


def user_error(e: BaseException) -> UserError | None:
    """The UserError behind `e`, if any (Hydra wraps errors raised inside instantiate). Lightning's
    MisconfigurationException says the same of a Trainer setting, in Lightning's words."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    while e is not None:
        if isinstance(e, UserError):
            return e
        if isinstance(e, MisconfigurationException):
            return ConfigError(f"{str(e).strip().splitlines()[0]} (Lightning); fix the trainer.* or callbacks.* value")
        e = e.__cause__ or e.__context__
    return None
