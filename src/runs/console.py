"""The console of a run: its own lines and real warnings, not the libraries' notices (conf/hydra/job_logging/).

Everything still reaches <run dir>/train.log: the filters here apply to the console handlers only.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

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


class _HeldLog(logging.handlers.MemoryHandler):
    """The run's log file, held in memory until the run dir is known to be the run's own (`release_run_log`)."""

    def __init__(self, file: logging.FileHandler):
        super().__init__(capacity=1 << 30, flushLevel=logging.CRITICAL + 1, target=None, flushOnClose=False)
        self.file = file


def hold_run_log() -> None:
    """A job's log file (<run dir>/train.log, opened only at its first line: conf/hydra/job_logging/quiet.yaml)
    takes no line before the run dir is claimed: a run refused a dir that is not its own (another config's
    finished run, a live run, files of unknown origin) must leave no log in it, nor add lines to its log."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            root.addHandler(_HeldLog(handler))


def release_run_log(keep: bool) -> None:
    """keep: the run dir is the run's own, and its log gets every line held so far and the rest; else the lines
    are dropped and the file is never opened."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _HeldLog):
            root.removeHandler(handler)
            if keep:
                handler.setTarget(handler.file)
                handler.flush()
                root.addHandler(handler.file)
            else:
                handler.buffer.clear()
                handler.file.close()
