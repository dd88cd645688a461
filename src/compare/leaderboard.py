"""The leaderboard of finished runs: which runs form a row, the task's metric and its trivial baseline, mean ±
std over seeds, the settings that tell rows apart, the cross-task summary, and the tables and curves built from
them. It reads only JSON and CSV (src/records/record.py), so comparing finished runs starts without torch; a run
logged with logger=tensorboard alone has its curves read from its event files (src/records/events.py), whose
reader, tensorboardX, loads torch.

Written out by src/compare/report.py (markdown, CSV, plots) and src/compare/html_dashboard.py (the offline dashboard).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.common.markdown import Markdown, markdown_table, md_text
from src.common.metrics import better as metric_direction
from src.records.identity import ARCH, NOT_SETTINGS, NOT_SETTINGS_PREFIXES, setting_names, short_value
from src.records.record import find_records
from src.runs.learning import SHOWN as LEARNING_SHOWN

# Only for a metric that is not the monitored one (--metric) or a record without monitor_mode: lower is better.
# Metrics that can be negative although every value seen is not: their error bars and bands are not cut at 0.
SIGNED = re.compile(r"r2|corr|lik|elbo|reward|score|gain", re.I)
# A row beats the task's trivial baseline when its mean is better by more than this fraction of the baseline:
# a tanh RNN that learned nothing sits within noise of it (adding: 0.1664 against 0.1667).
BASELINE_MARGIN = 0.01
# One colour per row, the same in every plot of a task (matplotlib's tab10, then tab20's light shades).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
BASELINE_COLOUR = "#444444"
TRAIN_LOSS = "train/loss"


@dataclass
class Run:
    dir: Path
    record: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)  # from .hydra/overrides.yaml: key -> value

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@dataclass(eq=False)  # rows are found by identity (list.index), never compared by value
class Row:
    arch: tuple
    setting: str  # the overrides that differ between the task's runs, as `key=value` (raw, for grouping)
    runs: list[Run]
    values: list[float]
    mean: float | None = None
    std: float | None = None
    best: bool = False
    beats_baseline: bool | None = None  # None: the task has no baseline for this metric, or no mean
    shown: str = ""  # the setting as people read it: "hidden 32, lr 0.01"
    colour: str = PALETTE[0]
    missing: int = 0  # finished runs of this row that did not record the metric
    # --tune (src/compare/tuning.py): the picked grid point and where it lies, or "not picked" (--all-points)
    tuned: str = ""
    tuned_edge: bool = False
    grid_point: dict = field(default_factory=dict)

    def field_mean(self, key: str) -> float | None:
        found = [r.record[key] for r in self.runs if r.ok and isinstance(r.record.get(key), (int, float))]
        return statistics.fmean(found) if found else None


@dataclass
class Baseline:
    mean: float
    low: float  # the lowest and highest value among the runs (data-set settings can differ between them)
    high: float


@dataclass
class Section:
    dataset: str
    task: str
    metric: str
    higher_is_better: bool
    monitor: str
    rows: list[Row]
    baseline: Baseline | None = None
    recorded: list[str] = field(default_factory=list)  # the test metrics its finished runs hold

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)

    @property
    def absent(self) -> bool:
        """No finished run of this task recorded the metric: it is not this task's metric (not a failure)."""
        finished = sum(r.ok for row in self.rows for r in row.runs)
        return finished > 0 and sum(row.missing for row in self.rows) == finished

    @property
    def nonnegative(self) -> bool:
        values = [v for row in self.rows for v in row.values] + ([self.baseline.low] if self.baseline else [])
        return bool(values) and min(values) >= 0 and not SIGNED.search(self.metric.split("/", 1)[-1])

    def absent_note(self) -> str:
        others = ", ".join(m for m in self.recorded if "/baseline_" not in m)
        return f"{self.metric} is not recorded for this task (not a failure: the task does not compute it)" + (
            f"; its runs record {others}" if others else ""
        )

    def ranked_rows(self) -> list[Row]:
        """The rows with a mean, best first."""
        return [row for row in self.rows if row.mean is not None]


# -- reading ------------------------------------------------------------------------------------------------------


def find_runs(dirs: Iterable[Path], problems: list[tuple[Path, str]] | None = None) -> list[Run]:
    """Every run below `dirs`; a record that is damaged or hand-edited is skipped with a warning naming the file
    and field (and added to `problems`, which the leaderboard lists), never half-read."""
    found, skipped = find_records(dirs)
    for _path, why in skipped:
        print(f"warning: skipping {why}", file=sys.stderr)
    if problems is not None:
        problems.extend(skipped)
    return [Run(run_dir, record, read_overrides(run_dir)) for run_dir, record in found]


def read_overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        print(f"warning: {path}: unreadable ({str(e).splitlines()[0]}); its settings are not shown", file=sys.stderr)
        return {}
    if not isinstance(items, list):
        print(f"warning: {path}: not a list of overrides; its settings are not shown", file=sys.stderr)
        return {}
    found = {}
    for item in items:
        key, _, value = str(item).partition("=")
        found[key.lstrip("+~")] = value
    return found


def read_curves(run: Run, columns: Sequence[str]) -> dict[str, dict[int, float]]:
    """column -> {step: the logged value}, from the run's csv/metrics.csv (Lightning's CSVLogger: a `step`
    column, one line per logging call); a line whose step or value is not a number is skipped. A member of a
    stacked run (seeds=[...], <run dir>/seed=<s>/) has its curves in the run's file, as `seed=<s>/<column>`. A run
    logged with logger=tensorboard alone has its curves read from its TensorBoard event files instead."""
    logged, prefix = run.dir, ""
    if re.fullmatch(r"seed=-?\d+", run.dir.name) and not (run.dir / "csv").exists():
        logged, prefix = run.dir.parent, f"{run.dir.name}/"
    path = logged / "csv" / "metrics.csv"
    curves: dict[str, dict[int, float]] = {c: {} for c in columns}
    if not path.exists():
        if (logged / "tensorboard").is_dir():
            from src.records.events import scalars

            found = scalars(logged / "tensorboard", [prefix + c for c in columns])
            curves.update({c: found[prefix + c] for c in columns})
        return curves
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line in csv.DictReader(f):
            try:
                step = int(float(line.get("step") or "nan"))
            except (TypeError, ValueError, OverflowError):
                continue
            for column in columns:
                try:
                    value = float(line.get(prefix + column) or "nan")
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    curves[column][step] = value
    return curves


@dataclass
class Curve:
    """One row's curve of one column: mean and sample std over its seeds at each step (std 0 for one seed)."""

    steps: list[int]
    mean: list[float]
    std: list[float]
    seeds: int


def row_curves(row: Row, columns: Sequence[str]) -> dict[str, Curve]:
    per_run = [read_curves(run, columns) for run in row.runs if run.ok]
    found = {}
    for column in columns:
        curves = [c[column] for c in per_run if c[column]]
        steps = sorted({s for c in curves for s in c})
        if not steps:
            continue
        at = [[c[s] for c in curves if s in c] for s in steps]
        found[column] = Curve(
            steps,
            [statistics.fmean(v) for v in at],
            [statistics.stdev(v) if len(v) > 1 else 0.0 for v in at],
            len(curves),
        )
    return found


# -- aggregating --------------------------------------------------------------------------------------------------


def metric_of(record: dict, forced: str | None) -> tuple[str, bool]:
    """(test metric, higher is better) for a run: the test value of its monitored metric unless --metric says."""
    monitor = record.get("monitor") or "val/loss"
    name = forced or "test/" + monitor.split("/", 1)[-1]
    mode = record.get("monitor_mode")
    if name.split("/", 1)[-1] == monitor.split("/", 1)[-1] and mode in ("max", "min"):
        return name, mode == "max"
    return name, metric_direction(name) != "min"


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def baseline_of(record: dict, metric: str) -> float | None:
    """What the task's trivial predictor scores on `metric` in this run (`test/baseline_<name>`, logged by the data
    set). A task whose loss is another metric (regress: test/loss = test/mse) has the baseline of that metric."""
    split, _, name = metric.partition("/")
    value = _number(record.get(f"{split}/baseline_{name}"))
    if value is not None or name != "loss" or _number(record.get(metric)) is None:
        return value
    for key, base in record.items():
        other = f"{split}/" + key[len(f"{split}/baseline_") :]
        if (
            key.startswith(f"{split}/baseline_")
            and _number(base) is not None
            and other != metric
            and record.get(other) == record.get(metric)
        ):
            return float(base)
    return None


def settings(runs: list[Run]) -> dict[int, tuple[str, str]]:
    """id(run) -> (raw, shown): the overrides (beyond dataset, seed and the architecture) that differ between
    these runs, as `key=value ...` and as people read them (`hidden 32, lr 0.01`)."""
    keys = {k for r in runs for k in r.overrides if k not in NOT_SETTINGS and not k.startswith(NOT_SETTINGS_PREFIXES)}
    varying = sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)
    names = setting_names(varying)
    return {
        id(r): (
            " ".join(f"{k}={r.overrides[k]}" for k in varying if k in r.overrides),
            ", ".join(f"{names[k]} {short_value(r.overrides[k])}" for k in varying if k in r.overrides),
        )
        for r in runs
    }


def better(a: float, b: float, higher: bool, margin: float = 0.0) -> bool:
    """a is better than b by more than `margin` (a fraction of |b|)."""
    gap = margin * abs(b)
    return a > b + gap if higher else a < b - gap


def build_sections(
    runs: list[Run],
    forced_metric: str | None = None,
    verdict: Any = None,
    tune: Sequence[str] = (),
    all_points: bool = False,
) -> list[Section]:
    """The tasks' sections, rows best first; ★ on each task's winning group (src/compare/significance.py
    mark_winners: the best row and the rows not significantly different from it; `verdict`: a
    SignificanceOptions for the test, default Welch's t, Holm-corrected, alpha 0.05). `tune`: grid settings
    (optimizer.lr) of which each architecture keeps its validation-picked point (src/compare/tuning.py)."""
    from src.compare.significance import SignificanceOptions, mark_winners

    verdict = verdict or SignificanceOptions("")
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_dataset[str(run.record.get("dataset"))].append(run)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for dataset, members in by_dataset.items():
        # A run that failed before its task was built has no monitor: it joins the data set's usual metric.
        known = [metric_of(r.record, forced_metric) for r in members if r.record.get("monitor")]
        usual = max(set(known), key=known.count) if known else metric_of({}, forced_metric)
        for run in members:
            metric = metric_of(run.record, forced_metric) if run.record.get("monitor") else usual
            groups[(dataset, *metric)].append(run)
    sections = []
    for (dataset, metric, higher), members in sorted(groups.items()):
        setting = settings(members)
        rows: dict[tuple, Row] = {}
        for run in members:
            arch = tuple(run.record.get(k) for k in ARCH)
            raw, shown = setting[id(run)]
            row = rows.setdefault((arch, raw), Row(arch, raw, [], [], shown=shown))
            row.runs.append(run)
            value = run.record.get(metric)
            if run.ok and _number(value) is not None:
                row.values.append(float(value))
            elif run.ok and value is None:
                row.missing += 1
        for row in rows.values():
            if row.values:
                row.mean = statistics.fmean(row.values)
                row.std = statistics.stdev(row.values) if len(row.values) > 1 else None
        monitor = next((str(r.record["monitor"]) for r in members if r.record.get("monitor")), "")
        if tune:
            from src.compare.tuning import pick_points

            kept = pick_points(list(rows.values()), tune, monitor, higher, all_points)
            rows = {id(row): row for row in kept}
        bases = [b for b in (baseline_of(r.record, metric) for r in members if r.ok) if b is not None]
        baseline = Baseline(statistics.fmean(bases), min(bases), max(bases)) if bases else None
        for row in rows.values():
            if baseline is not None and row.mean is not None:
                row.beats_baseline = better(row.mean, baseline.mean, higher, BASELINE_MARGIN)
        ranked = sorted(rows.values(), key=lambda r: (r.mean is None, -(r.mean or 0) if higher else (r.mean or 0)))
        for i, row in enumerate(ranked):
            row.colour = PALETTE[i % len(PALETTE)]
        task = next((str(r.record["task"]) for r in members if r.record.get("task")), "?")
        recorded = sorted(
            {
                k
                for r in members
                if r.ok
                for k, v in r.record.items()
                if k.startswith("test/") and _number(v) is not None
            }
        )
        section = Section(dataset, task, metric, higher, monitor, ranked, baseline, recorded)
        mark_winners(section, verdict)
        sections.append(section)
    return sections


@dataclass
class CellSummary:
    cell: str
    tasks: int  # tasks (sections) where the cell has a row with a mean
    ranks: list[float]  # its rank among the cells in each of them (by its best row; 1 = best)
    wins: int  # tasks where it is in the winning group (★)
    beats_baseline: int  # tasks where its best row beats the task's baseline
    with_baseline: int  # tasks that have a baseline

    @property
    def mean_rank(self) -> float:
        return statistics.fmean(self.ranks)


def cell_summary(sections: Sequence[Section]) -> list[CellSummary]:
    """Each cell's rank among the cells of every task it ran (by its best row there), their mean, and its wins
    (tasks where it holds the star); sorted by mean rank."""
    found: dict[str, CellSummary] = {}
    for section in sections:
        best: dict[str, Row] = {}
        for row in section.ranked_rows():  # best first: a cell's first row is its best
            best.setdefault(str(row.arch[0]), row)
        winners = {str(r.arch[0]) for r in section.rows if r.best}
        for cell, row in best.items():
            # The winning group's cells share rank 1 (not significantly different); the others follow by their mean,
            # after every cell better than them (cells tied with it share the better rank).
            rank = (
                1
                if cell in winners
                else 1 + sum(better(other.mean, row.mean, section.higher_is_better) for other in best.values())
            )
            summary = found.setdefault(cell, CellSummary(cell, 0, [], 0, 0, 0))
            summary.tasks += 1
            summary.ranks.append(float(rank))
            summary.wins += any(r.best for r in section.rows if str(r.arch[0]) == cell)
            summary.beats_baseline += bool(row.beats_baseline)
            summary.with_baseline += row.beats_baseline is not None
    return sorted(found.values(), key=lambda s: (s.mean_rank, -s.wins, s.cell))


# -- writing ------------------------------------------------------------------------------------------------------


def _num(x: float | None, spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec)


def label(row: Row) -> str:
    cell, depth, direction, truncation = row.arch
    text = f"{cell}-d{depth}-{direction}-{truncation}"
    return f"{text} {row.shown}" if row.shown else text


def value_text(row: Row) -> str:
    """mean ± std; or why there is none: every run failed, the runs did not record the metric, or it is NaN."""
    if row.mean is not None:
        return _num(row.mean) + (f" ± {row.std:.2g}" if row.std is not None else "")
    finished = sum(r.ok for r in row.runs)
    return "failed" if not finished else "not recorded" if row.missing == finished else "not a number"


def ended_text(row: Row) -> str:
    """How the row's finished runs ended, by metrics.json's `learning` (src/runs/learning.py): "plateau 2/3, still
    learning 1/3"; "" where none recorded it."""
    finished = [r for r in row.runs if r.ok]
    found: dict[str, int] = defaultdict(int)
    for run in finished:
        verdict = run.record.get("learning")
        if verdict in LEARNING_SHOWN:
            found[verdict] += 1
    ordered = sorted(found.items(), key=lambda item: (-item[1], list(LEARNING_SHOWN).index(item[0])))
    return ", ".join(f"{LEARNING_SHOWN[verdict]} {n}/{len(finished)}" for verdict, n in ordered)


def budget_text(row: Row) -> str:
    """The budget the row's finished runs had (metrics.json `budget`): "600 updates", "30 epochs"; several where
    they differ."""
    found = []
    for run in row.runs:
        budget = run.record.get("budget")
        if run.ok and isinstance(budget, dict) and _number(budget.get("value")) is not None:
            text = f"{budget['value']:,.0f} {budget.get('kind', '')}".strip()
            found += [text] if text not in found else []
    return ", ".join(found)


def has_verdicts(section: Section) -> bool:
    return any(ended_text(row) for row in section.rows)


def baseline_text(baseline: Baseline) -> str:
    spread = f" ({baseline.low:.4g}..{baseline.high:.4g} across runs)" if baseline.high > baseline.low else ""
    return f"{baseline.mean:.4g}{spread}"


def table_lines(section: Section) -> list[dict]:
    """The leaderboard's lines: the rows best first, the baseline after the last row that beats it."""
    with_setting = any(row.shown for row in section.rows)
    verdicts = has_verdicts(section)
    lines = []
    for row in section.rows:
        value = value_text(row)
        failed = sum(not r.ok for r in row.runs)
        line: dict[str, Any] = dict(zip(ARCH, row.arch))
        if with_setting:
            line["setting"] = row.shown
        line[section.metric] = Markdown(f"**{value}** ★") if row.best else value
        if any(r.tuned for r in section.rows):
            line["picked on validation"] = Markdown(f"**{row.tuned}**") if row.tuned_edge else row.tuned
        if section.baseline is not None:
            line["beats baseline"] = {True: "yes", False: Markdown("**no**"), None: ""}[row.beats_baseline]
        params, state = row.field_mean("params"), row.field_mean("state_floats")
        line.update(
            {
                "seeds": f"{len(row.values)}"
                + (f" (+{failed} failed)" if failed else "")
                + (f" ({row.missing} without it)" if row.missing and row.values else ""),
            }
        )
        if verdicts:
            ended = ended_text(row)
            line["budget"] = budget_text(row)
            line["ended"] = Markdown(md_text(ended).replace("still learning", "**still learning**")) if ended else ""
        line.update(
            {
                "params": f"{params:,.0f}" if params is not None else "",
                "state": f"{state:,.0f}" if state is not None else "",
                "samples/s": _num(row.field_mean("train_samples_per_s"), ",.0f"),
                "wall s": _num(row.field_mean("wall_s"), ".1f"),
            }
        )
        lines.append(line)
    if section.baseline is not None:
        at = sum(bool(row.beats_baseline) for row in section.rows)
        line = {key: "" for key in lines[0]} if lines else {}
        line.update({"cell": Markdown("*baseline*"), section.metric: Markdown(f"*{baseline_text(section.baseline)}*")})
        if with_setting:
            line["setting"] = Markdown("*trivial predictor*")
        lines.insert(at, line)
    return lines


def section_table(section: Section) -> str:
    return markdown_table(table_lines(section), escape=True)


def summary_table(summary: Sequence[CellSummary]) -> str:
    return markdown_table(
        [
            {
                "cell": s.cell,
                "tasks": s.tasks,
                "mean rank": f"{s.mean_rank:.2f}",
                "wins": s.wins,
                "beats baseline": f"{s.beats_baseline} of {s.with_baseline}" if s.with_baseline else "",
            }
            for s in summary
        ],
        escape=True,
    )


def failures_table(runs: list[Run]) -> str:
    failed = [r for r in runs if not r.ok]
    rows = [
        {
            **{k: r.record.get(k) for k in ("dataset", *ARCH, "seed")},
            "error": str(r.record.get("error", "")),
            "run dir": str(r.dir),
        }
        for r in failed
    ]
    return markdown_table(rows, escape=True)


def section_heading(section: Section) -> str:
    if section.absent:
        return f"## {md_text(section.dataset)} ({md_text(section.task)}): {md_text(section.metric)} not recorded"
    return (
        f"## {md_text(section.dataset)} ({md_text(section.task)}): {md_text(section.metric)}, "
        f"{'higher' if section.higher_is_better else 'lower'} is better"
    )


def error_bars(section: Section, rows: Sequence[Row]) -> tuple[list[float], list[float]]:
    """(below, above) each row's mean: its std, below cut at 0 for a metric that cannot be negative."""
    above = [row.std or 0.0 for row in rows]
    below = [min(s, row.mean) if section.nonnegative else s for s, row in zip(above, rows)]
    return below, above


def band(curve: Curve, nonnegative: bool) -> tuple[list[float], list[float]]:
    low = [m - s for m, s in zip(curve.mean, curve.std)]
    return ([max(v, 0.0) for v in low] if nonnegative else low), [m + s for m, s in zip(curve.mean, curve.std)]
