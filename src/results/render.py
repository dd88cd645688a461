"""The page's markdown: a header (commit, machine, date, command), a summary, then per table the tuned leaderboard
(src/compare: the validation-picked grid point per architecture, the winning group ★, the baseline), the tests
against the table's reference, the verdicts against the page before, a plot and what the table cost. Every number
comes from the table's runs; nothing is typed in."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src.common.markdown import Markdown, markdown_table, md_text
from src.compare.leaderboard import Row, Run, Section, _num, baseline_text, table_lines, value_text
from src.compare.significance import SignificanceOptions, is_reference, significance
from src.results.page import Page, Table
from src.results.run import Cost

CONSTANT_COLUMNS = ("depth", "direction", "truncation")


@dataclass
class TableResult:
    table: Table
    sections: list[Section]
    runs: list[Run]
    cost: Cost
    command: str
    jobs: int
    planned_runs: int
    plots: list[str]  # paths relative to the page's markdown file


def seconds(s: float) -> str:
    return f"{s:,.0f} s ({s / 60:.1f} min)"


def leaderboard(section: Section) -> str:
    """The tuned leaderboard without the columns every row shares (said above the table instead)."""
    lines = table_lines(section)
    rows = [line for line in lines if line.get("cell") != "*baseline*"]
    for column in CONSTANT_COLUMNS:
        if rows and len({str(line.get(column)) for line in rows}) == 1:
            for line in lines:
                line.pop(column, None)
    return markdown_table(lines, escape=True)


def shared(section: Section) -> str:
    arch = {tuple(row.arch[1:]) for row in section.rows}
    if len(arch) != 1:
        return ""
    depth, direction, truncation = next(iter(arch))
    return f"depth {depth}, {direction}, truncation {truncation}"


def winners(section: Section) -> str:
    rows = [row for row in section.rows if row.best]
    return ", ".join(md_text(label_short(row)) for row in rows) or "none (no row beats the baseline)"


def label_short(row: Row) -> str:
    return f"{row.arch[0]} ({row.shown})" if row.shown else str(row.arch[0])


def now_verdict(row: Row, against: dict[int, str]) -> str:
    if row.beats_baseline is False:
        return "at the baseline"
    return against.get(id(row), "reference")


def verdict_word(text: str) -> str:
    """better / worse / same from a significance verdict (`**better**`, `no significant difference`, ...)."""
    text = str(text)
    return "better" if "better" in text else "worse" if "worse" in text else "same"


def was_lines(table: Table, section: Section, against: dict[int, str]) -> list[dict]:
    lines = []
    for key, before in table.was.items():
        kind = before.split(":", 1)[0].strip()
        found = [row for row in section.rows if row.mean is not None and is_reference(row, key)]
        if not found:
            lines.append({"row": key, "before": before, "now": "not run", "changed": ""})
            continue
        row = found[0]
        star = "winning group ★" if row.best else "not in the winning group"
        if kind in ("winner", "not winner"):
            changed = (kind == "winner") != row.best
            now = star
        elif kind == "reference":
            changed, now = False, "reference"
        else:
            word = verdict_word(against.get(id(row), "same"))
            changed, now = word != kind, f"{word} ({star})"
        lines.append({"row": key, "before": before, "now": now, "changed": Markdown("**yes**") if changed else "no"})
    return lines


def table_markdown(page: Page, result: TableResult) -> list[str]:
    table = result.table
    md = [f"## {md_text(table.title)}", ""]
    if table.about:
        md += [table.about.strip(), ""]
    grid = "; ".join(f"{k} {', '.join(v)}" for k, v in page.grid.items())
    md += [
        f"Task `{' '.join(table.task)}`; size `{' '.join(table.size)}`; budget `{' '.join(table.budget)}`; "
        f"grid {grid}; seeds {', '.join(map(str, page.seeds))} "
        f"({'stacked in one job per grid point' if page.seeds_as == 'stacked' else 'a job each'}): "
        f"{result.planned_runs} runs in {result.jobs} jobs"
        + (f", packed by the launcher into {packs} stacked jobs." if (packs := page.packs(table)) else "."),
        "",
        "```bash",
        result.command,
        "```",
        "",
    ]
    if not result.sections:
        md += ["No finished run of this table's jobs: see the multirun's output above its summary.", ""]
    options = SignificanceOptions(table.reference, page.test)
    for section in result.sections:
        if len(result.sections) > 1:
            md += [f"### {md_text(section.dataset)}", ""]
        if section.absent:
            md += [section.absent_note() + ".", ""]
            continue
        metric = f"{section.metric}, {'higher' if section.higher_is_better else 'lower'} is better"
        md += [
            f"{md_text(metric)}; {shared(section)}. Winning group (★): **{winners(section)}**. "
            + (
                f"Baseline (trivial predictor): {baseline_text(section.baseline)}."
                if section.baseline
                else "No baseline recorded."
            ),
            "",
            leaderboard(section),
            "",
        ]
        ref, found, note = significance(section, options) if table.reference else (None, [], "no reference set")
        against = {id(c.row): str(c.verdict) for c in found}
        if ref is not None:
            md += [
                f"Against the reference {md_text(label_short(ref))} ({value_text(ref)}), {options.described()}:",
                "",
                markdown_table(
                    [
                        {
                            "row": label_short(c.row),
                            "minus reference": _num(c.diff, "+.3g"),
                            "p": _num(c.p, ".3g"),
                            "p (Holm)": _num(c.p_adjusted, ".3g"),
                            "verdict": c.verdict,
                        }
                        for c in found
                    ],
                    escape=True,
                ),
                "",
            ]
        elif table.reference:
            md += [f"Reference {md_text(table.reference)}: {md_text(note)}.", ""]
        if table.was:
            md += [
                "Verdicts against the page before (one learning rate, sizes not matched), row by row:",
                "",
                markdown_table(was_lines(table, section, against), escape=True),
                "",
            ]
    md += [f"![{md_text(table.title)}]({plot})" for plot in result.plots] + ([""] if result.plots else [])
    c = result.cost
    md += [
        f"Cost: {seconds(c.cpu_s)} of CPU time (user + system of the multirun processes), "
        f"{seconds(c.wall_s)} of wall time over {c.invocations} invocation(s) of the multirun (the last "
        f"{seconds(c.last_wall_s)}, {c.skipped} of its {c.jobs} jobs finished before); the runs' own wall_s "
        f"summed over jobs: {seconds(c.runs_wall_s)}.",
        "",
    ]
    return md


def summary(results: Sequence[TableResult]) -> str:
    lines = []
    for result in results:
        for section in result.sections or [None]:
            best = section.ranked_rows()[0] if section and section.ranked_rows() else None
            lines.append(
                {
                    "table": result.table.title,
                    "metric": section.metric if section else "",
                    "winning group ★": Markdown(winners(section)) if section else "no runs",
                    "best": f"{label_short(best)}: {value_text(best)}" if best else "",
                    "baseline": baseline_text(section.baseline) if section and section.baseline else "",
                    "runs": result.planned_runs,
                    "CPU time": seconds(result.cost.cpu_s),
                }
            )
    return markdown_table(lines, escape=True)


def page_markdown(page: Page, results: Sequence[TableResult], header: dict[str, str]) -> str:
    md = [
        f"# {md_text(page.title)}",
        "",
        "<!-- Generated by `python -m src.results "
        + page.name
        + "` from its runs: do not edit by hand (rerun the command). -->",
        "",
    ]
    md += [f"- **{key}**: {md_text(value)}" for key, value in header.items()] + [""]
    if page.about:
        md += [page.about.strip(), ""]
    grid = "; ".join(f"`{k}` {', '.join(v)}" for k, v in page.grid.items())
    md += [
        "Protocol: every architecture of a table is sized to the table's target (`model.params`, within 3%: "
        "src/models/sizing.py) and trained with the same budget at every point of the grid "
        f"({grid}) with seeds {', '.join(map(str, page.seeds))}. Per architecture the grid point with the best mean "
        "validation value of the monitored metric is kept and its **test** metric shown, mean ± std over seeds "
        "(`python -m src.compare --tune`); a pick at the grid's edge is in bold. ★ marks the winning group: the best "
        "row and every row not significantly different from it "
        f"({SignificanceOptions('', page.test).described()}). A row that does not beat the task's trivial "
        "baseline by more than 1% is marked **no** and gets no ★. Wall times and samples/s depend on the machine's "
        "load; accuracies do not.",
        "",
        summary(results),
        "",
    ]
    for result in results:
        md += table_markdown(page, result)
    return "\n".join(md)


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()
