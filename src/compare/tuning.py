"""The tuning protocol (`python -m src.compare --tune optimizer.lr`): a sweep gives every architecture the same grid
of a setting (a learning rate, with several seeds at each point); per task and architecture the comparison keeps
the grid point with the best mean **validation** value of the monitored metric (`<monitor>_best` in metrics.json,
the checkpoint that is tested) and reports that point's **test** metric. Where the pick sits at the grid's edge
(its lowest or highest value) the row says so: the best may lie outside, widen the grid. `--all-points` keeps every
grid point's row, the picked ones marked.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def _value_key(value: str) -> tuple:
    """Grid values in numeric order where they are numbers (1e-3 < 0.01), else as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def validation_mean(row: Any, monitor: str) -> float | None:
    """The row's mean over seeds of its best validation value (`<monitor>_best`)."""
    found = [
        float(r.record[f"{monitor}_best"])
        for r in row.runs
        if r.ok and isinstance(r.record.get(f"{monitor}_best"), (int, float))
    ]
    return statistics.fmean(found) if found else None


def pick_points(rows: list, keys: Sequence[str], monitor: str, higher: bool, all_points: bool) -> list:
    """The rows to show: per architecture and other setting, the grid point (its `keys`) with the best mean
    validation value, annotated (row.tuned: the picked point, where it lies on the grid, whether at its edge);
    with all_points every row, the picked ones annotated and the others marked as not picked."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        terms = dict(term.partition("=")[::2] for term in row.setting.split()) if row.setting else {}
        rest = " ".join(f"{k}={v}" for k, v in terms.items() if k not in keys)
        row.grid_point = {k: terms[k] for k in keys if k in terms}
        groups[(row.arch, rest)].append(row)
    shown = []
    for members in groups.values():
        scored = [(validation_mean(row, monitor), row) for row in members]
        valid = [(v, row) for v, row in scored if v is not None]
        if not valid:
            shown += members
            continue
        _, best = (max if higher else min)(valid, key=lambda pair: pair[0])
        for row in members:
            row.tuned = ""
        notes = []
        for key in keys:
            values = sorted({row.grid_point.get(key, "") for row in members}, key=_value_key)
            at = best.grid_point.get(key, "")
            place = f"{values.index(at) + 1} of {len(values)}" if at in values else "?"
            edge = len(values) > 1 and at in (values[0], values[-1])
            notes.append(
                f"{key.rsplit('.', 1)[-1]} {at} ({place}"
                + (f"; at the grid's {'lowest' if at == values[0] else 'highest'}: widen the grid" if edge else "")
                + ")"
            )
        best.tuned = ", ".join(notes)
        best.tuned_edge = "widen the grid" in best.tuned
        if all_points:
            for row in members:
                if row is not best:
                    row.tuned = "not picked"
            shown += members
        else:
            shown.append(best)
    return shown
