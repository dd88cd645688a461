"""The console of a run: its own lines and real warnings, not the libraries' notices (conf/hydra/job_logging/).

Everything still reaches <run dir>/train.log: the filters here apply to the console handlers only.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.handlers
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Logged at INFO on the console: the run's own loggers and Hydra's (its launcher names each job of a multirun).
OWN = ("src", "__main__", "hydra")
# Library notices that ask nothing of the user, kept out of the console (still in train.log):
NOISE = re.compile(
    "|".join(
        (
            # Lightning 2.6's own code on torch >= 2.10 (lightning/pytorch/utilities/_pytree.py), a FutureWarning
            # about an API Lightning uses, once per process.
            r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        )
    )
)


# Lightning's notices that are not about the run at all, kept out of train.log too: an advertisement for a cloud
# service, and the note that the suite's own model summary (src/runs/callbacks.py) replaces Lightning's default.
NOT_ABOUT_THE_RUN = re.compile(r"try installing \[litlogger\]|Trainer already configured with model summary callbacks")
LIGHTNING_INFO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")  # rank_zero_info's


class NotAboutTheRun(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOT_ABOUT_THE_RUN.search(record.getMessage())


class OwnInfo(logging.Filter):
    """Below WARNING, only the run's own records (warnings and errors go to the stderr handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "__main__" or record.name.split(".", 1)[0] in OWN
        return own and record.levelno < logging.WARNING


class NotNoise(logging.Filter):
    """Warnings and errors, less the NOISE notices. Python warnings (logged through logging.captureWarnings) lose
    the newline that warnings.formatwarning ends them with, which would print an empty line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            record.msg, record.args = record.getMessage().rstrip("\n"), None
        return not NOISE.search(record.getMessage())


def capture_warnings() -> None:
    """Python warnings into the run's log (train.log, and the console less the noise) instead of bare stderr."""
    logging.captureWarnings(True)


def route_lightning_logs() -> None:
    """Lightning adds console handlers of its own when it is first imported. The commands import it where it is
    used, after Hydra set up the run's logging (conf/hydra/job_logging/), so those handlers would print around the
    run's filters; they are removed here and Lightning's records go through the run's handlers (train.log)."""
    import lightning  # noqa: F401

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in LIGHTNING_INFO:
        notices = logging.getLogger(name)
        if not any(isinstance(f, NotAboutTheRun) for f in notices.filters):
            notices.addFilter(NotAboutTheRun())


class RunLogFile(logging.FileHandler):
    """<run dir>/train.log (conf/hydra/job_logging/quiet.yaml), opened without following a symbolic link. Hydra
    opens the log before the run has claimed its dir; a link planted there is never written through: the handler
    stays closed and the claim then refuses the dir, naming the link (src/records/rundir.py)."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = False, errors=None):
        self.linked = os.path.islink(filename)
        super().__init__(filename, mode, encoding=encoding, delay=delay or self.linked, errors=errors)

    def _open(self):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if "a" in self.mode else os.O_TRUNC)
        return os.fdopen(
            os.open(self.baseFilename, flags, 0o666), self.mode, encoding=self.encoding, errors=self.errors
        )

    def emit(self, record: logging.LogRecord) -> None:
        if not self.linked:
            super().emit(record)


_member_lines: contextvars.ContextVar[str | None] = contextvars.ContextVar("member_lines", default=None)


@contextlib.contextmanager
def lines_of_member(folder: str | Path | None) -> Iterator[None]:
    """The log lines written inside are one member's (its build's `Seed set to <s>`, its result, its W&B run's
    place): they go to the job's log and to that member's own, not to the other members' (where 1,000 members
    would each hold all 1,000 members' lines). None: lines for everyone, as outside."""
    token = _member_lines.set(os.path.abspath(folder) if folder is not None else None)
    try:
        yield
    finally:
        _member_lines.reset(token)


class _OwnLines(logging.Filter):
    """On a member's log: every line but those of another member (lines_of_member)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.dir = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return _member_lines.get() in (None, self.dir)


class _HeldLog(logging.handlers.MemoryHandler):
    """A run's log file, held in memory until its run dir is known to be the run's own (`release_run_log`)."""

    def __init__(self, file: logging.FileHandler, member: bool = False):
        super().__init__(capacity=1 << 30, flushLevel=logging.CRITICAL + 1, target=None, flushOnClose=False)
        self.file, self.member = file, member
        self.dir = os.path.dirname(file.baseFilename)


def hold_run_log() -> None:
    """A job's log file (<run dir>/train.log, opened only at its first line: conf/hydra/job_logging/quiet.yaml)
    takes no line before the run dir is claimed: a run refused a dir that is not its own (another config's
    finished run, a live run, files of unknown origin) must leave no log in it, nor add lines to its log."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            root.addHandler(_HeldLog(handler))


def hold_member_logs(dirs: list[Path]) -> None:
    """A stacked job's members each get the job's log in their own dir (<member dir>/train.log, as the job's log
    file is named and formatted), as their single runs would have theirs; each held until its member claims its
    dir (`release_run_log(within=<member dir>)`). Nothing where the job has no log file (an in-process call)."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    files += [h.file for h in root.handlers if isinstance(h, _HeldLog)]
    if not files:
        return
    template, name = files[0], os.path.basename(files[0].baseFilename)
    for folder in dirs:
        handler = RunLogFile(str(Path(folder) / name), delay=True)
        handler.setFormatter(template.formatter)
        handler.setLevel(template.level)
        held = _HeldLog(handler, member=True)
        for h in (held, handler):  # (a held line is checked as it is logged; the file's, once released)
            h.addFilter(_OwnLines(held.dir))
        root.addHandler(held)


def keep_to_own_lines(folder: str | Path) -> None:
    """The job's log file in `folder` takes no other member's lines (lines_of_member): a packed multirun's log is
    its first job's, a member like the others, whose log holds its own lines as an unpacked job's does."""
    folder = os.path.abspath(folder)
    for handler in logging.getLogger().handlers:
        file = handler.file if isinstance(handler, _HeldLog) else handler
        if isinstance(file, logging.FileHandler) and os.path.dirname(os.path.abspath(file.baseFilename)) == folder:
            for h in {handler, file}:
                h.addFilter(_OwnLines(folder))


def release_run_log(keep: bool, within: str | Path | None = None) -> None:
    """keep: the run dir is the run's own, and its log gets every line held so far and the rest; else the lines
    are dropped and the file is never opened. within: only the log held for that dir (a stacked job's member:
    each claims its own; never another member's), or, in a job without members, its log held elsewhere (a
    single run's, with paths.output_dir set apart from Hydra's dir); None: every held log."""
    root = logging.getLogger()
    held = [h for h in root.handlers if isinstance(h, _HeldLog)]
    if within is not None:
        own = [h for h in held if h.dir == os.path.abspath(within)]
        held = own or ([] if any(h.member for h in held) else held)
    for handler in held:
        root.removeHandler(handler)
        if keep:
            handler.setTarget(handler.file)
            handler.flush()
            root.addHandler(handler.file)
        else:
            handler.buffer.clear()
            handler.file.close()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def scratch_home() -> Path | None:
    """A home the user cannot write (read-only, or not a folder: a container, a CI job) makes W&B's service print
    its log lines on the console (it cannot create its log folder) and matplotlib its warnings, on every run.
    Their folders then go to a scratch folder (XDG_CACHE_HOME, XDG_CONFIG_HOME, MPLCONFIGDIR, WANDB_*_DIR, each
    only where the user has not set it); the scratch folder, or None where the home is writable."""
    home = Path(os.environ.get("HOME") or Path.home())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    if _writable(cache) and _writable(config):
        return None
    scratch = Path(tempfile.gettempdir()) / f"rnn-bench-home-{os.getuid()}"
    for var, sub in (
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_CONFIG_HOME", "config"),
        ("MPLCONFIGDIR", "matplotlib"),
        ("WANDB_CACHE_DIR", "wandb-cache"),
        ("WANDB_CONFIG_DIR", "wandb-config"),
        ("WANDB_DATA_DIR", "wandb-data"),
    ):
        if not os.environ.get(var) or not _writable(Path(os.environ[var])):
            os.environ[var] = str(scratch / sub)
            (scratch / sub).mkdir(parents=True, exist_ok=True)
    return scratch
