"""python -m src.compare <run or sweep dirs...> [--out DIR] [--metric test/NAME] [--no-plots] [--html [FILE]]
                        [--significance REF [--test welch|mannwhitney] [--alpha 0.05] [--correction holm|none]]

Reads every metrics.json below the given dirs (and each run's csv/metrics.csv) and writes, per task (data set):
leaderboard.md, leaderboard.csv and plots/<dataset>_bars.png, plots/<dataset>_curves.png; with --html an offline
dashboard (one self-contained HTML file); prints the tables.

A row is a cell x depth x direction x truncation, plus any other override that differs between the task's runs
(`cell.variant=NIG`, `optimizer.lr=...`, shown as "variant NIG", "lr 0.001"): runs that differ only by seed are
one row, their test metric shown as mean ± std. The metric is the test value of what the task monitors
(metrics.json `monitor`, e.g. val/acc -> test/acc), better as the task says (`monitor_mode`), so a new task needs
no change here. The task's trivial baseline (`test/baseline_<metric>` in the records) is a row of its own; a row
that does not beat it by more than 1% is marked and never gets the star.

--significance REF tests, per task, every row against the reference row (REF: an override such as
`cell.variant=V`, or a cell name) across seeds, with Welch's t-test or the Mann-Whitney U test (scipy), the p-values
Holm-corrected over the task's comparisons unless --correction none; leaderboard.md gets a table per task.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import statistics
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.files import atomic_write, atomic_write_text
from src.records import find_records

ARCH = ("cell", "depth", "direction", "truncation")
NOT_SETTINGS = {
    "dataset",
    "seed",
    *ARCH,
    "skip_completed",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
}
NOT_SETTINGS_PREFIXES = ("hydra.", "hydra/", "paths.", "logger")  # where outputs go: not what a run computes
# Only for a metric that is not the monitored one (--metric) or a record without monitor_mode: lower is better.
LOWER_IS_BETTER = re.compile(r"loss|ppl|perplexity|bpc|mse|mae|rmse|nll|error|cer|wer", re.I)
# Metrics that can be negative although every value seen is not: their error bars and bands are not cut at 0.
SIGNED = re.compile(r"r2|corr|lik|elbo|reward|score|gain", re.I)
# A row beats the task's trivial baseline when its mean is better by more than this fraction of the baseline:
# a tanh RNN that learned nothing sits within noise of it (adding: 0.1664 against 0.1667).
BASELINE_MARGIN = 0.01
# Short names of common settings for the "setting" column; any other key shows as its last part (cell.variant ->
# variant), or whole when two keys would share a name.
SHORT_KEYS = {
    "cell.hidden_size": "hidden",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "weight decay",
    "trainer.max_epochs": "epochs",
    "dataset.batch_size": "batch",
    "dataset.seq_len": "T",
    "trainer.gradient_clip_val": "clip",
    "cell.dropout": "dropout",
    "embedding.dim": "embedding",
}
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
    column, one line per logging call); a line whose step or value is not a number is skipped."""
    path = run.dir / "csv" / "metrics.csv"
    curves: dict[str, dict[int, float]] = {c: {} for c in columns}
    if not path.exists():
        return curves
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line in csv.DictReader(f):
            try:
                step = int(float(line.get("step") or "nan"))
            except (TypeError, ValueError, OverflowError):
                continue
            for column in columns:
                try:
                    value = float(line.get(column) or "nan")
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
    return name, not LOWER_IS_BETTER.search(name)


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


def short_value(value: str) -> str:
    """Long floats from a search (0.0010789816...) to 3 significant digits, for display only."""
    if re.fullmatch(r"-?\d+\.\d{4,}(?:[eE][-+]?\d+)?|-?\d+(?:\.\d+)?[eE][-+]?\d+", value):
        return f"{float(value):.3g}"
    return value


def setting_names(keys: Iterable[str]) -> dict[str, str]:
    """key -> its short name (cell.hidden_size -> hidden, cell.variant -> variant), whole where two would clash."""
    keys = list(keys)
    short = {k: SHORT_KEYS.get(k, k.rsplit(".", 1)[-1].replace("_", " ")) for k in keys}
    clashes = {name for name in short.values() if list(short.values()).count(name) > 1}
    return {k: (k if name in clashes else name) for k, name in short.items()}


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


def build_sections(runs: list[Run], forced_metric: str | None = None) -> list[Section]:
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
        bases = [b for b in (baseline_of(r.record, metric) for r in members if r.ok) if b is not None]
        baseline = Baseline(statistics.fmean(bases), min(bases), max(bases)) if bases else None
        for row in rows.values():
            if baseline is not None and row.mean is not None:
                row.beats_baseline = better(row.mean, baseline.mean, higher, BASELINE_MARGIN)
        ranked = sorted(rows.values(), key=lambda r: (r.mean is None, -(r.mean or 0) if higher else (r.mean or 0)))
        top = ranked[0] if ranked else None
        if top is not None and top.mean is not None and top.beats_baseline is not False:
            for row in ranked:  # the star: the best mean, if it beats the baseline (ties share it)
                row.best = row.mean == top.mean
        for i, row in enumerate(ranked):
            row.colour = PALETTE[i % len(PALETTE)]
        task = next((str(r.record["task"]) for r in members if r.record.get("task")), "?")
        monitor = next((str(r.record["monitor"]) for r in members if r.record.get("monitor")), "")
        recorded = sorted(
            {
                k
                for r in members
                if r.ok
                for k, v in r.record.items()
                if k.startswith("test/") and _number(v) is not None
            }
        )
        sections.append(Section(dataset, task, metric, higher, monitor, ranked, baseline, recorded))
    return sections


@dataclass
class CellSummary:
    cell: str
    tasks: int  # tasks (sections) where the cell has a row with a mean
    ranks: list[float]  # its rank among the cells in each of them (by its best row; 1 = best)
    wins: int  # tasks where it holds the star
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
        for cell, row in best.items():
            # Cells tied with it share the better rank.
            rank = 1 + sum(better(other.mean, row.mean, section.higher_is_better) for other in best.values())
            summary = found.setdefault(cell, CellSummary(cell, 0, [], 0, 0, 0))
            summary.tasks += 1
            summary.ranks.append(float(rank))
            summary.wins += any(r.best for r in section.rows if str(r.arch[0]) == cell)
            summary.beats_baseline += bool(row.beats_baseline)
            summary.with_baseline += row.beats_baseline is not None
    return sorted(found.values(), key=lambda s: (s.mean_rank, -s.wins, s.cell))


# -- significance across seeds ------------------------------------------------------------------------------------

TESTS = ("welch", "mannwhitney")
CORRECTIONS = ("holm", "none")


@dataclass
class SignificanceOptions:
    reference: str  # `key=value` among a row's overrides (cell.variant=V), or a cell name (lstm)
    test: str = "welch"
    alpha: float = 0.05
    correction: str = "holm"


@dataclass
class Comparison:
    row: Row
    n: int
    diff: float | None  # row mean - reference mean
    p: float | None  # None: too few seeds, or both samples constant (no test possible)
    p_adjusted: float | None
    verdict: str


def is_reference(row: Row, reference: str) -> bool:
    """The row's runs all have the override `reference` (key=value; read from the runs, as a setting that does not
    vary within a task is not in the row's setting), or the row's cell is `reference`."""
    if "=" in reference:
        key, _, value = reference.partition("=")
        return bool(row.runs) and all(run.overrides.get(key) == value for run in row.runs)
    return str(row.arch[0]) == reference


def p_value(a: Sequence[float], b: Sequence[float], test: str) -> float | None:
    """Two-sided p of `a` against `b`; None when it is undefined (fewer than 2 values in a sample, or for Welch's
    t both samples constant: no variance to test against)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if test == "welch" and statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None
    with warnings.catch_warnings():
        # One constant sample (every seed solved the task) is valid for Welch; scipy warns of "precision loss".
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "welch":
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        else:
            p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count as a comparison)."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    adjusted: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p))
        adjusted[i] = running
    return adjusted


def significance(section: Section, options: SignificanceOptions) -> tuple[Row | None, list[Comparison], str]:
    """(the reference row, each other row against it, a note): the reference is the one row of the task that
    `options.reference` names; the verdict is better / worse (in the task's direction) when the adjusted p is below
    alpha, else no significant difference."""
    rows = section.ranked_rows()
    refs = [row for row in rows if is_reference(row, options.reference)]
    if len(refs) != 1:
        why = "no row" if not refs else f"{len(refs)} rows ({', '.join(label(r) for r in refs)})"
        return None, [], f"{why} match {options.reference}: no test"
    ref = refs[0]
    others = [row for row in rows if row is not ref]
    ps = [p_value(row.values, ref.values, options.test) for row in others]
    adjusted = holm(ps) if options.correction == "holm" else list(ps)
    found = []
    for row, p, q in zip(others, ps, adjusted):
        diff = row.mean - ref.mean if row.mean is not None and ref.mean is not None else None
        if p is None:
            constant = len(row.values) > 1 and len(ref.values) > 1
            verdict = (
                "identical values: no test"
                if constant and sorted(row.values) == sorted(ref.values)
                else ("constant samples: no test" if constant else "fewer than 2 seeds: no test")
            )
        elif q is not None and q < options.alpha:
            verdict = "**better**" if better(row.mean, ref.mean, section.higher_is_better) else "**worse**"
        else:
            verdict = "no significant difference"
        found.append(Comparison(row, len(row.values), diff, p, q, verdict))
    return ref, found, ""


def significance_markdown(sections: Sequence[Section], options: SignificanceOptions) -> list[str]:
    test = "Welch's t-test" if options.test == "welch" else "Mann-Whitney U test"
    corrected = " Holm-corrected over the task's comparisons;" if options.correction == "holm" else ""
    md = [
        f"## Significance against {options.reference}",
        "",
        f"Per task, each row's test metric over its seeds against the reference row's, {test} (two-sided, "
        f"scipy);{corrected} better / worse when the {'adjusted ' if corrected else ''}p < {options.alpha:g}.",
        "",
    ]
    for section in sections:
        if section.absent:
            continue
        ref, found, note = significance(section, options)
        md += [f"### {section.dataset}: {section.metric}", ""]
        if ref is None:
            md += [note + ".", ""]
            continue
        lines = [
            {
                "row": label(c.row),
                "seeds": c.n,
                "mean": _num(c.row.mean),
                "minus reference": _num(c.diff, "+.3g"),
                "p": _num(c.p, ".3g"),
                **({"p (Holm)": _num(c.p_adjusted, ".3g")} if options.correction == "holm" else {}),
                "verdict": c.verdict,
            }
            for c in found
        ]
        md += [
            f"Reference: {label(ref)}, {value_text(ref)} over {len(ref.values)} seeds.",
            "",
            markdown_table(lines) if lines else "(no other row)",
            "",
        ]
    return md


# -- writing ------------------------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[dict]) -> str:
    from src.bench.report import markdown_table as table  # (imports torch: only when a table is written)

    return table(rows)


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


def baseline_text(baseline: Baseline) -> str:
    spread = f" ({baseline.low:.4g}..{baseline.high:.4g} across runs)" if baseline.high > baseline.low else ""
    return f"{baseline.mean:.4g}{spread}"


def table_lines(section: Section) -> list[dict]:
    """The leaderboard's lines: the rows best first, the baseline after the last row that beats it."""
    with_setting = any(row.shown for row in section.rows)
    lines = []
    for row in section.rows:
        value = value_text(row)
        failed = sum(not r.ok for r in row.runs)
        line: dict[str, Any] = dict(zip(ARCH, row.arch))
        if with_setting:
            line["setting"] = row.shown
        line[section.metric] = f"**{value}** ★" if row.best else value
        if section.baseline is not None:
            line["beats baseline"] = {True: "yes", False: "**no**", None: ""}[row.beats_baseline]
        params = row.field_mean("params")
        line.update(
            {
                "seeds": f"{len(row.values)}"
                + (f" (+{failed} failed)" if failed else "")
                + (f" ({row.missing} without it)" if row.missing and row.values else ""),
                "params": f"{params:,.0f}" if params is not None else "",
                "samples/s": _num(row.field_mean("train_samples_per_s"), ",.0f"),
                "wall s": _num(row.field_mean("wall_s"), ".1f"),
            }
        )
        lines.append(line)
    if section.baseline is not None:
        at = sum(bool(row.beats_baseline) for row in section.rows)
        line = {key: "" for key in lines[0]} if lines else {}
        line.update({"cell": "*baseline*", section.metric: f"*{baseline_text(section.baseline)}*"})
        if with_setting:
            line["setting"] = "*trivial predictor*"
        lines.insert(at, line)
    return lines


def section_table(section: Section) -> str:
    return markdown_table(table_lines(section))


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
        ]
    )


def failures_table(runs: list[Run]) -> str:
    failed = [r for r in runs if not r.ok]
    rows = [
        {
            **{k: r.record.get(k) for k in ("dataset", *ARCH, "seed")},
            "error": str(r.record.get("error", "")).replace("|", "\\|").replace("\n", " "),
            "run dir": str(r.dir),
        }
        for r in failed
    ]
    return markdown_table(rows)


def section_heading(section: Section) -> str:
    if section.absent:
        return f"## {section.dataset} ({section.task}): {section.metric} not recorded"
    return (
        f"## {section.dataset} ({section.task}): {section.metric}, "
        f"{'higher' if section.higher_is_better else 'lower'} is better"
    )


def write_markdown(
    sections: list[Section],
    runs: list[Run],
    out: Path,
    sources: list[str],
    with_plots: bool,
    problems: Sequence[tuple[Path, str]] = (),
    significance: SignificanceOptions | None = None,
) -> str:
    ok = sum(r.ok for r in runs)
    md = [
        "# Leaderboard",
        "",
        f"{len(runs)} runs ({ok} ok, {len(runs) - ok} failed) from {', '.join(sources)}. Per task, one row per "
        "architecture and setting; the test metric is the mean ± sample std over seeds; ★ marks the best. The "
        f"baseline row is the task's trivial predictor: a row that does not beat it by more than "
        f"{BASELINE_MARGIN:.0%} is marked **no** and gets no ★.",
        "",
    ]
    for section in sections:
        md += [section_heading(section), ""]
        if section.absent:
            md += [section.absent_note() + ".", ""]
            continue
        md += [section_table(section), ""]
        if with_plots:
            md += [
                f"![{section.dataset} {what}](plots/{section.slug}_{kind}.png)"
                for kind, what in (("bars", section.metric), ("curves", f"{TRAIN_LOSS} and {section.monitor}"))
                if (out / "plots" / f"{section.slug}_{kind}.png").exists()
            ] + [""]
    if significance:
        md += significance_markdown(sections, significance)
    summary = cell_summary(sections)
    if summary:
        md += [
            "## Across tasks",
            "",
            "Each cell's rank among the cells of every task it ran (by its best row there; ties share the "
            "better rank), the mean of those ranks, its wins (tasks where it holds the ★) and the tasks where "
            "it beats the baseline.",
            "",
            summary_table(summary),
            "",
        ]
    if ok < len(runs):
        md += ["## Failed runs", "", failures_table(runs), ""]
    if problems:
        md += [
            "## Unreadable records (skipped)",
            "",
            markdown_table([{"file": str(path), "why": why.replace("|", "\\|")} for path, why in problems]),
            "",
        ]
    text = "\n".join(md)
    atomic_write_text(out / "leaderboard.md", text)
    return text


def write_csv(sections: list[Section], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "dataset",
            "task",
            "metric",
            "higher_is_better",
            *ARCH,
            "setting",
            "mean",
            "std",
            "seeds",
            "failed",
            "params",
            "train_samples_per_s",
            "wall_s",
            "best",
            "overrides",
            "baseline",
            "beats_baseline",
            "recorded",
        ]
    )
    for s in sections:
        for row in s.rows:
            writer.writerow(
                [
                    s.dataset,
                    s.task,
                    s.metric,
                    s.higher_is_better,
                    *row.arch,
                    row.shown,
                    _num(row.mean, ".6g"),
                    _num(row.std, ".6g"),
                    len(row.values),
                    sum(not r.ok for r in row.runs),
                    _num(row.field_mean("params"), ".0f"),
                    _num(row.field_mean("train_samples_per_s"), ".6g"),
                    _num(row.field_mean("wall_s"), ".6g"),
                    row.best,
                    row.setting,
                    _num(s.baseline.mean if s.baseline else None, ".6g"),
                    "" if row.beats_baseline is None else row.beats_baseline,
                    not s.absent,
                ]
            )
    atomic_write_text(out / "leaderboard.csv", buffer.getvalue())


def error_bars(section: Section, rows: Sequence[Row]) -> tuple[list[float], list[float]]:
    """(below, above) each row's mean: its std, below cut at 0 for a metric that cannot be negative."""
    above = [row.std or 0.0 for row in rows]
    below = [min(s, row.mean) if section.nonnegative else s for s, row in zip(above, rows)]
    return below, above


def band(curve: Curve, nonnegative: bool) -> tuple[list[float], list[float]]:
    low = [m - s for m, s in zip(curve.mean, curve.std)]
    return ([max(v, 0.0) for v in low] if nonnegative else low), [m + s for m, s in zip(curve.mean, curve.std)]


def write_plots(section: Section, out: Path) -> None:
    """plots/<task>_bars.png (the metric per row, std as error bars, the baseline as a dashed line) and
    plots/<task>_curves.png (training loss and the monitored validation metric by step, mean ± std over seeds);
    a row has the same colour in both."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # the object API: no GUI backend, quicker to import than pyplot

    rows = section.ranked_rows()
    if not rows or section.absent:
        return
    plots = out / "plots"
    fig = Figure(figsize=(8, 1.4 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]  # the best at the top
    bars = ax.barh(
        ys,
        [r.mean for r in rows],
        xerr=error_bars(section, rows),
        capsize=3,
        color=[r.colour for r in rows],
        edgecolor=["black" if r.best else "white" for r in rows],
    )
    for bar, row in zip(bars, rows):  # (one hatch per bar: a list for `hatch` needs matplotlib 3.10)
        bar.set_hatch("//" if row.beats_baseline is False else "")
    ax.set_yticks(ys, [("★ " if r.best else "") + label(r) for r in rows], fontsize=8)
    if section.baseline is not None:
        ax.axvline(section.baseline.mean, color=BASELINE_COLOUR, linestyle="--", linewidth=1.2)
    ax.set_xlabel(
        f"{section.metric} (mean ± std over seeds; {'higher' if section.higher_is_better else 'lower'} is better)"
    )
    ax.set_title(
        f"{section.dataset} ({section.task})"
        + (f"; dashed: baseline {section.baseline.mean:.4g}, hatched: not better" if section.baseline else "")
    )
    atomic_write(plots / f"{section.slug}_bars.png", lambda tmp: save(fig, tmp))

    # Runs trained with +diagnostics=gradients: their gradient-flow curves overlaid, one line per run (issue 10).
    from src.diagnostics import plot_gradient_flow

    plot_gradient_flow(
        [run.dir for row in rows for run in row.runs if run.ok],
        plots / f"{section.slug}_gradient_flow.png",
        title=f"{section.dataset}: gradient flow",
    )

    columns = (TRAIN_LOSS, section.monitor)
    curves = [(row, row_curves(row, columns)) for row in rows]
    if not any(found for _, found in curves):  # no CSV logs (logger=none): no curves to draw
        return
    fig = Figure(figsize=(13, 4.6))
    fig.subplots_adjust(left=0.06, right=0.76, wspace=0.22)
    axes = fig.subplots(1, 2)
    for ax, column in zip(axes, columns):
        nonnegative = column == TRAIN_LOSS or section.nonnegative
        for row, found in curves:
            if column not in found:
                continue
            curve = found[column]
            ax.plot(
                curve.steps,
                curve.mean,
                color=row.colour,
                marker="." if len(curve.steps) < 30 else None,
                linewidth=2.5 if row.best else 1.2,
                label=label(row),
            )
            if curve.seeds > 1:
                ax.fill_between(curve.steps, *band(curve, nonnegative), color=row.colour, alpha=0.18, linewidth=0)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{column} (mean ± std over seeds)", fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if len(handles) < len(rows):
        handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(0.77, 0.5))
    fig.suptitle(f"{section.dataset} ({section.task})")
    atomic_write(plots / f"{section.slug}_curves.png", lambda tmp: save(fig, tmp))


def save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")  # "tight": long labels and the legend fit


def default_out(dirs: list[Path]) -> Path:
    return dirs[0] if len(dirs) == 1 else Path(os.path.commonpath([d.resolve() for d in dirs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or sweep dirs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write (default: the one dir given, else their parent)")
    parser.add_argument("--metric", help="compare on this test metric instead of each task's monitored one")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots (the HTML dashboard still has charts)")
    parser.add_argument(
        "--html",
        nargs="?",
        const="",
        metavar="FILE",
        help="also write an offline dashboard: one self-contained HTML file (default: <out>/dashboard.html)",
    )
    parser.add_argument(
        "--significance",
        metavar="REF",
        help="test every row against this reference row across seeds (an override such as cell.variant=V, or a cell)",
    )
    parser.add_argument("--test", choices=TESTS, default="welch", help="with --significance (default: welch)")
    parser.add_argument("--alpha", type=float, default=0.05, help="with --significance: the level (default 0.05)")
    parser.add_argument(
        "--correction", choices=CORRECTIONS, default="holm", help="with --significance: over a task's comparisons"
    )
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        print(f"error: --alpha {args.alpha} is not a level between 0 and 1 (e.g. 0.05)", file=sys.stderr)
        return 2
    options = (
        SignificanceOptions(args.significance, args.test, args.alpha, args.correction) if args.significance else None
    )
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    problems: list[tuple[Path, str]] = []
    runs = find_runs(args.dirs, problems)
    if not runs:
        found = f"no readable run record ({len(problems)} skipped above)" if problems else "no metrics.json"
        print(f"error: {found} under {', '.join(map(str, args.dirs))}: run src.train there first", file=sys.stderr)
        return 2
    out = args.out or default_out(args.dirs)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").touch()
        (out / ".write_test").unlink()
    except OSError as e:
        print(
            f"error: cannot write the leaderboard to {out} ({e.strerror or e}); choose another with --out <dir>",
            file=sys.stderr,
        )
        return 2
    sections = build_sections(runs, args.metric)
    if not args.no_plots:
        for section in sections:
            write_plots(section, out)
    sources = [str(d) for d in args.dirs]
    text = write_markdown(
        sections, runs, out, sources, with_plots=not args.no_plots, problems=problems, significance=options
    )
    write_csv(sections, out)
    wrote = [out / "leaderboard.md", out / "leaderboard.csv"] + ([] if args.no_plots else [f"{out / 'plots'}/"])
    if args.html is not None:
        from src.html_dashboard import write_html

        wrote.append(
            write_html(sections, runs, Path(args.html) if args.html else out / "dashboard.html", sources, problems)
        )
    print(re.sub(r"^!\[.*\n?", "", text, flags=re.M))
    print("wrote " + ", ".join(map(str, wrote)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
