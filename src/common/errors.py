"""Errors that mean "the user's input is wrong": the commands print them as one message, exit 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator


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

    for seen in behind(e):
        if isinstance(seen, UserError):
            return seen
        if isinstance(seen, MisconfigurationException):
            return ConfigError(
                f"{str(seen).strip().splitlines()[0]} (Lightning); fix the trainer.* or callbacks.* value"
            )
    return None


def described(e: BaseException) -> str:
    """A failed run's `error` in its metrics.json and the sweep's ledger: the type raised, and the user's error
    behind it where there is one (its message names the value and the fix), else the error itself."""
    return f"{type(e).__name__}: {user_error(e) or e}"


def behind(e: BaseException | None) -> Iterator[BaseException]:
    """`e` and the errors behind it, the one it was raised from (or while handling) first. Each once: re-raising an
    error of the chain (`raise user_error(e) from None`) links it back to `e`, a cycle."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


# The signals that stop a command from outside, by what the user did, with the exit status a shell gives them.
STOPPED_BY = {"Ctrl-C (SIGINT)": 130, "SIGTERM": 143}


def interrupted_by(error: BaseException) -> str | None:
    """What stopped the command from outside (a key of STOPPED_BY), or None for an error of its own. Lightning
    turns Ctrl-C during fit or test into SystemExit(1) (the KeyboardInterrupt its context) and SIGTERM into
    SIGTERMException, a SystemExit without a code (exit status 0, as if all went well)."""
    sigterm = getattr(sys.modules.get("lightning.pytorch.utilities.exceptions"), "SIGTERMException", None)
    for seen in behind(error):
        if isinstance(seen, KeyboardInterrupt):
            return "Ctrl-C (SIGINT)"
        if sigterm is not None and isinstance(seen, sigterm):
            return "SIGTERM"
    return None


def not_there(path, want: str = "file") -> str:
    """Why `path` is not the `want` ("file" or "folder") a setting needs, for its message: missing, or what is
    there instead (a folder where a file belongs, a file or a device such as /dev/null where a folder does)."""
    import stat
    from pathlib import Path

    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file" if want == "file" else "is a folder"
    if stat.S_ISREG(mode):
        return "is a file, not a folder" if want == "folder" else "is a file"
    kind = "a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
    return f"is {kind}, not a {'regular file' if want == 'file' else 'folder'}"


def encoding_hint(data: bytes, path) -> str:
    """How to convert a file that is not UTF-8, as a command that can be typed: its encoding guessed from the whole
    file by charset_normalizer (a short line alone is easily taken for another script's multi-byte code), else
    how to find it out."""
    import shlex
    from pathlib import Path

    path = Path(path)
    out = shlex.quote(str(path.with_name(f"{path.stem}.utf8{path.suffix}")))
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[: 1 << 20].replace(b"\t", b" ")).best()  # it counts tabs as noise
    except Exception:  # not installed, or nothing it can tell: say how to find out
        best = None
    if best is None or best.language in ("", "Unknown"):
        return (
            f"find its encoding (e.g. `file -i {shlex.quote(str(path))}`), then convert it: "
            f"`iconv -f <encoding> -t UTF-8 {shlex.quote(str(path))} > {out}`"
        )
    names = [n.replace("_", "-").upper() for n in dict.fromkeys([best.encoding, *best.could_be_from_charset])]
    others = f" (or {', '.join(names[1:3])})" if len(names) > 1 else ""
    return (
        f"it reads as {best.language} in {names[0]}{others}; convert it: "
        f"`iconv -f {names[0]} -t UTF-8 {shlex.quote(str(path))} > {out}`"
    )
