"""What every Hydra command of the suite shares: a bad command line is one line and exit 2.

Hydra reports its own errors about the command line (an unknown option of a config group, an override of a key
that does not exist, a malformed override) over several lines and exits 1, the status a failed sweep job also
gives. `run(main)` holds back what Hydra writes to stderr until the command's own function starts; if Hydra
exits before that, its report is printed as one `error:` line and the exit status is 2. With HYDRA_FULL_ERROR=1
Hydra's own output is left as it is.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import shlex
import sys
from collections.abc import Callable

from src.common import allocator
from src.common.errors import STOPPED_BY, interrupted_by

started = False  # set by the command's own function (see mark_started)
# What Hydra's override grammar says of a value it cannot read unquoted.
GRAMMAR = ("LexerNoViableAltException", "mismatched input", "no viable alternative", "token recognition error")


def mark_started() -> None:
    """Called first thing by the command's function: from here on, errors are the command's own."""
    global started
    started = True
    if isinstance(sys.stderr, _Held):
        sys.stderr.release()


class _Held(io.TextIOBase):
    """sys.stderr held back; once released, a plain pass-through (a handler that kept a reference still works)."""

    def __init__(self, real):
        self.real, self.buffer_text, self.released = real, [], False

    def write(self, text: str) -> int:
        if self.released:
            return self.real.write(text)
        self.buffer_text.append(text)
        return len(text)

    def flush(self) -> None:
        if self.released:
            self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()

    def release(self) -> None:
        sys.stderr, self.released = self.real, True
        self.real.write("".join(self.buffer_text))
        self.real.flush()


# A longer list of a group's options (cell= has over 20) is cut to the closest names, so the line fits a terminal.
MAX_OPTIONS = 8


def one_line(report: str) -> str:
    """Hydra's report in one line: its sentences joined, a list of available options as a comma list (only the
    names closest to the one asked for when there are more than MAX_OPTIONS), and no search path or stack-trace
    hint. A stack trace (an override Hydra fails on inside, e.g. an assertion) is its last line."""
    if "Traceback (most recent call last)" in report:
        last = [line.strip() for line in report.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
        return f"Hydra could not read the command line ({last[-1] if last else 'no message'})"
    parts: list[str] = []
    options: list[str] = []
    wanted = re.search(r"Could not find '[^'/]+/([^']+)'", report)

    def listed() -> str:
        if len(options) <= MAX_OPTIONS:
            return ", ".join(options)
        close = difflib.get_close_matches(wanted.group(1), options, n=4, cutoff=0.5) if wanted else []
        if close:
            return f"{', '.join(close)} (the closest of {len(options)}; --help lists them all)"
        return f"{', '.join(options[:MAX_OPTIONS])}, ... ({len(options)}; --help lists them all)"

    for line in (line.strip() for line in report.splitlines()):
        if not line or "HYDRA_FULL_ERROR" in line or line.startswith(("Config search path", "provider=")):
            continue
        if parts and parts[-1].startswith("Available options") and not line.endswith(":") and " " not in line:
            options.append(line)
            continue
        if options:
            parts[-1] += " " + listed()
            options = []
        parts.append(line)
    if options:
        parts[-1] += " " + listed()
    return "; ".join(parts)


def _quoted(value: str) -> str:
    """`value` as Hydra's grammar reads it verbatim: in double quotes, a list's elements each quoted."""
    if value.startswith("[") and value.endswith("]"):
        items = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        return "[" + ",".join(v if v[:1] in "\"'" else _quoted(v) for v in items) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def override_hint(args: list[str]) -> str | None:
    """For a command line Hydra refused: an override with no key ("=2", "+=gru": Hydra fails on them with a
    stack trace), a `key+=value` typo, or a value Hydra's grammar cannot read unquoted (a non-ASCII letter, an
    `=` inside a path), the message or hint that names it, with the fix written as it can be typed in a shell."""
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        bare = key.lstrip("+~")
        if not bare:
            return (
                f"the override {arg!r} names no key before '='; write key=value, e.g. cell=gru, depth=2 or "
                f"+tags=[a] (python -m src.train --help lists the settings)"
            )
        if bare.endswith("+"):
            name = bare.rstrip("+")
            return (
                f"the override {arg!r}: '+=' is no operator; write {name}={value} to set {name}, or "
                f"+{name}={value} to add it"
            )
        if ("=" in value or not value.isascii()) and value[:1] not in "\"'":
            return f"quote the value, typed as shown: {shlex.quote(f'{key}={_quoted(value)}')}"
    return None


def options_first(args: list[str]) -> list[str]:
    """`args` with Hydra's options (-m, --cfg job, ...) moved before the overrides, each with its value, the order
    within each kept. Hydra's argparse reads the overrides as one run of words, so `cell=gru -m seed=1,2` (what
    `make train ARGS="..."` or an edited command line gives) left `seed=1,2` unread; an option may stand anywhere."""
    from hydra._internal.utils import get_args_parser

    actions = {name: a for a in get_args_parser()._actions for name in a.option_strings}
    options, overrides, bare, words = [], [], [], iter(args)
    for arg in words:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        action = actions.get(arg)
        if action is not None and action.nargs is None:  # its value: the next word, whatever it is
            value = next(words, None)
            if value is None:
                bare.append(arg)  # none given: argparse says so
            else:
                options += [arg, value]
        elif action is not None and action.nargs == "?":  # --info [what]: the next word if it is one of its choices
            value = next(words, None)
            if value in (action.choices or ()):
                options += [arg, value]
            else:  # given bare: last, where it cannot take the first override for its value
                bare.append(arg)
                overrides += [value] if value is not None else []
        else:
            options.append(arg)  # a flag, or an unknown option for argparse to name
    return options + overrides + bare


def run(main: Callable[[], object]) -> None:
    """The command's function run: Hydra's options read wherever they stand (options_first); Hydra's report of a bad
    command line as one line (module docstring); a command stopped by Ctrl-C or SIGTERM exits with the status a
    shell gives the signal (130, 143), not Lightning's (1 for Ctrl-C; 0 for SIGTERM, as if all went well)."""
    allocator.set_up_command()
    sys.argv[1:] = options_first(sys.argv[1:])
    try:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's own output as it is
            main()
        else:
            _run_held(main)
    except SystemExit as e:
        if (how := interrupted_by(e)) is not None:
            raise SystemExit(STOPPED_BY[how]) from e
        raise


def _run_held(main: Callable[[], object]) -> None:
    held = _Held(sys.stderr)
    sys.stderr = held
    try:
        main()
    except ValueError as e:  # Hydra's refusal of options that exclude each other (-m with --cfg job)
        if started or not str(e).startswith("Only one of"):
            raise
        held.release()
        print(f"error: {e} (--help lists the options)", file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:
        if not held.released:
            held.released, sys.stderr = True, held.real
            report = "".join(held.buffer_text)
            if e.code == 1 and not started:
                hint = override_hint(sys.argv[1:])
                message = hint if hint and hint.startswith("the override") else one_line(report) or "bad command line"
                if hint and not hint.startswith("the override") and any(m in report for m in GRAMMAR):
                    message += f"; {hint}"
                print(f"error: {message}", file=sys.stderr)
                sys.exit(2)
            if e.code == 2 and not started and (said := re.search(r"^\S+: error: (.+)$", report, re.M)):
                # argparse's refusal of an option: its usage block left out, --help shows it
                print(f"error: {said.group(1)} (--help lists the options)", file=sys.stderr)
                sys.exit(2)
            sys.stderr.write(report)
        raise
    finally:
        if not held.released:
            held.release()
