"""python -m src.compare on hand-written run dirs (metrics.json, .hydra/overrides.yaml, csv/metrics.csv) laid out as
src.train writes them: seeds -> mean ± std, the best marked per task in the task's own direction, rows split by
any other override that varies, failures listed, CSV and plots written. (test_sweeps runs it on real runs.)"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from src.compare.report import main as compare


def make_run(root: Path, name: str, overrides: list[str], curve: list[float] = (), **record) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    base = {
        "status": "ok",
        "depth": 1,
        "direction": "uni",
        "truncation": "none",
        "params": 1000,
        "train_samples_per_s": 500.0,
        "wall_s": 10.0,
    }
    (run / "metrics.json").write_text(json.dumps({**base, **record}))
    if curve:
        monitor = record["monitor"]
        (run / "csv").mkdir()
        with open(run / "csv" / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", monitor])
            for epoch, value in enumerate(curve):
                writer.writerow([epoch, 10 * epoch + 9, 1.0, ""])  # a training row: no validation value
                writer.writerow([epoch, 10 * epoch + 9, "", value])
    return run


# A digits classification run's record fields (monitor val/acc, maximised).
DIGITS = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max")


def make_grid_run(root: Path, cell: str, lr: str, seed: int, **record) -> Path:
    """One run of an lr x seed grid on digits (dir <cell>_<lr>_<seed>), as --tune optimizer.lr reads it."""
    overrides = ["dataset=digits", f"cell={cell}", f"optimizer.lr={lr}", f"seed={seed}"]
    return make_run(root, f"{cell}_{lr}_{seed}", overrides, cell=cell, seed=seed, **DIGITS, **record)


@pytest.fixture
def sweep(tmp_path) -> Path:
    acc = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max")
    for seed, value in zip((1, 2, 3), (0.80, 0.90, 0.85)):
        make_run(
            tmp_path,
            f"gru{seed}",
            ["dataset=digits", "cell=gru", f"seed={seed}"],
            [0.5, 0.7],
            cell="gru",
            seed=seed,
            **{"test/acc": value, "test/f1": 0.5},
            **acc,
        )
    for seed, value in zip((1, 2), (0.95, 0.97)):
        make_run(
            tmp_path,
            f"lstm{seed}",
            ["dataset=digits", "cell=lstm", "depth=2", "direction=bi", f"seed={seed}"],
            [0.6, 0.9],
            cell="lstm",
            seed=seed,
            **{**acc, "depth": 2, "direction": "bi", "test/acc": value, "test/f1": 0.4},
        )
    make_run(
        tmp_path,
        "rnn1",
        ["dataset=digits", "cell=rnn", "seed=1"],
        dataset="digits",
        cell="rnn",
        seed=1,
        status="failed",
        error="FloatingPointError: the training loss became NaN or infinite",
    )
    for variant, value in (("NIG", 0.7), ("CIFG", 0.75)):
        make_run(
            tmp_path,
            f"v{variant}",
            ["dataset=digits", "cell=lstm_variant", f"cell.variant={variant}", "seed=1"],
            cell="lstm_variant",
            seed=1,
            **acc,
            **{"test/acc": value},
        )
    ppl = dict(dataset="lm_kjv", task="lm", monitor="val/ppl", monitor_mode="min")
    for cell, seed, value in (("lstm", 1, 120.0), ("lstm", 2, 130.0), ("gru", 1, 110.0)):
        make_run(
            tmp_path,
            f"lm_{cell}{seed}",
            ["dataset=lm_kjv", f"cell={cell}", f"seed={seed}"],
            cell=cell,
            seed=seed,
            **ppl,
            **{"test/ppl": value},
        )
    return tmp_path


def test_leaderboard_per_task_with_mean_std_best_and_failures(sweep, capsys):
    assert compare([str(sweep)]) == 0
    board = (sweep / "leaderboard.md").read_text()
    assert capsys.readouterr().out.startswith("# Leaderboard")
    digits, lm = board.split("## digits (classify): test/acc, higher is better")[1].split(
        "## lm_kjv (lm): test/ppl, lower is better"
    )
    lines = [line for line in digits.splitlines() if line.startswith("| ")][1:]
    assert lines[0].startswith("| lstm | 2 | bi | none |") and "**0.96 ± 0.014** ★" in lines[0]
    # gru's 3 seeds are not significantly below lstm's 2 (Welch, p = 0.051): the winning group holds both
    assert "| **0.85 ± 0.05** ★ | 3 |" in lines[1]
    assert any("| variant CIFG |" in line and "| 0.75 |" in line for line in lines)  # one row per variant
    assert any(line.startswith("| rnn |") and "failed" in line and "0 (+1 failed)" in line for line in lines)
    lm_rows = [line for line in lm.splitlines() if line.startswith("| ")][1:]
    assert lm_rows[0].startswith("| gru |") and "**110** ★" in lm_rows[0]  # lower perplexity wins
    assert "| 125 ± 7.1 | 2 |" in lm_rows[1]
    assert "## Failed runs" in board and "FloatingPointError: the training loss became NaN" in board

    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    best = [(r["dataset"], r["cell"]) for r in rows if r["best"] == "True"]
    assert best == [("digits", "lstm"), ("digits", "gru"), ("lm_kjv", "gru")]
    gru = next(r for r in rows if r["dataset"] == "digits" and r["cell"] == "gru")
    assert float(gru["mean"]) == pytest.approx(0.85) and float(gru["std"]) == pytest.approx(0.05)
    assert gru["seeds"] == "3" and gru["params"] == "1000"

    for name in ("digits_bars", "digits_curves", "lm_kjv_bars"):
        assert (sweep / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "](plots/digits_bars.png)" in board and "lm_kjv_curves" not in board  # lm_kjv: no CSV logs


def test_another_metric_and_output_dir(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    assert (
        compare([str(sweep / "gru1"), str(sweep / "lstm1"), "--metric", "test/f1", "--out", str(out), "--no-plots"])
        == 0
    )
    board = (out / "leaderboard.md").read_text()
    assert "test/f1, higher is better" in board and "**0.5** ★" in board and not (out / "plots").exists()


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert compare([str(tmp_path)]) == 2
    assert "no metrics.json under" in capsys.readouterr().err


def test_gradient_flow_curves_of_a_task_are_overlaid(tmp_path):
    """Runs trained with +diagnostics=gradients get one picture per task: one curve per run."""
    from src.diagnostics.report import FLOW_COLUMNS, write_csv

    acc = dict(dataset="adding", task="regress", monitor="val/loss", monitor_mode="min")
    for cell, decay in (("rnn", 0.5), ("lstm", 0.98)):
        run = make_run(
            tmp_path, cell, ["dataset=adding", f"cell={cell}"], cell=cell, seed=1, **acc, **{"test/loss": 0.1}
        )
        rows = [
            {"epochs_done": 1, "step": 10, "layer": 0, "direction": 0, "t": t, "grad_h": decay ** (9 - t), "grad_c": ""}
            for t in range(10)
        ]
        write_csv(run / "diagnostics" / "gradient_flow.csv", rows, FLOW_COLUMNS)
    make_run(tmp_path, "gru", ["dataset=adding", "cell=gru"], cell="gru", seed=1, **acc, **{"test/loss": 0.2})
    assert compare([str(tmp_path)]) == 0
    png = tmp_path / "plots" / "adding_gradient_flow.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_damaged_records_are_skipped_with_their_file_named_and_listed(tmp_path, capsys):
    from src.compare.report import main as compare

    good = tmp_path / "good"
    good.mkdir()
    (good / "metrics.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "dataset": "digits",
                "cell": "gru",
                "depth": 1,
                "direction": "uni",
                "truncation": "none",
                "seed": 1,
                "monitor": "val/acc",
                "monitor_mode": "max",
                "test/acc": 0.9,
            }
        )
    )
    for name, text in (
        ("list", "[1, 2]"),
        ("string", json.dumps({"status": "ok", "monitor": "val/acc", "test/acc": "0.9"})),
        ("junk", "{not json"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(text)
    (good / ".hydra").mkdir()
    (good / ".hydra" / "overrides.yaml").write_text("{unclosed: [")
    assert compare([str(tmp_path), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 3 and "holds a list" in err and "'test/acc' holds '0.9'" in err
    board = (tmp_path / "leaderboard.md").read_text()
    assert "## Unreadable records (skipped)" in board and "**0.9** ★" in board


# -- issue 19 §2: baselines, absent metrics, plots, settings, the cross-task summary, the HTML dashboard ---------

ADDING = dict(dataset="adding", task="regress", monitor="val/loss", monitor_mode="min")


def adding_run(
    root: Path,
    name: str,
    cell: str,
    seed: int,
    loss: float,
    overrides: list[str] = (),
    curve: list[float] = (),
    baseline: float = 0.1667,
) -> Path:
    """A regress run as src.train records it: test/loss = test/mse, the baseline logged as test/baseline_mse."""
    return make_run(
        root,
        name,
        ["dataset=adding", f"cell={cell}", f"seed={seed}", *overrides],
        curve,
        cell=cell,
        seed=seed,
        **ADDING,
        **{
            "test/loss": loss,
            "test/mse": loss,
            "test/mae": loss * 2,
            "test/baseline_mse": baseline,
            "test/baseline_mae": 0.33,
        },
    )


def board_rows(board: str, heading: str) -> list[str]:
    part = board.split(heading)[1].split("\n## ")[0]
    return [line for line in part.splitlines() if line.startswith("| ")][1:]  # (less the header)


def test_baseline_is_a_row_and_a_row_at_it_is_marked_and_gets_no_star(tmp_path):
    for seed, (rnn, lstm) in enumerate(((0.1665, 0.02), (0.1663, 0.03)), 1):
        adding_run(tmp_path, f"rnn{seed}", "rnn", seed, rnn)  # a tanh RNN that learned nothing: at the baseline
        adding_run(tmp_path, f"lstm{seed}", "lstm", seed, lstm)
    assert compare([str(tmp_path), "--no-plots"]) == 0
    rows = board_rows((tmp_path / "leaderboard.md").read_text(), "## adding (regress): test/loss, lower is better")
    assert [row.split(" | ")[0] for row in rows] == ["| lstm", "| *baseline*", "| rnn"]
    assert "**0.025 ± 0.0071** ★" in rows[0] and "| yes |" in rows[0]
    assert "*0.1667*" in rows[1]  # regress's loss is its mse: the baseline of test/mse
    assert "★" not in rows[2] and "| **no** |" in rows[2]
    lines = {r["cell"]: r for r in csv.DictReader(open(tmp_path / "leaderboard.csv"))}
    assert lines["rnn"]["beats_baseline"] == "False" and lines["lstm"]["best"] == "True"
    assert float(lines["rnn"]["baseline"]) == pytest.approx(0.1667)

    # When no row beats the baseline (the RNN better by 0.2%: within the 1% margin), nobody gets the star.
    for run in ("lstm1", "lstm2"):
        shutil.rmtree(tmp_path / run)
    assert compare([str(tmp_path), "--no-plots"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert "★" not in board.split("## Across tasks")[0].split("## adding")[1] and "| **no** |" in board


def test_a_metric_the_task_does_not_record_is_absent_not_failed(tmp_path, capsys):
    acc = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max")
    make_run(
        tmp_path, "gru", ["dataset=digits", "cell=gru"], cell="gru", seed=1, **acc, **{"test/acc": 0.9, "test/f1": 0.8}
    )
    adding_run(tmp_path, "rnn", "rnn", 1, 0.1)
    adding_run(tmp_path, "lstm", "lstm", 1, float("nan"))  # recorded, but not a number: not "absent" either
    assert compare([str(tmp_path), "--metric", "test/mae", "--no-plots", "--html"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    digits = board.split("## digits (classify): test/mae not recorded")[1].split("\n## ")[0]
    assert "not recorded for this task" in digits and "test/acc, test/f1" in digits
    assert "failed" not in digits and "0 seeds" not in digits and "| gru |" not in digits
    assert "## adding (regress): test/mae, lower is better" in board and "**0.2** ★" in board
    assert "| lstm | 1 | uni | none | not a number |" in board
    assert "not recorded for this task" in (tmp_path / "dashboard.html").read_text()


def test_setting_column_shows_the_values_that_differ(tmp_path):
    for hidden, lr in ((32, "0.01"), (64, "0.01"), (32, "0.0010789816")):
        adding_run(
            tmp_path,
            f"h{hidden}-{lr}",
            "gru",
            1,
            0.05,
            [f"cell.hidden_size={hidden}", f"optimizer.lr={lr}", "cell.variant=V", "trainer.max_epochs=3"],
        )
    assert compare([str(tmp_path), "--no-plots"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    for shown in ("| hidden 32, lr 0.01 |", "| hidden 64, lr 0.01 |", "| hidden 32, lr 0.00108 |"):
        assert shown in board, shown
    assert "optimizer.lr=" not in board and "variant" not in board  # the same in every run: not a setting
    lines = list(csv.DictReader(open(tmp_path / "leaderboard.csv")))
    assert {r["setting"] for r in lines} == {"hidden 32, lr 0.01", "hidden 64, lr 0.01", "hidden 32, lr 0.00108"}
    assert "cell.hidden_size=64 optimizer.lr=0.01" in {r["overrides"] for r in lines}  # the raw ones too

    from src.records.identity import setting_names

    assert setting_names(["cell.variant", "dataset.variant", "optimizer.lr"]) == {
        "cell.variant": "cell.variant",
        "dataset.variant": "dataset.variant",
        "optimizer.lr": "lr",
    }


def test_cross_task_summary_mean_rank_and_wins(tmp_path):
    acc = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max")
    for cell, value in (("gru", 0.9), ("lstm", 0.95), ("rnn", 0.5)):
        make_run(
            tmp_path, f"d-{cell}", ["dataset=digits", f"cell={cell}"], cell=cell, seed=1, **acc, **{"test/acc": value}
        )
    for cell, loss in (("gru", 0.01), ("lstm", 0.05), ("rnn", 0.1666)):
        adding_run(tmp_path, f"a-{cell}", cell, 1, loss)
    make_run(
        tmp_path,
        "a-gru2",
        ["dataset=adding", "cell=gru", "depth=2"],
        cell="gru",
        seed=1,
        depth=2,
        **ADDING,
        **{"test/loss": 0.02, "test/baseline_mse": 0.1667, "test/mse": 0.02},
    )  # its 2nd row
    assert compare([str(tmp_path), "--no-plots"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    summary = board.split("## Across tasks")[1]
    rows = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    assert rows == [
        "| gru | 2 | 1.50 | 1 | 1 of 1 |",
        "| lstm | 2 | 1.50 | 1 | 1 of 1 |",
        "| rnn | 2 | 3.00 | 0 | 0 of 1 |",
    ]


def test_plots_share_colours_bands_over_seeds_train_loss_and_error_bars_above_zero(tmp_path):
    from src.compare.html_dashboard import bars_figure, curves_figure
    from src.compare.leaderboard import build_sections, error_bars, find_runs, row_curves

    for seed, value in ((1, 0.01), (2, 0.19)):  # mean 0.1, std 0.13: mean - std < 0
        adding_run(tmp_path, f"gru{seed}", "gru", seed, value, curve=[0.3, 0.2 - 0.05 * seed])
        adding_run(tmp_path, f"lstm{seed}", "lstm", seed, 0.12, curve=[0.4, 0.3])
    [section] = build_sections(find_runs([tmp_path]))
    gru = next(r for r in section.rows if r.arch[0] == "gru")
    assert len({row.colour for row in section.rows}) == 2
    below, above = error_bars(section, section.ranked_rows())
    assert below[0] == pytest.approx(0.1) and above[0] == pytest.approx(0.127, abs=1e-3)  # cut at 0

    curves = row_curves(gru, ("train/loss", "val/loss"))
    assert curves["val/loss"].steps == [9, 19] and curves["val/loss"].seeds == 2
    assert curves["val/loss"].mean == pytest.approx([0.3, 0.125]) and curves["val/loss"].std[1] > 0
    assert curves["train/loss"].steps == [9, 19] and curves["train/loss"].mean[0] == pytest.approx(1.0)

    rid = "adding-" + str(section.rows.index(gru))
    bars, lines = bars_figure(section), curves_figure(section)
    colours = {t["marker"]["color"] for t in bars["data"] if t["meta"] == rid}
    colours |= {t["line"]["color"] for t in lines["data"] if t["meta"] == rid}
    assert colours == {gru.colour}
    assert {t["yaxis"] for t in lines["data"] if t["meta"] == rid} == {"y", "y2"}  # train loss and val/loss
    assert any(t.get("fill") == "toself" for t in lines["data"] if t["meta"] == rid)  # the std band
    assert sum(t["showlegend"] for t in lines["data"] if t["meta"] == rid) == 1  # one legend entry per row
    band = next(t for t in lines["data"] if t["meta"] == rid and t.get("fill") and t["yaxis"] == "y2")
    assert min(band["y"]) >= 0
    bar = next(t for t in bars["data"] if t["meta"] == rid)
    assert bar["error_x"]["arrayminus"][0] == pytest.approx(0.1)
    assert bars["layout"]["shapes"][0]["x0"] == pytest.approx(0.1667)  # the baseline line

    assert compare([str(tmp_path)]) == 0
    for name in ("adding_bars", "adding_curves"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_help_imports_no_plotting_library_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\nfrom src.compare.report import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n    except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'matplotlib', 'plotly', 'playwright') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_browser_missing_is_a_clear_error_not_a_skip(monkeypatch, tmp_path):
    from src.compare.browser import BrowserMissing, find_chromium

    monkeypatch.setenv("RNN_BENCH_CHROMIUM", str(tmp_path / "nowhere"))
    with pytest.raises(BrowserMissing, match="not an executable"):
        find_chromium()
    monkeypatch.delenv("RNN_BENCH_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserMissing, match="apt-get install -y chromium"):
        find_chromium()


def test_html_dashboard_opens_offline_in_headless_chromium(sweep, tmp_path):
    """The dashboard in a real browser (Debian's chromium via Playwright): no console errors, no network, the
    tables hold the runs, the charts render, sorting and filtering work. Without chromium this fails with how to
    install it (it never skips). python -m src.compare.browser ... --screenshot docs/dashboard.png is the same check."""
    from src.compare.browser import check, inspect, open_page

    for seed, loss in ((1, 0.1665), (2, 0.1664)):
        adding_run(sweep, f"adding-rnn{seed}", "rnn", seed, loss, curve=[0.2, 0.17])
        adding_run(sweep, f"adding-lstm{seed}", "lstm", seed, 0.01 * seed, curve=[0.2, 0.05])
    page_path = tmp_path / "out" / "board.html"
    assert compare([str(sweep), "--no-plots", "--html", str(page_path), "--out", str(tmp_path / "out")]) == 0
    from plotly.offline import get_plotlyjs

    text = page_path.read_text()
    assert get_plotlyjs() in text  # plotly.js inlined, and nothing else loaded from anywhere:
    rest = text.replace(get_plotlyjs(), "")
    assert "Plotly.newPlot" in rest and not re.search(r"\bsrc=|href=\"(?!data:)|https?://", rest)

    shot = tmp_path / "dashboard.png"
    report = check(page_path, screenshot=shot)
    assert report.errors == [] and report.requests == []
    # digits 5 rows, lm_kjv 2, adding 2 (+ its baseline row); the summary: gru, lstm, lstm_variant, rnn
    assert (report.rows, report.baseline_rows) == (9 + 4, 1)
    assert report.charts == 5  # bars for 3 tasks, curves for digits and adding (lm_kjv has no CSV log)
    assert report.bars == 8 and report.lines >= 4
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    with open_page(page_path) as (page, log):
        digits = page.locator('section[data-task="digits"] table.board')
        cells = lambda: digits.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert cells()[:2] == ["lstm", "gru"]
        digits.locator("th", has_text="test/acc").click()  # ascending: the worst first, the failed row last
        assert cells()[0] == "lstm_variant" and cells()[-1] == "rnn"
        page.select_option("#f-cell", "gru")
        visible = page.locator("table.board tr.run:visible")
        assert visible.count() == 2 and page.locator("table.board tr.baseline:visible").count() == 1  # digits, lm
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('#chart-digits-bars .barlayer .point'))
                                        .length""")
        assert shown == 1  # the chart follows the filter
        page.select_option("#f-cell", "")
        page.fill("#f-setting", "variant NIG")
        assert visible.count() == 1 and "NIG" in visible.inner_text()
        page.fill("#f-setting", "")
        page.select_option("#f-task", "adding")
        assert page.locator("section.task:visible").count() == 1 and visible.count() == 2
        assert page.inner_text("#f-count") == "2 of 9 rows"
        assert inspect(page)["charts"] == 5 and log.errors == [] and log.requests == []


def test_the_browser_check_catches_console_errors_and_network_requests(tmp_path):
    """What the dashboard test relies on: a page that logs an error or reaches for the network is caught."""
    from src.compare.browser import check

    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="http://example.invalid/x.png"><script>console.error("boom");'
        "window.dashboardReady = true;</script></body></html>"
    )
    report = check(page)
    assert report.requests == ["http://example.invalid/x.png"]
    assert any("boom" in e for e in report.errors)


def test_ci_installs_chromium_before_the_tests():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    install = "command -v chromium || (apt-get update && apt-get install -y chromium)"
    assert install in script and script.index(install) < script.index("\nmake test")


# -- --significance: each row against a reference row across seeds (scipy's Welch t / Mann-Whitney U) --------------


def test_welch_p_value_and_holm_on_fixed_numbers():
    from src.compare.significance import holm, p_value

    a, b = [0.80, 0.90, 0.85, 0.86, 0.87], [0.81, 0.84, 0.83, 0.80, 0.82]
    # Welch by hand: t = (mean a - mean b) / sqrt(var a / n + var b / n) = 0.036 / sqrt((0.00133 + 0.00025) / 5)
    # = 2.0252, Welch-Satterthwaite df = 5.4524; two-sided p = 2 x the t distribution's tail at t = 0.0940.
    assert p_value(a, b, "welch") == pytest.approx(0.0940, abs=1e-4)
    assert p_value(a, [x - 0.3 for x in b], "welch") < 1e-5
    # Mann-Whitney U with 5 against 5 and no overlap: the smallest two-sided exact p, 2 / C(10, 5) = 0.00794.
    assert p_value(a, [x - 0.3 for x in b], "mannwhitney") == pytest.approx(2 / 252)
    assert p_value(a, [0.5], "welch") is None  # one seed: no variance to test
    assert p_value([1.0, 1.0], [1.0, 1.0], "welch") is None  # both constant: Welch's t is undefined
    # Holm: the sorted p times (m - k), kept non-decreasing; None is not a comparison.
    adjusted = holm([0.01, 0.04, 0.03, None])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[3] is None
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


@pytest.fixture
def odyssey(tmp_path) -> Path:
    acc = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max", cell="lstm_variant")
    values = {
        "V": [0.90, 0.91, 0.92, 0.90, 0.91],
        "CIFG": [0.91, 0.90, 0.92, 0.91, 0.90],  # the same as V within noise
        "NFG": [0.60, 0.65, 0.62, 0.58, 0.61],  # far below
        "NP": [0.93, 0.94, 0.95, 0.93, 0.94],  # above V: the test must say better, not worse
    }
    for variant, accs in values.items():
        for seed, value in enumerate(accs, 1):
            make_run(
                tmp_path,
                f"{variant}{seed}",
                ["dataset=digits", "cell=lstm_variant", f"cell.variant={variant}", f"seed={seed}"],
                seed=seed,
                **acc,
                **{"test/acc": value},
            )
    only_v = dict(dataset="smnist5k", task="classify", monitor="val/acc", monitor_mode="max", cell="lstm_variant")
    for seed in (1, 2):  # a task where only V has run so far: its row has no varying setting, yet is the reference
        make_run(
            tmp_path,
            f"smnist_V{seed}",
            ["dataset=smnist5k", "cell=lstm_variant", "cell.variant=V", f"seed={seed}"],
            seed=seed,
            **only_v,
            **{"test/acc": 0.8 + seed / 100},
        )
    ppl = dict(dataset="lm_kjv", task="lm", monitor="val/ppl", monitor_mode="min", cell="gru")
    for seed in (1, 2):  # a task without the reference row
        make_run(
            tmp_path,
            f"lm{seed}",
            ["dataset=lm_kjv", "cell=gru", f"seed={seed}"],
            seed=seed,
            **ppl,
            **{"test/ppl": 100.0 + seed},
        )
    return tmp_path


def significance_rows(board: str, task: str) -> dict[str, str]:
    part = board.split(f"### {task}:")[1].split("###")[0].split("## ")[0]
    lines = [line for line in part.splitlines() if line.startswith("| ")][1:]
    return {line.split("|")[1].strip(): line for line in lines}


@pytest.mark.parametrize("test", ["welch", "mannwhitney"])
def test_significance_against_the_vanilla_variant(odyssey, test):
    assert compare([str(odyssey), "--no-plots", "--significance", "cell.variant=V", "--test", test]) == 0
    board = (odyssey / "leaderboard.md").read_text()
    assert "## Significance against cell.variant=V" in board
    rows = significance_rows(board, "digits")
    assert set(rows) == {f"lstm_variant-d1-uni-none variant {v}" for v in ("CIFG", "NFG", "NP")}
    verdict = {name.rsplit(" ", 1)[1]: line.rstrip(" |").rsplit("|", 1)[1].strip() for name, line in rows.items()}
    assert verdict["CIFG"] == "no significant difference"
    assert verdict == {"CIFG": "no significant difference", "NFG": "**worse**", "NP": "**better**"}
    assert "no row match cell.variant=V: no test" in board.split("### lm_kjv:")[1]
    smnist = board.split("### smnist5k:")[1].split("###")[0]
    assert "Reference: lstm_variant-d1-uni-none, 0.815 ± 0.0071 over 2 seeds." in smnist and "(no other row)" in smnist


def test_significance_holm_correction_and_bad_alpha(odyssey, capsys):
    # NP against V: Welch p = 0.00047, Holm over the 3 comparisons 0.00094; at alpha 0.0008 only the uncorrected
    # test calls it better.
    for correction, expected in (("holm", "no significant difference"), ("none", "**better**")):
        argv = [str(odyssey), "--no-plots", "--significance", "cell.variant=V", "--alpha", "0.0008"]
        assert compare([*argv, "--correction", correction]) == 0
        board = (odyssey / "leaderboard.md").read_text()
        line = significance_rows(board, "digits")["lstm_variant-d1-uni-none variant NP"]
        assert line.rstrip(" |").rsplit("|", 1)[1].strip() == expected
        assert ("p (Holm)" in board) == (correction == "holm")
    assert compare([str(odyssey), "--significance", "cell.variant=V", "--alpha", "5"]) == 2
    assert "--alpha 5.0 is not a level between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("tested", [True, False], ids=["test-metric", "test=false"])
def test_the_wrote_line_names_plots_only_where_a_plot_was_written(tmp_path, capsys, tested):
    """Runs trained with test=false have no test metric: the leaderboard says so, and the command does not claim a
    plots/ dir it never wrote."""
    for seed in (1, 2):
        make_grid_run(tmp_path, "gru", "0.01", seed, val_acc_best=0.8, **({"test/acc": 0.8} if tested else {}))
    assert compare([str(tmp_path)]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 1 and str(tmp_path / "leaderboard.md") in wrote[0]
    assert ("plots/" in wrote[0]) == tested == (tmp_path / "plots").is_dir()
