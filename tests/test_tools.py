"""The tools researchers already use, read back as they would read them: TensorBoard's HParams tab and curves, a
persisted Optuna study, the W&B report's dry run, `--help`, and the package installed with pip."""

from __future__ import annotations

import json

from conftest import run_cli
from test_compare import sweep  # noqa: F401 (the comparison tests' finished runs, a fixture)

from src.compare import leaderboard
from src.records.events import hparams, scalars

# -- TensorBoard ----------------------------------------------------------------------------------------------------


def test_tensorboard_hparams_of_a_multirun_hold_each_runs_settings_and_final_metrics(tmp_path):
    runs_dir = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "dataset=digits",
        "debug=limit",
        "logger=tensorboard",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "cell.hidden_size=8,16",
        f"hydra.sweep.dir={runs_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "logging interval" not in done.stderr  # Lightning's warning, wrong once the interval follows the epoch
    runs = sorted(p for p in runs_dir.iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 2
    seen = {}
    for run in runs:
        record = json.loads((run / "metrics.json").read_text())
        found = hparams(run / "tensorboard")
        sizes = {v for k, v in found["hparams"].items() if k.endswith("hidden_size")}
        assert len(sizes) == 1, found["hparams"]
        seen[sizes.pop()] = found
        # the final metrics beside the settings: the best monitored value and the test metrics, as metrics.json
        assert set(found["metrics"]) >= {"val/acc_best", "test/acc", "test/loss"}
        for name in ("val/acc_best", "test/acc"):
            assert abs(found["metrics"][name] - record[name]) < 1e-6, name
        assert found["hparams"]["run/dataset"] == "digits" and found["hparams"]["params"] == record["params"]
    assert set(seen) == {8, 16}

    # logger=tensorboard alone: the comparison's curves come from the event files
    run = leaderboard.find_runs([runs_dir])[0]
    curves = leaderboard.read_curves(run, ["val/acc", "train/loss"])
    assert len(curves["val/acc"]) == 2  # an epoch each
    # 4 batches an epoch (debug=limit), fewer than trainer.log_every_n_steps=20: still logged once per epoch
    assert sorted(curves["train/loss"]) == [3, 7]
    assert curves["val/acc"] == scalars(run.dir / "tensorboard", ["val/acc"])["val/acc"]


# -- Optuna ---------------------------------------------------------------------------------------------------------


def test_an_optuna_sweep_run_again_extends_its_persisted_study(tmp_path):
    """sweep=optuna keeps its study in <sweep dir>/optuna.db: the same command with 2 more trials continues it
    (4 trials in one study), the new trials with parameters of their own (the seeded sampler would propose the
    first two again) in run dirs of their own."""
    import optuna

    runs_dir = tmp_path / "optuna"
    command = (
        "-m",
        "sweep=optuna",
        "dataset=digits",
        "cell=rnn",
        "debug=limit",
        "logger=csv",
        "callbacks=none",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={runs_dir}",
    )
    for _ in range(2):
        done = run_cli(*command)
        assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="digits-rnn", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # no trial proposed again
    runs = {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/metrics.json")}
    assert len(runs) == 4 and all(r["status"] == "ok" for r in runs.values())
    # each trial's value is the best monitored value of the run dir named by its parameters
    for trial in study.trials:
        [record] = [r for name, r in runs.items() if f"optimizer.lr={trial.params['optimizer.lr']}," in name]
        assert abs(trial.value - record["val/acc_best"]) < 1e-9


# -- the W&B report -------------------------------------------------------------------------------------------------


def test_the_wandb_report_dry_run_says_what_it_would_create_without_entity_or_extra(tmp_path, capsys):
    import sys

    import yaml

    from src.compare import wandb_dashboard

    for variant in ("NIG", "NFG"):
        for seed in (1, 2):
            run = tmp_path / f"{variant}-{seed}"
            (run / ".hydra").mkdir(parents=True)
            overrides = ["cell=lstm_variant", f"cell.variant={variant}", f"seed={seed}"]
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            record = {"status": "ok", "dataset": "digits", "task": "classify", "cell": "lstm_variant", "depth": 1}
            record |= {"direction": "uni", "truncation": "none", "seed": seed, "monitor": "val/acc"}
            record |= {"monitor_mode": "max", "test/acc": 0.5 + seed / 10}
            (run / "metrics.json").write_text(json.dumps(record))
    assert wandb_dashboard.main(["--dry-run", "--sweep", "quick", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "wandb_workspaces" not in sys.modules  # the dashboard extra is not needed for a dry run
    assert out.splitlines()[0] == (
        "Would create in the W&B project rnn-bench (of the --entity given when saving) (nothing is saved with "
        "--dry-run):"
    )
    assert "- a report 'rnn-bench comparison (quick)' with 1 panel grid(s), one per task" in out
    assert "of job type 'quick'" in out
    assert (
        "  - digits (classify): 4 local run(s) in 2 group(s), grouped by run.cell, run.depth, run.direction, "
        "run.truncation, run.cell_variant" in out
    )
    assert "    - bar chart 'test/acc (higher is better)': mean and std over the seeds of each group" in out
    assert "    - scatter plot 'test/acc by run.cell_variant'" in out
    assert (
        "a saved workspace view 'rnn-bench comparison (quick)'" in out and "section per task: digits: test/acc" in out
    )
    assert "<" not in out and "(" + "entity=" not in out  # words, not Python reprs

    # saving needs an entity: said in one line, exit 2, before anything is built
    assert wandb_dashboard.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: saving the report needs --entity <your W&B user or team> (--dry-run does not)"
    )


# -- --help ---------------------------------------------------------------------------------------------------------


def test_help_puts_the_first_commands_then_the_groups_and_fits_a_screen():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) <= 45, len(lines)  # Hydra's stock help with the whole config: 176
    first, groups = lines.index("== First commands =="), lines.index("== Config groups (group=option) ==")
    assert 0 < first < groups
    commands = lines[first + 1 : groups]
    assert sum(line.startswith("python -m src.") for line in commands) >= 8
    assert any("debug=limit" in line for line in commands) and any("sweep=quick" in line for line in commands)
    assert any(line.startswith("cell: ") and "mamba" in line for line in lines[groups:])
    assert any(line.startswith("dataset: ") and "smnist5k" in line for line in lines[groups:])
    assert "_target_" not in done.stdout  # the composed config is `--cfg job`, not --help


# -- the front door ---------------------------------------------------------------------------------------------------


def test_the_docs_home_lists_every_page_of_the_nav_and_the_readme_names_the_roster():
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = {page: title for entry in config["nav"] for title, page in entry.items()}
    home = (root / "docs" / "index.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| \[([^\]]+)\]\(([^)#]+)\) \|", home, re.M))
    listed = {page: title for title, page in listed.items()}
    assert set(listed) == set(nav) - {"index.md"}, set(nav) ^ set(listed)
    assert all(listed[page] == nav[page] for page in listed)  # named as the site's navigation names it
    readme = (root / "README.md").read_text(encoding="utf-8")
    opening = readme.split("\n\n")[2]  # after the title and the two commands
    for name in ("LSTM", "GRU", "minGRU", "minLSTM", "sLSTM", "mLSTM", "LRU", "RG-LRU", "Mamba", "attention", "memory"):
        assert name in opening, name


# -- pip install ------------------------------------------------------------------------------------------------------


def test_the_wheel_holds_the_configs_and_runs_from_any_directory(tmp_path):
    """`pip install .` (or `pip install "rnn-bench @ git+<repo url>"`) into an environment that has its own torch:
    the wheel carries conf/ inside the package and the Optuna sweeper plugin, not the tests, and the installed
    suite composes its configs from a directory that is not the checkout (no Makefile, no .venv)."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    for name in ("src", "conf", "hydra_plugins"):
        shutil.copytree(root / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("rnn_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(root).as_posix() for p in (root / "conf").rglob("*.yaml")}
    assert {f"src/{c}" for c in configs} <= names, sorted({f"src/{c}" for c in configs} - names)[:5]
    assert "hydra_plugins/rnn_bench/optuna_study.py" in names and "src/train.py" in names
    assert not any(n.startswith("tests/") for n in names)

    target = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = run_cli("--cfg", "job", "dataset=digits", "cell=gru", cwd=elsewhere, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "_target_: src.data.digits." in done.stdout and "_target_: src.models.cells." in done.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import src.common.paths as p; print(p.CONF_DIR, p.REPO_ROOT)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.split() == [str(target / "src" / "conf"), "None"]  # the installed copy, not the checkout


# -- the HTML dashboard's toolbar -------------------------------------------------------------------------------------

# Each chart's toolbar (Plotly's modebar, shown on hover) against its titles: the pairs whose boxes intersect.
OVERLAPS = """() => {
  const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const found = [];
  document.querySelectorAll('.chart.js-plotly-plot').forEach(chart => {
    const bar = chart.querySelector('.modebar');
    if (!bar) { found.push(chart.id + ': no toolbar'); return; }
    const box = bar.getBoundingClientRect();
    chart.querySelectorAll('.gtitle, .annotation-text').forEach(t => {
      if (hit(box, t.getBoundingClientRect())) found.push(chart.id + ': ' + t.textContent);
    });
  });
  return found;
}"""


def test_the_dashboard_toolbar_covers_no_chart_title(sweep, tmp_path):  # noqa: F811 (the fixture)
    from src.compare.browser import open_page
    from src.compare.report import main as compare

    page_path = tmp_path / "out" / "board.html"
    assert compare([str(sweep), "--no-plots", "--html", str(page_path), "--out", str(tmp_path / "out")]) == 0
    for width in (1400, 900):  # two charts side by side, and one above the other
        with open_page(page_path, width=width) as (page, log):
            for chart in page.query_selector_all(".chart.js-plotly-plot"):
                chart.hover()  # the toolbar appears on hover
            assert page.evaluate("document.querySelectorAll('.chart .gtitle').length") >= 2
            assert page.evaluate(OVERLAPS) == [], width
            assert not log.errors


def test_a_stacked_members_curves_come_from_its_runs_csv(tmp_path):
    """seeds=[1,2] logs both members in the run's csv/metrics.csv as seed=<s>/<metric>; each member's dir
    (seed=<s>/, with its metrics.json) has no CSV of its own, and its curves in the comparison are its columns."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,seed=1/train/loss,seed=2/train/loss,seed=1/val/acc,step,train/loss\n"
        "0,0.9,0.8,,19,0.85\n"
        "0,,,0.5,19,\n"
        "1,0.7,0.6,,39,0.65\n"
    )
    member = leaderboard.Run(dir=tmp_path / "seed=1", record={"status": "ok"})
    curves = leaderboard.read_curves(member, ["train/loss", "val/acc"])
    assert curves == {"train/loss": {19: 0.9, 39: 0.7}, "val/acc": {19: 0.5}}
    other = leaderboard.read_curves(leaderboard.Run(dir=tmp_path / "seed=2", record={}), ["train/loss"])
    assert other == {"train/loss": {19: 0.8, 39: 0.6}}


def test_the_docs_tables_never_break_a_command_or_name(tmp_path):
    """docs/stylesheets/extra.css: in the built site, no code span in a table of the Running experiments page (the
    widest) is broken over two lines at a laptop's width; without the stylesheet eight were."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from src.compare.browser import find_chromium

    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site)],
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    broken_spans = """() => [...document.querySelectorAll('.md-typeset table code')].map(
        c => [c.textContent, c.getClientRects().length])"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((site / "running" / "index.html").as_uri())
            spans = page.evaluate(broken_spans)
        finally:
            browser.close()
    assert len(spans) > 100
    assert [text for text, lines in spans if lines > 1] == []
