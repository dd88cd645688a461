"""Seeds stacked in one process (src/runs/seeds.py, src/updates/stacked.py, src/models/stacking.py): each member's
parameters after three updates equal the single run with its seed, whatever the cell, clipping and truncation;
a diverging member changes nothing of the others."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from src.common.errors import ConfigError
from src.compare.report import build_sections, find_runs
from src.runs.build import build
from src.runs.seeds import build_stacked, check_seeds, train_seeds
from src.train import train
from src.updates.stacked import NotStackable
from tests.conftest import run_cli

SEEDS = [1, 2, 3]
# digits: 8 steps, classification (one target, at the end); sin2cos: a target at every step, so truncation
# runs several updates per batch.
DATA = {
    "none": ["dataset=digits", "dataset.batch_size=16"],
    "tbptt": ["dataset=sin2cos", "dataset.length=3000", "dataset.bptt=12", "truncation=tbptt", "truncation.steps=4"],
}


def settings(cell: str, truncation: str, clip: bool) -> list[str]:
    return [
        f"cell={cell}",
        "cell.hidden_size=8",
        *DATA[truncation],
        "trainer.max_steps=3",
        "trainer.limit_val_batches=0",
        "test=false",
        "optimizer.lr=0.05",  # large steps: differences between members' updates show
        *(["update.gradient_clip_val=0.05"] if clip else []),
    ]


def single_run(cfg_factory, overrides: list[str], seed: int) -> dict[str, torch.Tensor]:
    datamodule, model, trainer = build(cfg_factory(*overrides, f"seed={seed}"))
    trainer.fit(model, datamodule=datamodule)
    return model.state_dict()


# mingru's paper block without its GELU MLP here: with the MLP, under tbptt, Adam's normalised step carries the
# float32 rounding of the batched matmuls into the weights (1.5e-5 after three updates; with SGD, or under full
# BPTT, the members equal their single runs to 1e-8): test_the_min_cells_block_mlp_under_truncation below.
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("truncation", ["none", "tbptt"])
@pytest.mark.parametrize("cell", ["lstm", "peephole_lstm", "mingru"])
def test_each_member_equals_its_single_run_after_three_updates(cfg_factory, cell, truncation, clip):
    overrides = settings(cell, truncation, clip) + (["cell.mlp_factor=0"] if cell == "mingru" else [])
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3  # optimizer updates (under truncation: 3 windows of 4 steps of one batch)
    assert host.update.diverged() == {}
    for s, seed in enumerate(SEEDS):
        single = single_run(cfg_factory, overrides, seed)
        member = host.members.state_dict(s)
        for name, value in member.items():
            torch.testing.assert_close(value, single[name], rtol=0, atol=1e-5, msg=f"seed {seed}: {name}")
    # and the members did train apart: different seeds, different parameters
    first, second = host.members.state_dict(0), host.members.state_dict(1)
    assert any(not torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("truncation", ["none", "tbptt"])
def test_the_min_cells_block_mlp_under_truncation(cfg_factory, truncation):
    """mingru's whole default block (its GELU MLP included), with SGD: no optimizer normalisation to amplify
    rounding, so each member equals its single run to 1e-5."""
    overrides = settings("mingru", truncation, False) + ["optimizer=sgd"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    for s, seed in enumerate(SEEDS):
        single = single_run(cfg_factory, overrides, seed)
        for name, value in host.members.state_dict(s).items():
            torch.testing.assert_close(value, single[name], rtol=0, atol=1e-5, msg=f"seed {seed}: {name}")


class Poison(L.Callback):
    """After the first update, member 1's parameters become NaN: its next loss is NaN."""

    def on_train_batch_end(self, trainer, host, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            with torch.no_grad():
                for p in host.members.params.values():
                    p[1].fill_(float("nan"))


@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
def test_a_diverging_member_is_frozen_and_changes_nothing_of_the_others(cfg_factory, clip):
    overrides = settings("peephole_lstm", "none", clip)
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.callbacks.append(Poison())
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3
    assert host.update.diverged() == {1: 1}  # member 1 (seed 2), at its second update
    frozen = host.members.state_dict(1)
    assert all(torch.isnan(v).all() for k, v in frozen.items() if k in host.members.params)  # not moved since
    for s in (0, 2):
        single = single_run(cfg_factory, overrides, SEEDS[s])
        for name, value in host.members.state_dict(s).items():
            torch.testing.assert_close(value, single[name], rtol=0, atol=1e-5, msg=f"seed {SEEDS[s]}: {name}")


def test_all_members_diverged_stops_the_run(cfg_factory):
    from src.runs.callbacks import FiniteLoss, TrainingDiverged

    data, host, trainer = build_stacked(cfg_factory(*settings("mingru", "none", False)), SEEDS)
    with torch.no_grad():
        for p in host.members.params.values():
            p.fill_(float("nan"))
    trainer.callbacks.append(FiniteLoss(every=1))
    with pytest.raises(TrainingDiverged):
        trainer.fit(host, datamodule=data)
    assert host.update.diverged() == {0: 0, 1: 0, 2: 0}


def test_seeds_from_the_command_line_leave_ordinary_runs(tmp_path):
    """`seeds=[1,2]` -> two run dirs that src.compare reads as two seeds of one row, and each member's best
    checkpoint, evaluated alone as a single run (train=false), scores what the stacked test pass recorded."""
    common = ["dataset=digits", "cell=gru", "cell.hidden_size=8", "debug=limit", "logger=csv"]
    job = tmp_path / "job"
    done = run_cli("seeds=[1,2]", *common, f"hydra.run.dir={job}", "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-2000:]
    records = {s: json.loads((job / f"seed={s}" / "metrics.json").read_text()) for s in (1, 2)}
    for s, record in records.items():
        assert record["status"] == "ok" and record["seed"] == s and record["update"] == "stacked(S=2, full)"
        assert (job / f"seed={s}" / "checkpoints" / "last.ckpt").is_file()
        assert f"seed={s}" in (job / f"seed={s}" / ".hydra" / "overrides.yaml").read_text()
    assert records[1]["config_hash"] != records[2]["config_hash"]
    sections = build_sections(find_runs([job]))
    assert [len(row.runs) for row in sections[0].rows] == [2]  # one row, two seeds
    alone = tmp_path / "alone"
    best = job / "seed=2" / "checkpoints" / "best.ckpt"
    done = run_cli("seed=2", *common, f"hydra.run.dir={alone}", "train=false", f"ckpt_path='{best}'")
    assert done.returncode == 0, done.stderr[-2000:]
    single = json.loads((alone / "metrics.json").read_text())
    assert single["test/loss"] == pytest.approx(records[2]["test/loss"], abs=1e-6)


@pytest.mark.parametrize(
    "seeds, match", [(5, "non-empty list"), ([], "non-empty list"), ([1, 1], "twice"), ([1, "a"], "integer")]
)
def test_bad_seeds_are_refused(seeds, match):
    with pytest.raises(ConfigError, match=match):
        check_seeds(seeds)


def test_a_plateau_schedule_is_not_stacked(cfg_factory):
    with pytest.raises(NotStackable, match="scheduler=plateau"):
        build_stacked(cfg_factory(*settings("mingru", "none", False), "scheduler=plateau"), SEEDS)


def test_members_that_cannot_stack_exactly_train_one_after_another(cfg_factory, tmp_path):
    """Dropout draws other masks stacked than in the single runs: the seeds then run as their single runs."""
    cfg = cfg_factory(*settings("gru", "none", False), "depth=2", "stack.dropout=0.2", "seeds=[1,2]")
    records = train_seeds(cfg, single=train)
    assert [r["seed"] for r in records] == [1, 2] and all(r["status"] == "ok" for r in records)
    assert all("dropout" in r["stacked"]["not_stacked"] for r in records)
    assert all(r["update"] == "automatic" for r in records)  # each its own ordinary run
    assert (tmp_path / "seed=2" / "metrics.json").is_file()


def test_a_sweep_packs_seeds_into_one_job_and_a_rerun_skips_it(tmp_path):
    """sweep=quick runs seeds=[1,2] as one job; src.compare still counts two seeds; run again, it is skipped."""
    args = ["-m", "sweep=quick", "dataset=digits", "cell=gru", f"hydra.sweep.dir={tmp_path}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    records = sorted(tmp_path.rglob("metrics.json"))
    assert [p.parent.name for p in records] == ["seed=1", "seed=2"]
    assert records[0].parent.parent == records[1].parent.parent  # one job
    assert all(json.loads(p.read_text())["update"].startswith("stacked(S=2") for p in records)
    assert [len(row.runs) for row in build_sections(find_runs([tmp_path]))[0].rows] == [2]
    again = run_cli(*args)
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr


def test_update_stacked_config_sets_the_members_clipping(cfg_factory):
    """conf/update/stacked.yaml: update.gradient_clip_val is what each member's gradient is clipped to."""
    cfg = cfg_factory(*settings("mingru", "tbptt", False), "update=stacked", "update.gradient_clip_val=0.25")
    _, host, _ = build_stacked(cfg, [1, 2])
    assert host.update.gradient_clip_val == 0.25 and host.update.truncation.steps == 4
    assert host.update.describe() == "stacked(S=2, truncated(k2=4, k1=4))"


def test_a_seed_given_on_the_command_line_wins_over_the_sweeps_seeds(tmp_path):
    """`make sweep SWEEP=quick ARGS="seed=3"`: the sweep config's seeds=[1,2] gives way, one single run."""
    args = ["-m", "sweep=quick", "dataset=digits", "cell=gru", "seed=3", f"hydra.sweep.dir={tmp_path}"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    assert [(r["seed"], r["update"]) for r in records] == [(3, "automatic")]
