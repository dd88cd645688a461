"""Run records (each run dir's metrics.json): the one reader that compare, sweeps and diagnostics use.

A record read from disk is checked before anyone computes with it: a hand-edited or damaged metrics.json (a
list, a string where a number belongs) is named with the field and skipped by the caller, never half-read.
Earlier attempts that a re-run moved aside (`previous_attempts/`, src/records/rundir.py) are not runs of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from src.common.errors import DataError

RECORD = "metrics.json"
ATTEMPTS = "previous_attempts"
STATUSES = ("ok", "failed", "running")
TEXT_FIELDS = (
    "status",
    "config_hash",
    "monitor",
    "monitor_mode",
    "task",
    "dataset",
    "cell",
    "direction",
    "truncation",
    "error",
    "device",
    "tested_checkpoint",
)
INT_FIELDS = ("depth", "seed", "params", "epochs")


class RecordError(DataError):
    """A metrics.json that is not a record of src.train."""


def check_record(record: Any, path: Path) -> dict[str, Any]:
    """`record` if it has the shape src.train writes; else RecordError naming the file and the field."""
    if not isinstance(record, dict):
        raise RecordError(
            f"{path}: a run record is a JSON object, this file holds a {type(record).__name__}; "
            f"delete it or restore it from the run"
        )
    status = record.get("status")
    if status not in STATUSES:
        raise RecordError(f"{path}: status={status!r} is not one of {', '.join(STATUSES)}")
    for key, value in record.items():
        if value is None:
            continue
        if key in TEXT_FIELDS:
            ok = isinstance(value, str)
        elif key in INT_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif "/" in key or key.endswith(("_s", "_per_s")):  # metrics, timings
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            raise RecordError(
                f"{path}: field {key!r} holds {value!r}, which is not a "
                f"{'string' if key in TEXT_FIELDS else 'number'}; the record was edited or damaged"
            )
    if status == "ok" and not isinstance(record.get("monitor"), str):
        raise RecordError(f"{path}: a finished run (status ok) must name its monitor metric")
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """The checked record in the file `path` (a metrics.json)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: unreadable ({e})") from None
    try:
        record = json.loads(text)
    except ValueError as e:
        raise RecordError(f"{path}: not JSON ({e})") from None
    return check_record(record, path)


def find_records(dirs: Iterable[str | Path]) -> tuple[list[tuple[Path, dict]], list[tuple[Path, str]]]:
    """([(run dir, record)], [(metrics.json path, why it was skipped)]) for every run below `dirs`, in path
    order, each run once."""
    found, problems, seen = [], [], set()
    for directory in dirs:
        for path in sorted(Path(directory).rglob(RECORD)):
            if ATTEMPTS in path.relative_to(directory).parts or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                found.append((path.parent, read_record(path)))
            except RecordError as e:
                problems.append((path, str(e)))
    return found, problems
