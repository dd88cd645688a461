"""python -m src.results: a page's tables run as Hydra multiruns and the page written from those runs alone. The tiny
page (conf/results/tiny.yaml: two cells, two learning rates, two seeds, a few batches of digits) end to end into
tmp dirs; a rerun skips the finished jobs and writes the same tables; the same page with its seeds stacked;
--dry-run's counts; a bad page name or page config stops with one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.results.page import load_page, page_names
from tests.conftest import CACHE, ROOT

TINY = ROOT / "conf" / "results" / "tiny.yaml"


def run_results(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNN_BENCH_CACHE": str(CACHE), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "src.results", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def table_rows(text: str, first: str) -> list[str]:
    """The markdown table lines of the table whose header row starts with `| first |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip("|").split(" | ")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    out, runs = base / "page", base / "runs"
    done = run_results("tiny", "--out", str(out), "--runs", str(runs))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, runs, done


def test_the_tiny_page_has_the_header_the_tuned_rows_and_the_cost(tiny):
    out, runs, done = tiny
    text = (out / "tiny.md").read_text()
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert f"**commit**: {sha} (" in text
    machine = re.search(r"\*\*machine\*\*: (.*)", text).group(1)
    assert "cores" in machine and "torch " in machine and "GPU:" in machine
    assert f"**command**: python -m src.results tiny --out {out} --runs {runs}" in text

    lines = text.splitlines()
    head = next(line for line in lines if line.startswith("| cell | setting |"))
    columns = cells(head)
    for needed in ("test/acc", "picked on validation", "beats baseline", "seeds", "budget", "ended", "params", "state"):
        assert needed in columns, needed
    rows = {cells(r)[0]: dict(zip(columns, cells(r))) for r in table_rows(text, "cell")}
    assert set(rows) == {"rnn", "gru", "*baseline*"}
    for cell in ("rnn", "gru"):
        row = rows[cell]
        assert re.fullmatch(r"lr 0\.0[13]", row["setting"])  # the picked grid point's lr
        assert re.search(r"lr 0\.0[13] \([12] of 2", row["picked on validation"])
        assert row["seeds"] == "2" and row["budget"] == "8 updates" and row["ended"]
        assert 1900 <= int(row["params"].replace(",", "")) <= 2100  # model.params=2000 within 3%
        assert int(row["state"].replace(",", "")) > 0
    assert rows["*baseline*"]["test/acc"].strip("*")  # the trivial predictor's value
    assert "★" in text and "Winning group (★): **" in text
    # the verdicts against the page before, row by row
    assert table_rows(text, "row")  # the tests against the reference
    was = {cells(r)[0]: cells(r) for r in table_rows(text, "row | before")}
    assert set(was) == {"gru", "rnn"} and {w[3] for w in was.values()} <= {"no", "**yes**"}
    cost = re.search(r"Cost: ([\d,]+) s .* of CPU time", text)
    assert cost and int(cost.group(1).replace(",", "")) > 0
    assert (out / "tiny" / "digits" / "plots" / "digits_bars.png").stat().st_size > 0
    assert "![Digits, two cells](tiny/digits/plots/digits_bars.png)" in text


def test_a_rerun_skips_the_finished_jobs_and_writes_the_same_tables(tiny):
    out, runs, _ = tiny
    first = (out / "tiny.md").read_text()
    done = run_results("tiny", "--out", str(out), "--runs", str(runs))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 ok, 0 failed (8 skipped: finished before)" in done.stdout
    costs = json.loads((runs / "digits" / ".results_cost.json").read_text())
    assert [c["skipped"] for c in costs] == [0, 8]
    second = (out / "tiny.md").read_text()
    assert table_rows(second, "cell") == table_rows(first, "cell")
    assert table_rows(second, "row") == table_rows(first, "row")
    assert "over 2 invocation(s)" in second


def test_stacked_seeds_give_the_same_rows_one_job_per_grid_point(tmp_path):
    page = yaml.safe_load(TINY.read_text())
    page["seeds_as"] = "stacked"
    config = tmp_path / "stacked.yaml"
    config.write_text(yaml.safe_dump(page))
    done = run_results(str(config), "--out", str(tmp_path / "page"), "--runs", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'seeds=[1,2]'" in done.stdout or "seeds=[1,2]" in (tmp_path / "page" / "stacked.md").read_text()
    text = (tmp_path / "page" / "stacked.md").read_text()
    rows = {cells(r)[0]: r for r in table_rows(text, "cell")}
    assert {"rnn", "gru"} <= set(rows)
    head = cells(next(line for line in text.splitlines() if line.startswith("| cell | setting |")))
    assert all(dict(zip(head, cells(rows[c])))["seeds"] == "2" for c in ("rnn", "gru"))
    # a stacked job's members share its wall time: counted once per job, not once per member
    members = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "digits").glob("*/seed=*/metrics.json")]
    assert len(members) == 8
    per_job = {m["stacked"]["dir"]: m["wall_s"] for m in members}
    shown = re.search(r"the runs' own wall_s summed over jobs: ([\d,]+) s", text).group(1)
    assert int(shown.replace(",", "")) == round(sum(per_job.values()))


def test_dry_run_prints_each_tables_command_and_counts():
    done = run_results("cpu", "--dry-run", "--runs", "/tmp/nowhere")
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^(\w+): (\d+ jobs, \d+ runs.*)$", done.stdout, flags=re.M))
    # 12 cells x 3 lr x 3 seeds, a job each, which the launcher packs into one stacked job per cell
    assert counts["selective_copy"] == "108 jobs, 108 runs (packed by the launcher into 12 stacked jobs)"
    assert counts["greff"] == "81 jobs, 81 runs (packed by the launcher into 9 stacked jobs)"  # 9 variants
    assert set(counts) == {"selective_copy", "mqar_easy", "mqar_hard", "parity", "smnist5k", "greff"}
    assert "page cpu: 6 tables, 621 jobs (69 stacked jobs), 621 runs (dry run: nothing ran)" in done.stdout
    assert "hydra.sweep.dir=/tmp/nowhere/mqar_hard" in done.stdout
    assert not Path("/tmp/nowhere").exists()
    tiny = run_results("tiny", "--dry-run")
    assert "digits: 8 jobs, 8 runs (packed by the launcher into 2 stacked jobs)" in tiny.stdout


def test_the_pack_count_follows_the_launchers_member_cap():
    """The page says how many stacked jobs the launcher makes: its max_members (32) by default, the page's own
    hydra.launcher.max_members where it sets one (9 members per cell: 2 packs of at most 5), none with pack=false."""
    page = load_page("cpu")
    table = page.tables[0]  # 12 cells x 3 lr x 3 seeds
    assert page.packs(table) == 12
    page.launcher = ["hydra.launcher.max_members=5"]
    assert page.packs(table) == 24
    page.launcher = ["hydra.launcher.pack=false"]
    assert page.packs(table) is None


@pytest.mark.parametrize(
    "change,message",
    [
        ({"tables": []}, "tables must be a non-empty list"),
        ({"seeds": "1,2"}, "seeds must be a list of integers"),
        ({"grid": None}, "grid is missing"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"seeds_as": "packed"}, "seeds_as='packed'"),
        ({"tables": [{"name": "t", "task": ["dataset=digits"], "size": 2000}]}, "tables[0] has no budget"),
        (
            {
                "tables": [
                    {
                        "name": "t",
                        "task": "dataset=digits",
                        "size": 2000,
                        "budget": "trainer.max_epochs=1",
                        "was": {"gru": "won"},
                    }
                ]
            },
            "was.gru='won'",
        ),
    ],
)
def test_a_bad_page_config_stops_with_one_line(tmp_path, change, message):
    page = {**yaml.safe_load(TINY.read_text()), **change}
    page = {k: v for k, v in page.items() if v is not None}
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(page))
    done = run_results(str(config), "--dry-run")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", page_names())
def test_every_page_in_conf_results_loads_and_its_tables_size_their_roster_by_parameters(name):
    page = load_page(name)
    assert page.tables and page.seeds and "optimizer.lr" in page.grid
    for table in page.tables:
        assert [s.split("=")[0] for s in table.size] == ["model.params"], table.name  # size-matched
        assert any(b.startswith("budget.updates=") for b in table.budget), table.name  # equal updates


def test_an_unknown_page_names_the_pages():
    done = run_results("nope")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no results page named 'nope'") and "cpu" in done.stderr
    assert "tiny" in done.stderr and done.stderr.count("\n") == 1
