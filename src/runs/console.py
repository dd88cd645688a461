"""The console of a run: its own lines and real warnings, not the libraries' notices (conf/hydra/job_logging/).

Everything still reaches <run dir>/train.log: the filters here apply to the console handlers only.
"""

from __future__ import annotations

import logging
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
