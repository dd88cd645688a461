"""python -m src.compare <run or sweep dirs...> [--out DIR] [--metric test/NAME] [--no-plots] [--html [FILE]]
                        [--significance REF] [--test welch|mannwhitney] [--alpha 0.05] [--correction holm|none]
                        [--tune KEY [--all-points]]

Reads every metrics.json below the given dirs (and each run's csv/metrics.csv) and writes, per task (data set):
leaderboard.md, leaderboard.csv and plots/<dataset>_bars.png, plots/<dataset>_curves.png; with --html an offline
dashboard (one self-contained HTML file); prints the tables.

A row is a cell x depth x direction x truncation, plus any other override that differs between the task's runs
(`cell.variant=NIG`, `optimizer.lr=...`, shown as "variant NIG", "lr 0.001"): runs that differ only by seed are
one row, their test metric shown as mean ± std. The metric is the test value of what the task monitors
(metrics.json `monitor`, e.g. val/acc -> test/acc), better as the task says (`monitor_mode`), so a new task needs
no change here. The task's trivial baseline (`test/baseline_<metric>` in the records) is a row of its own (and a
dashed line on the plots); a row that does not beat it by more than 1% is marked and never gets the star.

The star marks each task's winning group: the best row and every row not significantly different from it across
seeds (--test: Welch's t-test or the Mann-Whitney U test, scipy; Holm-corrected over the task's comparisons unless
--correction none; --alpha). The cross-task ranks give the group's cells rank 1.

--significance REF tests, per task, every row against the reference row (REF: the settings that pick it, one or
several `key=value` terms such as `cell.variant=V` or `cell=lstm model.params=100000`, or a cell name) with the
same test; leaderboard.md gets a table per task.

--tune KEY (optimizer.lr): per task and architecture the grid point with the best mean validation value is the row,
its test metric shown, a pick at the grid's edge flagged (src/compare/tuning.py); --all-points keeps every point.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from src.common.errors import ConfigError
from src.common.files import atomic_write, atomic_write_text, probe_writable, refuse_links
from src.compare.leaderboard import (
    BASELINE_COLOUR,
    BASELINE_MARGIN,
    TRAIN_LOSS,
    Run,
    Section,
    _num,
    band,
    budget_text,
    build_sections,
    cell_summary,
    ended_text,
    error_bars,
    failures_table,
    find_runs,
    has_verdicts,
    label,
    markdown_table,
    md_text,
    row_curves,
    section_heading,
    section_table,
    summary_table,
)
from src.compare.significance import CORRECTIONS, TESTS, SignificanceOptions, significance_markdown
from src.records.identity import ARCH


def write_markdown(
    sections: list[Section],
    runs: list[Run],
    out: Path,
    sources: list[str],
    with_plots: bool,
    problems: Sequence[tuple[Path, str]] = (),
    significance: SignificanceOptions | None = None,
    verdict: SignificanceOptions | None = None,
) -> str:
    ok = sum(r.ok for r in runs)
    verdict = verdict or SignificanceOptions("")
    md = [
        "# Leaderboard",
        "",
        f"{len(runs)} runs ({ok} ok, {len(runs) - ok} failed) from {', '.join(sources)}. Per task, one row per "
        "architecture and setting; the test metric is the mean ± sample std over seeds. ★ marks the winning "
        "group: the best row and every row not significantly different from it over seeds "
        f"({verdict.described()}; a row with one seed joins only on an equal mean). The baseline row is the "
        f"task's trivial predictor: a row that does not beat it by more than {BASELINE_MARGIN:.0%} is marked "
        "**no** and gets no ★.",
        "",
    ]
    if any(row.tuned for section in sections for row in section.rows):
        md += [
            "Tuned: per task and architecture, the grid point with the best mean validation value of the monitored "
            "metric (`<monitor>_best`, the tested checkpoint's) is the row, with its test metric; *picked on "
            "validation* says which point and where on the grid (in bold at the grid's edge: widen the grid).",
            "",
        ]
    if any(has_verdicts(section) for section in sections):
        md += [
            "*ended*: how each row's runs ended (metrics.json `learning`): *plateau*, the best of the last "
            "`plateau.patience` validations was not better than the best before them by more than the tolerance "
            "(`plateau.min_delta`, relative); ***still learning***, the *budget* (budget.updates, else "
            "trainer.max_epochs) ran out while it still was, so the row's value is not its final one; *early "
            "stopped*; *unknown*, too few validations to tell.",
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
                f"![{md_text(section.dataset)} {md_text(what)}](plots/{section.slug}_{kind}.png)"
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
            "Each cell's rank among the cells of every task it ran (by its best row there: the cells of the "
            "winning group share rank 1, the others follow by their mean; ties share the better rank), the mean "
            "of those ranks, its wins (tasks where it is in the winning group, ★) and the tasks where it beats "
            "the baseline.",
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
            markdown_table([{"file": str(path), "why": why} for path, why in problems], escape=True),
            "",
        ]
    text = "\n".join(md)
    atomic_write_text(out / "leaderboard.md", text, within=out)
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
            "state_floats",
            "train_samples_per_s",
            "wall_s",
            "best",
            "picked_on_validation",
            "overrides",
            "baseline",
            "beats_baseline",
            "recorded",
            "budget",
            "ended",
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
                    _num(row.field_mean("state_floats"), ".0f"),
                    _num(row.field_mean("train_samples_per_s"), ".6g"),
                    _num(row.field_mean("wall_s"), ".6g"),
                    row.best,
                    row.tuned,
                    row.setting,
                    _num(s.baseline.mean if s.baseline else None, ".6g"),
                    "" if row.beats_baseline is None else row.beats_baseline,
                    not s.absent,
                    budget_text(row),
                    ended_text(row),
                ]
            )
    atomic_write_text(out / "leaderboard.csv", buffer.getvalue(), within=out)


def write_plots(section: Section, out: Path) -> bool:
    """plots/<task>_bars.png (the metric per row, std as error bars, the baseline as a dashed line) and
    plots/<task>_curves.png (training loss and the monitored validation metric by step, mean ± std over seeds);
    a row has the same colour in both. False: nothing to draw (no run has the section's metric)."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # the object API: no GUI backend, quicker to import than pyplot

    rows = section.ranked_rows()
    if not rows or section.absent:
        return False
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
    atomic_write(plots / f"{section.slug}_bars.png", lambda tmp: save(fig, tmp), within=out)

    # Runs trained with +diagnostics=gradients: their gradient-flow curves overlaid, one line per run (issue 10).
    from src.diagnostics.report import plot_gradient_flow

    plot_gradient_flow(
        [run.dir for row in rows for run in row.runs if run.ok],
        plots / f"{section.slug}_gradient_flow.png",
        title=f"{section.dataset}: gradient flow",
    )

    columns = (TRAIN_LOSS, section.monitor)
    curves = [(row, row_curves(row, columns)) for row in rows]
    if not any(found for _, found in curves):  # no CSV logs (logger=none): no curves to draw
        return True
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
    atomic_write(plots / f"{section.slug}_curves.png", lambda tmp: save(fig, tmp), within=out)
    return True


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
        help="test every row against the reference row across seeds: the settings that pick it, e.g. cell.variant=V or "
        "'cell=lstm model.params=100000' (several key=value terms), or a cell name",
    )
    parser.add_argument(
        "--test", choices=TESTS, default="welch", help="the winning groups' and --significance's test (default: welch)"
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="the test's level (default 0.05)")
    parser.add_argument("--correction", choices=CORRECTIONS, default="holm", help="over a task's comparisons")
    parser.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="KEY",
        help="a grid setting (e.g. optimizer.lr; repeatable): per task and architecture keep the grid point with the "
        "best mean validation value and report its test metric; a pick at the grid's edge is flagged",
    )
    parser.add_argument("--all-points", action="store_true", help="with --tune: keep every grid point's row")
    args = parser.parse_args(argv)
    if args.all_points and not args.tune:
        print(
            "error: --all-points shows the grid points of --tune KEY; give the grid setting, e.g. --tune optimizer.lr",
            file=sys.stderr,
        )
        return 2
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
        probe_writable(out)
    except OSError as e:
        print(
            f"error: cannot write the leaderboard to {out} ({e.strerror or e}); choose another with --out <dir>",
            file=sys.stderr,
        )
        return 2
    try:  # what it writes in `out`, never through a link planted there (plots/ would lead its files elsewhere)
        for name in ("leaderboard.md", "leaderboard.csv", "plots", "dashboard.html"):
            refuse_links(out / name, out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verdict = SignificanceOptions(args.significance or "", args.test, args.alpha, args.correction)
    tune = [key for keys in args.tune for key in keys.split(",") if key]
    sections = build_sections(runs, args.metric, verdict, tune, args.all_points)
    plotted = [] if args.no_plots else [write_plots(section, out) for section in sections]
    sources = [str(d) for d in args.dirs]
    text = write_markdown(
        sections,
        runs,
        out,
        sources,
        with_plots=not args.no_plots,
        problems=problems,
        significance=options,
        verdict=verdict,
    )
    write_csv(sections, out)
    wrote = [out / "leaderboard.md", out / "leaderboard.csv"] + ([f"{out / 'plots'}/"] if any(plotted) else [])
    if args.html is not None:
        from src.compare.html_dashboard import write_html

        wrote.append(
            write_html(sections, runs, Path(args.html) if args.html else out / "dashboard.html", sources, problems)
        )
    print(re.sub(r"^!\[.*\n?", "", text, flags=re.M))
    print("wrote " + ", ".join(map(str, wrote)))
    return 0
