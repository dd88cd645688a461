"""python -m src.compare.wandb_dashboard [--entity <you>] [--project rnn-bench] [--sweep quick] [--dry-run] <run or sweep dirs...>

The comparison on W&B, for runs logged online (logger.wandb.offline=false, or `wandb sync`): a report with one
panel grid per task (data set) whose runs are grouped by architecture — config run.cell, run.depth,
run.direction, run.truncation — and by every setting that differs between them (run.cell_variant,
run.optimizer_lr, ...: src/records/identity.py), with the test metric as a bar chart (mean and std over the seeds in each
group), the validation curves, and the metric against each such setting (scatter and parallel coordinates); and a
saved workspace view grouped the same way. The tasks and their metrics are read
from the local metrics.json files, as src.compare reads them. Needs `pip install -e ".[dashboard]"` and W&B access
(`wandb login`; --entity, your W&B user or team); --dry-run says in words what it would create and needs none of
these: no extra, no network, no account, no entity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.compare.leaderboard import Section, build_sections, find_runs
from src.records.identity import config_key

GROUP_BY = ["run.cell", "run.depth", "run.direction", "run.truncation"]  # the config columns train.py logs


def setting_keys(section: Section) -> list[str]:
    """The W&B config keys (run.<key>) of the settings that differ between the section's rows: the leaderboard's
    setting column (`cell.variant=NIG optimizer.lr=0.01` -> run.cell_variant, run.optimizer_lr)."""
    keys = {token.partition("=")[0] for row in section.rows for token in row.setting.split() if "=" in token}
    return [f"run.{config_key(k)}" for k in sorted(keys)]


def group_by(section: Section) -> list[str]:
    """One group per leaderboard row: the architecture and the settings that differ."""
    return GROUP_BY + setting_keys(section)


def setting_panels(section: Section) -> list:
    """The metric against each differing setting (a search's lr, a study's variant), and all of them at once."""
    import wandb_workspaces.reports.v2 as wr

    keys = setting_keys(section)
    panels = [
        wr.ScatterPlot(title=f"{section.metric} by {key}", x=wr.Config(key), y=wr.SummaryMetric(section.metric))
        for key in keys
    ]
    if keys:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in keys]
        columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(section.metric)))
        panels.append(wr.ParallelCoordinatesPlot(title=f"{section.metric} by setting", columns=columns))
    return panels


def runs_filter(dataset: str, sweep: str | None) -> str:
    text = f"Config('run.dataset') = '{dataset}'"
    return text + (f" and JobType = '{sweep}'" if sweep else "")


def report_panels(section: Section) -> list[str]:
    """The panels of a task's grid in the report, in words and in order (build_report makes the same)."""
    better = "higher" if section.higher_is_better else "lower"
    keys = setting_keys(section)
    return [
        f"bar chart '{section.metric} ({better} is better)': mean and std over the seeds of each group",
        f"line chart '{section.monitor} by epoch': mean and std band",
        "bar chart 'train samples/s'",
        *(f"scatter plot '{section.metric} by {key}'" for key in keys),
        *([f"parallel coordinates '{section.metric} by setting': {', '.join(keys)}"] if keys else []),
    ]


def describe(sections: list[Section], entity: str | None, project: str, sweep: str | None) -> str:
    """What main() would save, in words: the report, its grid per task, and the workspace view."""
    where = f"{entity}/{project}" if entity else f"{project} (of the --entity given when saving)"
    runs_of = f"the runs of job type {sweep!r}" if sweep else "all its runs"
    title = f"rnn-bench comparison{f' ({sweep})' if sweep else ''}"
    lines = [
        f"Would create in the W&B project {where} (nothing is saved with --dry-run):",
        f"- a report {title!r} with {len(sections)} panel grid(s), one per task, each over {runs_of} of that task:",
    ]
    for s in sections:
        runs = sum(len(row.runs) for row in s.rows)
        lines.append(
            f"  - {s.dataset} ({s.task}): {runs} local run(s) in {len(s.rows)} group(s), grouped by "
            f"{', '.join(group_by(s))}"
        )
        lines += [f"    - {panel}" for panel in report_panels(s)]
    keys = list(dict.fromkeys(k for s in sections for k in group_by(s)))
    lines.append(
        f"- a saved workspace view {title!r} of {runs_of}, grouped by run.dataset, {', '.join(keys)}, with a "
        f"section per task: {', '.join(f'{s.dataset}: {s.metric}' for s in sections)}"
    )
    return "\n".join(lines)


def build_report(sections: list[Section], entity: str, project: str, sweep: str | None):
    import wandb_workspaces.reports.v2 as wr

    blocks = [
        wr.P(
            f"Runs grouped by {', '.join(GROUP_BY)} and the settings that differ (run.<key>); bars are the mean "
            "and std over seeds. Local leaderboard: python -m src.compare <sweep dir>."
        )
    ]
    for s in sections:
        better = "higher" if s.higher_is_better else "lower"
        runset = wr.Runset(
            entity=entity,
            project=project,
            name=s.dataset,
            filters=runs_filter(s.dataset, sweep),
            groupby=[f"config.{key}" for key in group_by(s)],
        )
        panels = [
            wr.BarPlot(
                title=f"{s.metric} ({better} is better)",
                metrics=[wr.SummaryMetric(s.metric)],
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
                orientation="h",
            ),
            wr.LinePlot(
                title=f"{s.monitor} by epoch",
                x=wr.Metric("epoch"),
                y=[wr.Metric(s.monitor)],
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.BarPlot(
                title="train samples/s",
                metrics=[wr.SummaryMetric("perf/train_samples_per_s")],
                groupby_aggfunc="mean",
                orientation="h",
            ),
            *setting_panels(s),
        ]
        blocks += [wr.H2(f"{s.dataset} ({s.task}): {s.metric}"), wr.PanelGrid(runsets=[runset], panels=panels)]
    title = f"rnn-bench comparison{f' ({sweep})' if sweep else ''}"
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks)


def build_workspace(sections: list[Section], entity: str, project: str, sweep: str | None):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    sections_ = [
        ws.Section(
            name=f"{s.dataset}: {s.metric}",
            is_open=True,
            panels=[
                wr.BarPlot(
                    title=s.metric,
                    metrics=[wr.SummaryMetric(s.metric)],
                    groupby_aggfunc="mean",
                    groupby_rangefunc="stddev",
                ),
                wr.LinePlot(
                    title=s.monitor,
                    x=wr.Metric("epoch"),
                    y=[wr.Metric(s.monitor)],
                    groupby_aggfunc="mean",
                    groupby_rangefunc="stddev",
                ),
                *setting_panels(s),
            ],
        )
        for s in sections
    ]
    keys = list(dict.fromkeys(k for s in sections for k in group_by(s)))
    settings = ws.RunsetSettings(
        groupby=[ws.Config("run.dataset"), *[ws.Config(k) for k in keys]],
        filters=f"JobType = '{sweep}'" if sweep else "",
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"rnn-bench comparison{f' ({sweep})' if sweep else ''}",
        sections=sections_,
        runset_settings=settings,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare.wandb_dashboard", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="+", type=Path, help="the local run or sweep dirs of the runs on W&B")
    parser.add_argument("--entity", help="your W&B user or team (needed to save; not for --dry-run)")
    parser.add_argument("--project", default="rnn-bench")
    parser.add_argument("--sweep", help="only runs of this sweep (its W&B job type, e.g. quick)")
    parser.add_argument("--dry-run", action="store_true", help="say what it would create; save nothing")
    args = parser.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        print(f"error: no metrics.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    sections = build_sections(runs)
    if args.dry_run:
        print(describe(sections, args.entity, args.project, args.sweep))
        return 0
    if not args.entity:
        print("error: saving the report needs --entity <your W&B user or team> (--dry-run does not)", file=sys.stderr)
        return 2
    try:
        report = build_report(sections, args.entity, args.project, args.sweep)
        workspace = build_workspace(sections, args.entity, args.project, args.sweep)
    except ImportError:
        print('error: needs wandb-workspaces: pip install -e ".[dashboard]"', file=sys.stderr)
        return 2
    report.save()
    workspace.save()
    print(f"report: {report.url}\nworkspace: {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
