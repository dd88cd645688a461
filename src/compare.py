"""python -m src.compare <run or sweep dirs...> [--out DIR] [--metric test/NAME]

Reads every metrics.json below the given dirs (and each run's csv/metrics.csv) and writes, per task (data set):
leaderboard.md, leaderboard.csv and plots/<dataset>_bars.png, plots/<dataset>_val_curves.png; prints the tables.

A row is a cell x depth x direction x truncation, plus any other override that differs between the task's runs
(`cell.variant=NIG`, `optimizer.lr=...`): runs that differ only by seed are one row, their test metric shown as
mean ± std. The metric is the test value of what the task monitors (metrics.json `monitor`, e.g. val/acc ->
test/acc), better as the task says (`monitor_mode`), so a new task needs no change here.
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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml

from src.bench.report import markdown_table
from src.diagnostics import plot_gradient_flow
from src.files import atomic_write, atomic_write_text
from src.records import find_records

ARCH = ("cell", "depth", "direction", "truncation")
NOT_SETTINGS = {"dataset", "seed", *ARCH, "skip_completed", "trainer.enable_progress_bar",
                "trainer.enable_model_summary"}
NOT_SETTINGS_PREFIXES = ("hydra.", "hydra/", "paths.", "logger")  # where outputs go: not what a run computes
# Only for a metric that is not the monitored one (--metric) or a record without monitor_mode: lower is better.
LOWER_IS_BETTER = re.compile(r"loss|ppl|perplexity|bpc|mse|mae|rmse|nll|error|cer|wer", re.I)


@dataclass
class Run:
    dir: Path
    record: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)  # from .hydra/overrides.yaml: key -> value

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@dataclass
class Row:
    arch: tuple
    setting: str
    runs: list[Run]
    values: list[float]
    mean: Optional[float] = None
    std: Optional[float] = None
    best: bool = False

    def field_mean(self, key: str) -> Optional[float]:
        found = [r.record[key] for r in self.runs if r.ok and isinstance(r.record.get(key), (int, float))]
        return statistics.fmean(found) if found else None


@dataclass
class Section:
    dataset: str
    task: str
    metric: str
    higher_is_better: bool
    monitor: str
    rows: list[Row]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)


# -- reading ------------------------------------------------------------------------------------------------------

def find_runs(dirs: Iterable[Path], problems: Optional[list[tuple[Path, str]]] = None) -> list[Run]:
    """Every run below `dirs`; a record that is damaged or hand-edited is skipped with a warning naming the file
    and field (and added to `problems`, which the leaderboard lists), never half-read."""
    found, skipped = find_records(dirs)
    for path, why in skipped:
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
        print(f"warning: {path}: unreadable ({str(e).splitlines()[0]}); its settings are not shown",
              file=sys.stderr)
        return {}
    if not isinstance(items, list):
        print(f"warning: {path}: not a list of overrides; its settings are not shown", file=sys.stderr)
        return {}
    found = {}
    for item in items:
        key, _, value = str(item).partition("=")
        found[key.lstrip("+~")] = value
    return found


def read_curve(run: Run, column: str) -> dict[int, float]:
    """epoch -> the logged value of `column` (the last one logged in that epoch), from the run's csv/metrics.csv;
    a row whose epoch or value is not a number is skipped."""
    path = run.dir / "csv" / "metrics.csv"
    if not path.exists():
        return {}
    curve = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line in csv.DictReader(f):
            try:
                value, epoch = float(line.get(column) or "nan"), int(float(line.get("epoch") or "nan"))
            except (TypeError, ValueError, OverflowError):
                continue
            if math.isfinite(value):
                curve[epoch] = value
    return curve


# -- aggregating --------------------------------------------------------------------------------------------------

def metric_of(record: dict, forced: Optional[str]) -> tuple[str, bool]:
    """(test metric, higher is better) for a run: the test value of its monitored metric unless --metric says."""
    monitor = record.get("monitor") or "val/loss"
    name = forced or "test/" + monitor.split("/", 1)[-1]
    mode = record.get("monitor_mode")
    if name.split("/", 1)[-1] == monitor.split("/", 1)[-1] and mode in ("max", "min"):
        return name, mode == "max"
    return name, not LOWER_IS_BETTER.search(name)


def settings(runs: list[Run]) -> dict[int, str]:
    """id(run) -> the overrides (beyond dataset, seed and the architecture) that differ between these runs."""
    keys = {k for r in runs for k in r.overrides
            if k not in NOT_SETTINGS and not k.startswith(NOT_SETTINGS_PREFIXES)}
    varying = sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)
    return {id(r): " ".join(f"{k}={r.overrides[k]}" for k in varying if k in r.overrides) for r in runs}


def build_sections(runs: list[Run], forced_metric: Optional[str] = None) -> list[Section]:
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
            row = rows.setdefault((arch, setting[id(run)]), Row(arch, setting[id(run)], [], []))
            row.runs.append(run)
            value = run.record.get(metric)
            if run.ok and isinstance(value, (int, float)) and math.isfinite(value):
                row.values.append(float(value))
        for row in rows.values():
            if row.values:
                row.mean = statistics.fmean(row.values)
                row.std = statistics.stdev(row.values) if len(row.values) > 1 else None
        ranked = sorted(rows.values(), key=lambda r: (r.mean is None, -(r.mean or 0) if higher else (r.mean or 0)))
        if ranked and ranked[0].mean is not None:
            for row in ranked:
                row.best = row.mean == ranked[0].mean
        task = next((str(r.record["task"]) for r in members if r.record.get("task")), "?")
        monitor = next((str(r.record["monitor"]) for r in members if r.record.get("monitor")), "")
        sections.append(Section(dataset, task, metric, higher, monitor, ranked))
    return sections


# -- writing ------------------------------------------------------------------------------------------------------

def _num(x: Optional[float], spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec)


def _short(setting: str) -> str:
    """Long floats from a search (optimizer.lr=0.0010789816...) to 3 significant digits, for display only."""
    def shorten(m: re.Match) -> str:
        return f"{m.group(1)}={float(m.group(2)):.3g}"
    return re.sub(r"(\S+)=(-?\d+\.\d{4,}(?:e-?\d+)?)", shorten, setting)


def label(row: Row) -> str:
    cell, depth, direction, truncation = row.arch
    text = f"{cell}-d{depth}-{direction}-{truncation}"
    return f"{text} {_short(row.setting)}" if row.setting else text


def section_table(section: Section) -> str:
    with_setting = any(row.setting for row in section.rows)
    lines = []
    for row in section.rows:
        value = _num(row.mean) + (f" ± {row.std:.2g}" if row.std is not None else "")
        failed = sum(not r.ok for r in row.runs)
        line = dict(zip(ARCH, row.arch))
        if with_setting:
            line["setting"] = _short(row.setting)
        params = row.field_mean("params")
        line.update({
            section.metric: (f"**{value}** ★" if row.best else value) or "failed",
            "seeds": f"{len(row.values)}" + (f" (+{failed} failed)" if failed else ""),
            "params": f"{params:,.0f}" if params is not None else "",
            "samples/s": _num(row.field_mean("train_samples_per_s"), ",.0f"),
            "wall s": _num(row.field_mean("wall_s"), ".1f"),
        })
        lines.append(line)
    return markdown_table(lines)


def failures_table(runs: list[Run]) -> str:
    failed = [r for r in runs if not r.ok]
    rows = [{**{k: r.record.get(k) for k in ("dataset", *ARCH, "seed")},
             "error": str(r.record.get("error", "")).replace("|", "\\|").replace("\n", " "), "run dir": str(r.dir)}
            for r in failed]
    return markdown_table(rows)


def write_markdown(sections: list[Section], runs: list[Run], out: Path, sources: list[str],
                   with_plots: bool, problems: Sequence[tuple[Path, str]] = ()) -> str:
    ok = sum(r.ok for r in runs)
    md = ["# Leaderboard", "",
          f"{len(runs)} runs ({ok} ok, {len(runs) - ok} failed) from {', '.join(sources)}. Per task, one row per "
          "architecture; the test metric is the mean ± sample std over seeds; ★ marks the best.", ""]
    for section in sections:
        better = "higher" if section.higher_is_better else "lower"
        md += [f"## {section.dataset} ({section.task}): {section.metric}, {better} is better", "",
               section_table(section), ""]
        if with_plots:
            md += [f"![{section.dataset} {what}](plots/{section.slug}_{kind}.png)"
                   for kind, what in (("bars", section.metric), ("val_curves", f"{section.monitor} by epoch"))
                   if (out / "plots" / f"{section.slug}_{kind}.png").exists()] + [""]
    if ok < len(runs):
        md += ["## Failed runs", "", failures_table(runs), ""]
    if problems:
        md += ["## Unreadable records (skipped)", "",
               markdown_table([{"file": str(path), "why": why.replace("|", "\\|")} for path, why in problems]), ""]
    text = "\n".join(md)
    atomic_write_text(out / "leaderboard.md", text)
    return text


def write_csv(sections: list[Section], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["dataset", "task", "metric", "higher_is_better", *ARCH, "setting", "mean", "std", "seeds",
                     "failed", "params", "train_samples_per_s", "wall_s", "best"])
    for s in sections:
        for row in s.rows:
            writer.writerow([s.dataset, s.task, s.metric, s.higher_is_better, *row.arch, row.setting,
                             _num(row.mean, ".6g"), _num(row.std, ".6g"), len(row.values),
                             sum(not r.ok for r in row.runs), _num(row.field_mean("params"), ".0f"),
                             _num(row.field_mean("train_samples_per_s"), ".6g"),
                             _num(row.field_mean("wall_s"), ".6g"), row.best])
    atomic_write_text(out / "leaderboard.csv", buffer.getvalue())


def write_plots(section: Section, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in section.rows if r.mean is not None]
    if not rows:
        return
    plots = out / "plots"
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(rows)))
    ys = range(len(rows))[::-1]  # the best at the top
    ax.barh(list(ys), [r.mean for r in rows], xerr=[r.std or 0 for r in rows], capsize=3,
            color=["tab:orange" if r.best else "tab:blue" for r in rows])
    ax.set_yticks(list(ys), [label(r) for r in rows], fontsize=8)
    ax.set_xlabel(f"{section.metric} (mean ± std over seeds; {'higher' if section.higher_is_better else 'lower'}"
                  " is better)")
    ax.set_title(f"{section.dataset} ({section.task})")
    atomic_write(plots / f"{section.slug}_bars.png", lambda tmp: save(fig, tmp))
    plt.close(fig)

    # Runs trained with +diagnostics=gradients: their gradient-flow curves overlaid, one line per run (issue 10).
    plot_gradient_flow([run.dir for row in rows for run in row.runs if run.ok],
                       plots / f"{section.slug}_gradient_flow.png", title=f"{section.dataset}: gradient flow")

    lines = []
    for row in rows:
        curves = [read_curve(run, section.monitor) for run in row.runs if run.ok]
        epochs = sorted({e for c in curves for e in c})
        if epochs:
            lines.append((row, epochs, [statistics.fmean([c[e] for c in curves if e in c]) for e in epochs]))
    if not lines:  # no CSV logs (logger=none): no curves to draw
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    for row, epochs, means in lines:
        ax.plot([e + 1 for e in epochs], means, marker=".", label=label(row), linewidth=2.5 if row.best else 1)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{section.monitor} (mean over seeds)")
    ax.set_title(f"{section.dataset}: validation")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    atomic_write(plots / f"{section.slug}_val_curves.png", lambda tmp: save(fig, tmp))
    plt.close(fig)


def save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")  # "tight": long labels and the legend fit


def default_out(dirs: list[Path]) -> Path:
    return dirs[0] if len(dirs) == 1 else Path(os.path.commonpath([d.resolve() for d in dirs]))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or sweep dirs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write (default: the one dir given, else their parent)")
    parser.add_argument("--metric", help="compare on this test metric instead of each task's monitored one")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    problems: list[tuple[Path, str]] = []
    runs = find_runs(args.dirs, problems)
    if not runs:
        found = f"no readable run record ({len(problems)} skipped above)" if problems else "no metrics.json"
        print(f"error: {found} under {', '.join(map(str, args.dirs))}: run src.train there first",
              file=sys.stderr)
        return 2
    out = args.out or default_out(args.dirs)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").touch()
        (out / ".write_test").unlink()
    except OSError as e:
        print(f"error: cannot write the leaderboard to {out} ({e.strerror or e}); choose another with --out <dir>",
              file=sys.stderr)
        return 2
    sections = build_sections(runs, args.metric)
    if not args.no_plots:
        for section in sections:
            write_plots(section, out)
    text = write_markdown(sections, runs, out, [str(d) for d in args.dirs], with_plots=not args.no_plots,
                          problems=problems)
    write_csv(sections, out)
    print(re.sub(r"^!\[.*\n?", "", text, flags=re.M))
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}" + ("" if args.no_plots else f", {out / 'plots'}/"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
