"""The offline dashboard of `python -m src.compare --html`: one self-contained HTML file.

Everything is inlined: plotly.js (from the `plotly` package, include_plotlyjs=True's bundle), the data, the
tables, the styles and the script, so the file opens from disk or an e-mail with no network. It holds the
leaderboards (one per task, the baseline as a row; click a column to sort; filter by task, cell and setting),
the cross-task summary, and per task two interactive charts: the test metric per row (mean ± std, the baseline
dashed) and the training loss and monitored validation metric by step (mean ± std band over seeds). A row has
the same colour in every chart of its task, as in the PNG plots.

`python -m src.compare.browser <file>` opens it in headless chromium (the test does the same).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.common.files import atomic_write_text
from src.compare.leaderboard import (
    BASELINE_COLOUR,
    BASELINE_MARGIN,
    TRAIN_LOSS,
    Run,
    Section,
    band,
    baseline_text,
    budget_text,
    cell_summary,
    ended_text,
    error_bars,
    has_verdicts,
    label,
    row_curves,
    section_heading,
    value_text,
)
from src.records.identity import ARCH

TITLE = "rnn-bench comparison"
# Plotly's toolbar (the modebar, shown on hover) sits in the top right corner of a chart, where a centred title of a
# half-width chart reaches: each chart's top margin gets a band of its own for the toolbar, and the title is placed
# under that band rather than in the middle of the margin.
TOOLBAR_PX = 26
BELOW_TOOLBAR = {"yref": "container", "y": 1, "yanchor": "top", "pad": {"t": TOOLBAR_PX + 8}}


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def row_id(section: Section, i: int) -> str:
    return f"{section.slug}-{i}"


def bars_figure(section: Section) -> dict:
    """The test metric per row, best at the top, std as error bars (cut at 0 for a non-negative metric)."""
    rows = section.ranked_rows()
    below, above = error_bars(section, rows)
    names = [("★ " if row.best else "") + label(row) for row in rows]
    data = []
    for i, row in enumerate(rows):
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "x": [row.mean],
                "y": [names[i]],
                "name": label(row),
                "meta": row_id(section, section.rows.index(row)),
                "showlegend": False,
                "marker": {
                    "color": row.colour,
                    "pattern": {"shape": "/" if row.beats_baseline is False else ""},
                    "line": {"color": "black", "width": 2 if row.best else 0},
                },
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": [above[i]],
                    "arrayminus": [below[i]],
                    "color": "#333",
                },
                "hovertemplate": f"{html.escape(label(row))}<br>{section.metric} %{{x:.4g}}"
                + (f" ± {row.std:.2g}" if row.std is not None else "")
                + f"<br>{len(row.values)} seeds<extra></extra>",
            }
        )
    layout: dict[str, Any] = {
        "title": {
            "text": f"{section.metric} ({'higher' if section.higher_is_better else 'lower'} is better; "
            "mean ± std over seeds)",
            "font": {"size": 14},
            **BELOW_TOOLBAR,
        },
        "height": 166 + 30 * len(rows),
        "margin": {"l": 10, "r": 20, "t": 50 + TOOLBAR_PX, "b": 40},
        "yaxis": {"autorange": "reversed", "automargin": True, "categoryorder": "array", "categoryarray": names},
        "xaxis": {"title": {"text": section.metric}, "rangemode": "tozero" if section.nonnegative else "normal"},
        "barmode": "overlay",
        "shapes": [],
        "annotations": [],
    }
    if section.baseline is not None:
        layout["shapes"].append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": section.baseline.mean,
                "x1": section.baseline.mean,
                "y0": 0,
                "y1": 1,
                "line": {"color": BASELINE_COLOUR, "dash": "dash", "width": 2},
            }
        )
        layout["annotations"].append(
            {
                "xref": "x",
                "yref": "paper",
                "x": section.baseline.mean,
                "y": 1.0,
                "yanchor": "bottom",
                "showarrow": False,
                "text": f"baseline {section.baseline.mean:.4g}",
                "font": {"size": 11},
            }
        )
    return {"data": data, "layout": layout}


def curves_figure(section: Section) -> dict | None:
    """Training loss and the monitored validation metric by step: per row the mean over seeds, a band of ± std."""
    columns = (TRAIN_LOSS, section.monitor)
    data = []
    for row in section.ranked_rows():
        rid, name = row_id(section, section.rows.index(row)), label(row)
        found = row_curves(row, columns)
        for k, column in enumerate(columns):
            if column not in found:
                continue
            curve, axes = found[column], {"xaxis": f"x{k + 1 if k else ''}", "yaxis": f"y{k + 1 if k else ''}"}
            if curve.seeds > 1:
                low, high = band(curve, column == TRAIN_LOSS or section.nonnegative)
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "x": curve.steps + curve.steps[::-1],
                        "y": high + low[::-1],
                        "fill": "toself",
                        "fillcolor": _rgba(row.colour, 0.18),
                        "line": {"width": 0, "color": row.colour},
                        "hoverinfo": "skip",
                        "showlegend": False,
                        "legendgroup": rid,
                        "meta": rid,
                        "name": f"{name} ± std",
                        **axes,
                    }
                )
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(curve.steps) < 40 else "lines",
                    "x": curve.steps,
                    "y": curve.mean,
                    "name": name,
                    "legendgroup": rid,
                    "meta": rid,
                    "line": {"color": row.colour, "width": 3 if row.best else 1.5},
                    "marker": {"size": 5},
                    "showlegend": k == 0 or TRAIN_LOSS not in found,  # one legend entry per row
                    "customdata": curve.std,
                    "hovertemplate": f"{html.escape(name)}<br>step %{{x}}: %{{y:.4g}} ± %{{customdata:.2g}}"
                    f" ({curve.seeds} seeds)<extra></extra>",
                    **axes,
                }
            )
    if not data:
        return None
    return {
        "data": data,
        "layout": {
            "title": {"text": "by step (mean ± std over seeds)", "font": {"size": 14}, **BELOW_TOOLBAR},
            "height": 506,
            "margin": {"l": 50, "r": 10, "t": 70 + TOOLBAR_PX, "b": 40},
            "legend": {"font": {"size": 10}, "orientation": "h", "y": -0.18, "yanchor": "top"},
            "xaxis": {"domain": [0, 0.44], "title": {"text": "step"}, "anchor": "y"},
            "yaxis": {"title": {"text": TRAIN_LOSS}, "anchor": "x"},
            "xaxis2": {"domain": [0.56, 1], "title": {"text": "step"}, "anchor": "y2"},
            "yaxis2": {"title": {"text": section.monitor}, "anchor": "x2"},
            "annotations": [
                {
                    "text": f"<b>{html.escape(text)}</b>",
                    "xref": "paper",
                    "yref": "paper",
                    "x": x,
                    "y": 1.0,
                    "yanchor": "bottom",
                    "xanchor": "center",
                    "showarrow": False,
                }
                for text, x in ((TRAIN_LOSS, 0.22), (section.monitor, 0.78))
            ],
        },
    }


# -- tables --------------------------------------------------------------------------------------------------------


def _cell(value: Any, sort: Any = None, cls: str = "") -> str:
    """A table cell; `sort` (a number or text) is what the column sorts by, else the text itself."""
    attrs = f' data-v="{html.escape(str(sort))}"' if sort is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{html.escape('' if value is None else str(value))}</td>"


def _table(headers: Sequence[tuple[str, str]], body: list[str], cls: str = "") -> str:
    """headers: (name, 'num' or 'text'): how the column sorts."""
    head = "".join(f'<th data-type="{kind}" title="click to sort">{html.escape(name)}</th>' for name, kind in headers)
    return f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def board_table(section: Section) -> str:
    """The task's leaderboard, with the markdown leaderboard's columns: the grid point picked on validation where
    the rows were tuned (--tune), the budget and how the runs ended where they recorded it, the state size."""
    tuned, verdicts = any(row.tuned for row in section.rows), has_verdicts(section)
    headers = [
        ("rank", "num"),
        *[(k, "num" if k == "depth" else "text") for k in ARCH],
        ("setting", "text"),
        (section.metric, "num"),
        ("std", "num"),
        *([("picked on validation", "text")] if tuned else []),
        ("seeds", "num"),
        ("failed", "num"),
        *([("budget", "text"), ("ended", "text")] if verdicts else []),
        *([("beats baseline", "text")] if section.baseline else []),
        ("params", "num"),
        ("state", "num"),
        ("samples/s", "num"),
        ("wall s", "num"),
    ]
    body = []
    ranked = section.ranked_rows()
    for i, row in enumerate(section.rows):
        classes = " ".join(c for c, on in (("best", row.best), ("below", row.beats_baseline is False)) if on)
        rank = ranked.index(row) + 1 if row in ranked else None
        params, sps, wall = row.field_mean("params"), row.field_mean("train_samples_per_s"), row.field_mean("wall_s")
        state = row.field_mean("state_floats")
        cells = [
            _cell(rank, rank if rank else ""),
            f'<td data-v="{html.escape(str(row.arch[0]))}"><span class="swatch" '
            f'style="background:{row.colour}"></span>{html.escape(str(row.arch[0]))}</td>',
            *[_cell(v) for v in row.arch[1:]],
            _cell(row.shown),
            _cell(
                ("★ " if row.best else "") + (value_text(row) if row.mean is None else f"{row.mean:.4g}"),
                row.mean if row.mean is not None else "",
                "metric",
            ),
            _cell("" if row.std is None else f"{row.std:.2g}", row.std if row.std is not None else ""),
            *([_cell(row.tuned, cls="edge" if row.tuned_edge else "")] if tuned else []),
            _cell(len(row.values), len(row.values)),
            _cell(sum(not r.ok for r in row.runs), sum(not r.ok for r in row.runs)),
        ]
        if verdicts:
            ended = ended_text(row)
            cells += [_cell(budget_text(row)), _cell(ended, cls="learning" if "still learning" in ended else "")]
        if section.baseline:
            cells.append(_cell({True: "yes", False: "no", None: ""}[row.beats_baseline]))
        cells += [
            _cell("" if params is None else f"{params:,.0f}", "" if params is None else params),
            _cell("" if state is None else f"{state:,.0f}", "" if state is None else state),
            _cell("" if sps is None else f"{sps:,.0f}", "" if sps is None else sps),
            _cell("" if wall is None else f"{wall:.1f}", "" if wall is None else wall),
        ]
        body.append(
            f'<tr class="run {classes}" data-row="{row_id(section, i)}" data-cell="{html.escape(str(row.arch[0]))}" '
            f'data-setting="{html.escape(row.shown)}">{"".join(cells)}</tr>'
        )
    if section.baseline is not None:
        b = section.baseline
        cells = [
            _cell("", ""),
            _cell("baseline", "baseline"),
            *[_cell("") for _ in ARCH[1:]],
            _cell("trivial predictor"),
            _cell(baseline_text(b), b.mean, "metric"),
        ]
        cells += [_cell("", "") for _ in headers[len(cells) :]]
        body.insert(
            sum(bool(r.beats_baseline) for r in section.rows),
            f'<tr class="baseline" data-cell="" data-setting="">{"".join(cells)}</tr>',
        )
    return _table(headers, body, "board")


def summary_html(sections: Sequence[Section]) -> str:
    body = [
        f'<tr class="run" data-cell="{html.escape(s.cell)}" data-setting="">'
        + _cell(s.cell)
        + _cell(s.tasks, s.tasks)
        + _cell(f"{s.mean_rank:.2f}", s.mean_rank)
        + _cell(s.wins, s.wins)
        + _cell(
            f"{s.beats_baseline} of {s.with_baseline}" if s.with_baseline else "",
            s.beats_baseline if s.with_baseline else "",
        )
        + "</tr>"
        for s in cell_summary(sections)
    ]
    return _table(
        [("cell", "text"), ("tasks", "num"), ("mean rank", "num"), ("wins", "num"), ("beats baseline", "num")],
        body,
        "summary",
    )


def plain_table(rows: Sequence[dict], cls: str) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    body = ["<tr>" + "".join(_cell(row.get(k)) for k in keys) + "</tr>" for row in rows]
    return _table([(k, "text") for k in keys], body, cls)


# -- the page ------------------------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 1.5em 2em; color: #222; }
h1 { font-size: 1.5em; margin: .6em 0 .2em; } h2 { font-size: 1.2em; margin: 1.4em 0 .4em; }
#controls { position: sticky; top: 0; background: #f6f8fa; border-bottom: 1px solid #ddd; padding: .5em .8em;
  margin: 0 -1.5em 1em; display: flex; gap: 1.2em; align-items: center; flex-wrap: wrap; z-index: 10; }
#controls select, #controls input { font: inherit; padding: .15em .3em; }
table { border-collapse: collapse; margin: .4em 0 .8em; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25em .7em; text-align: left; white-space: nowrap; }
th { background: #f0f2f4; cursor: pointer; user-select: none; }
th.asc::after { content: " ▲"; font-size: .8em; } th.desc::after { content: " ▼"; font-size: .8em; }
tr.best td { font-weight: 600; background: #fff7e0; }
tr.below td.metric { color: #a33; }
td.edge, td.learning { font-weight: 600; }
tr.baseline td { font-style: italic; background: #f3f3f3; color: #555; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .4em; border-radius: 2px; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .chart { flex: 1 1 520px; min-width: 420px; }
.note { color: #555; max-width: 70em; } .absent { color: #555; font-style: italic; }
"""

SCRIPT = r"""
(function () {
  const DATA = JSON.parse(document.getElementById('dashboard-data').textContent);
  const rows = () => Array.from(document.querySelectorAll('tr.run'));
  function sortBy(th) {
    const table = th.closest('table'), body = table.tBodies[0];
    const col = Array.from(th.parentNode.children).indexOf(th), num = th.dataset.type === 'num';
    const asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
    th.classList.add(asc ? 'asc' : 'desc');
    const key = tr => { const td = tr.children[col]; return td.dataset.v !== undefined ? td.dataset.v : td.textContent; };
    const sorted = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === '' || y === '') return (x === '') - (y === '');  // empty cells last either way
      const d = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
      return asc ? d : -d;
    });
    sorted.forEach(tr => body.appendChild(tr));
  }
  document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortBy(th)));

  const task = document.getElementById('f-task'), cell = document.getElementById('f-cell'),
        setting = document.getElementById('f-setting'), count = document.getElementById('f-count');
  function apply() {
    const want = setting.value.trim().toLowerCase();
    const shown = new Set();
    let n = 0, total = 0;
    document.querySelectorAll('section.task').forEach(sec => {
      const on = !task.value || sec.dataset.task === task.value;
      sec.style.display = on ? '' : 'none';
      sec.querySelectorAll('tr.run').forEach(tr => {
        const ok = on && (!cell.value || tr.dataset.cell === cell.value)
          && (!want || tr.dataset.setting.toLowerCase().includes(want));
        tr.style.display = ok ? '' : 'none';
        total += 1; n += ok;
        if (ok) shown.add(tr.dataset.row);
      });
      if (!on) return;
      sec.querySelectorAll('.js-plotly-plot').forEach(div => {
        Plotly.restyle(div, {visible: div.data.map(t => t.meta === undefined || shown.has(t.meta))});
        Plotly.Plots.resize(div);
      });
    });
    document.querySelectorAll('table.summary tr.run').forEach(tr => {
      tr.style.display = !cell.value || tr.dataset.cell === cell.value ? '' : 'none';
    });
    count.textContent = n + ' of ' + total + ' rows';
  }
  [task, cell].forEach(el => el.addEventListener('change', apply));
  setting.addEventListener('input', apply);

  const config = {responsive: true, displaylogo: false};
  Promise.all(Object.entries(DATA.charts).map(([id, fig]) =>
      Plotly.newPlot(id, fig.data, fig.layout, config))).then(() => {
    apply();
    window.dashboardReady = true;
    document.body.dataset.ready = 'true';
  });
})();
"""


def write_html(
    sections: Sequence[Section],
    runs: Sequence[Run],
    path: Path,
    sources: Sequence[str],
    problems: Sequence[tuple[Path, str]] = (),
) -> Path:
    from plotly.offline import get_plotlyjs  # plotly.js itself, bundled in the Python package: no CDN

    charts: dict[str, dict] = {}
    parts = []
    for section in sections:
        parts.append(
            f'<section class="task" data-task="{html.escape(section.dataset)}">'
            f"<h2>{html.escape(section_heading(section)[3:])}</h2>"
        )
        if section.absent:
            parts.append(f'<p class="absent">{html.escape(section.absent_note())}.</p></section>')
            continue
        if section.baseline is not None:
            parts.append(
                f'<p class="note">The baseline row is the task\'s trivial predictor '
                f"({html.escape(section.metric)} {html.escape(baseline_text(section.baseline))}); rows "
                f'not better than it by more than {BASELINE_MARGIN:.0%} are marked "no" and hatched in the '
                f"chart, and get no ★.</p>"
            )
        parts.append(board_table(section))
        divs = []
        for kind, figure in (
            ("bars", bars_figure(section) if section.ranked_rows() else None),
            ("curves", curves_figure(section)),
        ):
            if figure is not None:
                charts[f"chart-{section.slug}-{kind}"] = figure
                divs.append(f'<div class="chart" id="chart-{section.slug}-{kind}"></div>')
        parts.append(f'<div class="charts">{"".join(divs)}</div></section>')
    summary = cell_summary(sections)
    if summary:
        parts.append(
            '<section id="summary"><h2>Across tasks</h2><p class="note">Each cell\'s rank among the cells '
            "of every task it ran (by its best row there; ties share the better rank), the mean of those "
            "ranks, its wins (tasks where it holds the ★) and the tasks where it beats the baseline.</p>"
            + summary_html(sections)
            + "</section>"
        )
    failed = [r for r in runs if not r.ok]
    if failed:
        parts.append(
            '<section id="failed"><h2>Failed runs</h2>'
            + plain_table(
                [
                    {
                        **{k: r.record.get(k) for k in ("dataset", *ARCH, "seed")},
                        "error": r.record.get("error", ""),
                        "run dir": str(r.dir),
                    }
                    for r in failed
                ],
                "failed",
            )
            + "</section>"
        )
    if problems:
        parts.append(
            '<section id="problems"><h2>Unreadable records (skipped)</h2>'
            + plain_table([{"file": str(p), "why": why} for p, why in problems], "problems")
            + "</section>"
        )

    options = lambda values: "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    tasks = [s.dataset for s in sections]
    cells = sorted({str(row.arch[0]) for s in sections for row in s.rows})
    ok = sum(r.ok for r in runs)
    # In a <script> element only "</" could end it early: written as "<\/", which JSON reads the same.
    data = json.dumps({"charts": charts}, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{TITLE}</title><style>{STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body>
<h1>{TITLE}</h1>
<p class="note">{len(runs)} runs ({ok} ok, {len(runs) - ok} failed) from {html.escape(", ".join(sources))}. Per task,
one row per architecture and setting; the test metric is the mean ± sample std over seeds; ★ marks the best.
Click a column to sort; hover a chart for values, click a legend entry to hide a row.</p>
<div id="controls">
<label>task <select id="f-task"><option value="">all</option>{options(dict.fromkeys(tasks))}</select></label>
<label>cell <select id="f-cell"><option value="">all</option>{options(cells)}</select></label>
<label>setting <input id="f-setting" type="search" placeholder="e.g. hidden 64"></label>
<span id="f-count"></span>
</div>
{"".join(parts)}
<script type="application/json" id="dashboard-data">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    atomic_write_text(path, page)
    return path
