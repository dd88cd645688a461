"""python -m src.results <page> [--dry-run] [--out DIR] [--runs DIR]

Regenerates a results page from its config (conf/results/<page>.yaml, or a page config's path): each table is a
Hydra multirun (`python -m src.train -m ...`, run as a process of its own) into a fixed sweep dir, <runs>/<table>
(default outputs/results/<page>/), so running the command again skips the jobs that finished; then the page,
<out>/<page>.md (default docs/results/), is written from those runs alone: a header (commit, machine, date,
command), per table the tuned leaderboard of src.compare (the validation-picked learning rate per architecture,
the winning group, the baseline, params and state), the tests against the table's reference, the verdicts against
the page before, a plot (<out>/<page>/<table>/plots/) and the table's CPU time. --dry-run prints each table's
multirun command and its number of jobs and runs, and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from src.common.errors import ConfigError
from src.common.files import atomic_write_text
from src.common.paths import REPO_ROOT


def default_runs(page: str) -> Path:
    return Path(os.environ.get("RNN_BENCH_ROOT", ".")) / "outputs" / "results" / page


def default_out() -> Path:
    return (REPO_ROOT or Path.cwd()) / "docs" / "results"


def dry_run(page, runs_root: Path) -> int:
    total_jobs = total_runs = total_packs = 0
    for table in page.tables:
        jobs, runs = page.counts(table)
        packs = page.packs(table)
        total_jobs, total_runs, total_packs = total_jobs + jobs, total_runs + runs, total_packs + (packs or 0)
        packed = f" (packed by the launcher into {packs} stacked jobs)" if packs else ""
        print(f"{table.name}: {jobs} jobs, {runs} runs{packed}")
        print(f"  {page.shown_command(table, runs_root / table.name)}")
    packed = f" ({total_packs} stacked jobs)" if total_packs else ""
    print(
        f"page {page.name}: {len(page.tables)} tables, {total_jobs} jobs{packed}, {total_runs} runs (dry run: nothing ran)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.results", description=__doc__.split("\n\n")[1])
    parser.add_argument("page", help="a page name (conf/results/<page>.yaml) or a page config's path")
    parser.add_argument("--dry-run", action="store_true", help="print the multirun commands and counts; run nothing")
    parser.add_argument("--out", type=Path, help="where the page goes: <out>/<page>.md (default docs/results)")
    parser.add_argument(
        "--runs", type=Path, help="the tables' sweep dirs: <runs>/<table> (default outputs/results/<page>)"
    )
    args = parser.parse_args(argv)
    from src.results.page import load_page

    try:
        page = load_page(args.page)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs_root = (args.runs or default_runs(page.name)).resolve()
    if args.dry_run:
        return dry_run(page, runs_root)
    out = (args.out or default_out()).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create {e.filename} ({e.strerror}); choose another with --out / --runs", file=sys.stderr)
        return 2
    return regenerate(page, runs_root, out, argv if argv is not None else sys.argv[1:])


def regenerate(page, runs_root: Path, out: Path, argv: list[str]) -> int:
    from src.compare.leaderboard import build_sections
    from src.compare.report import write_plots
    from src.compare.significance import SignificanceOptions
    from src.results import machine
    from src.results.render import TableResult, page_markdown, relative
    from src.results.run import cost, job_runs, run_multirun

    cwd = REPO_ROOT or Path.cwd()
    header = {
        "command": shlex.join(["python", "-m", "src.results", *argv]),
        "page config": str(page.path.relative_to(cwd) if page.path.resolve().is_relative_to(cwd) else page.path),
        "commit": machine.commit(cwd),
        "machine": machine.machine(),
        "started": machine.now(),
    }
    results, failed = [], []
    for table in page.tables:
        sweep_dir = runs_root / table.name
        jobs, planned = page.counts(table)
        print(f"== table {table.name}: {jobs} jobs, {planned} runs, into {sweep_dir}", flush=True)
        status, job_dirs, _ = run_multirun(page.command(table, sweep_dir), sweep_dir, cwd)
        if status not in (0, 1):  # the multirun stopped before its jobs (a bad override): its error is above
            print(f"error: table {table.name}: the multirun exited {status} before running its jobs", file=sys.stderr)
            return 2
        if status == 1:
            failed.append(table.name)
        runs = job_runs(sweep_dir, job_dirs)
        sections = build_sections(runs, None, SignificanceOptions("", page.test), page.tune_keys())
        plots_dir = out / page.name / table.name
        plots = []
        for section in sections:
            write_plots(section, plots_dir)
            bars = plots_dir / "plots" / f"{section.slug}_bars.png"
            plots += [relative(bars, out)] if bars.exists() else []
        results.append(
            TableResult(
                table, sections, runs, cost(sweep_dir, runs), page.shown_command(table, sweep_dir), jobs, planned, plots
            )
        )
    header["finished"] = machine.now()
    path = atomic_write_text(out / f"{page.name}.md", page_markdown(page, results, header) + "\n")
    print(f"wrote {path}")
    if failed:
        print(
            f"error: jobs failed in table(s) {', '.join(failed)} (listed above); the page shows them", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
