"""Seeds stacked in one process (src/runs/seeds.py, src/updates/stacked.py, src/models/stacking.py): each member's
parameters after three updates equal its single run, whatever the cell (torch's fused LSTM, a custom LSTM, a min
cell, a modern one), clipping and truncation, also where the members differ in learning rate, clipping and weight
decay; a diverging member changes nothing of the others; nothing is patched on any instance."""

from __future__ import annotations

import copy
import csv
import json

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from torchmetrics import Metric

from src.common.errors import ConfigError
from src.compare.report import build_sections, find_runs
from src.runs.build import build
from src.runs.seeds import StackedTask, build_stacked, check_seeds, optimizer_state_per_weight, plan, train_seeds
from src.train import train
from tests.conftest import run_cli
from tests.test_no_patching import instance_callables

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


def assert_members_equal_single_runs(cfg_factory, host, overrides: list[str], members: list[list[str]]) -> None:
    for s, extra in enumerate(members):
        single = single_run(cfg_factory, [*overrides, *extra[1:]], int(extra[0].split("=")[1]))
        for name, value in host.tasks[s].state_dict().items():
            torch.testing.assert_close(
                value, single[name], rtol=0, atol=1e-5, msg=lambda m, at=f"{extra}: {name}": f"{at}: {m}"
            )


def train_equal_to_single_runs(cfg_factory, overrides: list[str], members: list[list[str]]) -> StackedTask:
    """One stacked job of `members` (each a seed=<s> and its own settings) trained 3 updates, each member then
    equal to its own single run."""
    configs = [cfg_factory(*overrides, *m) for m in members]
    data, host, trainer = build_stacked(configs[0], members=configs, names=[",".join(m) for m in members])
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3 and host.update.diverged() == {}
    assert_members_equal_single_runs(cfg_factory, host, overrides, members)
    return host


CELLS = {  # torch's fused LSTM, a custom LSTM-family cell, a min cell, a modern cell
    "lstm": [],
    "peephole_lstm": [],
    # mingru's paper block without its GELU MLP here: with the MLP, under tbptt, Adam's normalised step carries
    # the float32 rounding of the batched matmuls into the weights (1.5e-5 after three updates; with SGD, or under
    # full BPTT, the members equal their single runs to 1e-8): test_the_min_cells_block_mlp_under_truncation.
    "mingru": ["cell.mlp_factor=0"],
    "lru": [],
}


@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("truncation", ["none", "tbptt"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_each_member_equals_its_single_run_after_three_updates(cfg_factory, cell, truncation, clip):
    overrides = settings(cell, truncation, clip) + CELLS[cell]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3  # optimizer updates (under truncation: 3 windows of 4 steps of one batch)
    assert host.update.diverged() == {}
    assert_members_equal_single_runs(cfg_factory, host, overrides, [[f"seed={s}"] for s in SEEDS])
    # and the members did train apart: different seeds, different parameters
    first, second = host.tasks[0].state_dict(), host.tasks[1].state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("truncation", ["none", "tbptt"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_members_differing_in_learning_rate_clipping_and_weight_decay(cfg_factory, cell, truncation):
    """One job of members that differ in any setting that keeps the shapes: each equals its own single run."""
    overrides = settings(cell, truncation, False) + CELLS[cell]
    members = [
        ["seed=1", "optimizer.lr=0.05"],
        ["seed=1", "optimizer.lr=0.01", "update.gradient_clip_val=0.05"],
        ["seed=2", "optimizer.lr=0.02", "optimizer.weight_decay=0.1", "update.gradient_clip_val=0.01"],
        ["seed=2", "optimizer.lr=0.05", "update.gradient_clip_val=0.05", "update.gradient_clip_algorithm=value"],
    ]
    host = train_equal_to_single_runs(cfg_factory, overrides, members)
    lrs = [o.param_groups[0]["lr"] for o in host.optimizers(use_pl_optimizer=False).optimizers]
    assert lrs[0] != lrs[1]  # each member's own optimizer, with its own learning rate


def test_members_whose_own_update_groups_batches_train_the_jobs_batch_limit(cfg_factory):
    """A member whose single run groups its batches (update=auto on a GPU: 8 per Lightning step; here
    update=grouped) is still trained one batch per stacked step: the job keeps trainer.limit_train_batches and
    its logging interval in batches (its members' data modules once made the Trainer count in groups, so the
    limit was dropped and every epoch trained whole), and each member equals its single run."""
    overrides = [
        "cell=gru",
        "cell.hidden_size=8",
        *DATA["none"],
        "optimizer.lr=0.05",
        "update=grouped",
        "update.per_step=4",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.log_every_n_steps=2",
        "trainer.limit_val_batches=0",
        "test=false",
    ]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    assert trainer.limit_train_batches == 3 and trainer.log_every_n_steps == 2
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 6  # 2 epochs of 3 batches, one update each
    assert_members_equal_single_runs(cfg_factory, host, overrides, [[f"seed={s}"] for s in SEEDS])


def test_a_stacked_job_replaces_no_method_on_any_instance(cfg_factory):
    """The host, its Trainer and data, every member task, member data module and torch module keep the methods
    their classes give them through fit and test."""
    data, host, trainer = build_stacked(
        cfg_factory(*settings("lstm", "none", True), "trainer.limit_val_batches=1"), SEEDS
    )
    objects = {"host": host, "trainer": trainer, "data": data}
    objects |= {f"data {i}": dm for i, dm in enumerate(data.datamodules)}
    objects |= {f"module {name}": m for name, m in host.named_modules() if name and not isinstance(m, Metric)}
    before = {name: instance_callables(obj) for name, obj in objects.items()}
    trainer.fit(host, datamodule=data)
    trainer.test(host, datamodule=data)
    assert {name: instance_callables(obj) for name, obj in objects.items()} == before
    for name, obj in objects.items():
        shadowed = sorted(k for k in instance_callables(obj) if callable(getattr(type(obj), k, None)))
        assert not shadowed, f"{name}: {shadowed}"


@pytest.mark.parametrize("truncation", ["none", "tbptt"])
def test_the_min_cells_block_mlp_under_truncation(cfg_factory, truncation):
    """mingru's whole default block (its GELU MLP included), with SGD: no optimizer normalisation to amplify
    rounding, so each member equals its single run to 1e-5."""
    overrides = settings("mingru", truncation, False) + ["optimizer=sgd"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    assert_members_equal_single_runs(cfg_factory, host, overrides, [[f"seed={s}"] for s in SEEDS])


class Poison(L.Callback):
    """After the first update, member 1's parameters become NaN: its next loss is NaN."""

    def on_train_batch_end(self, trainer, host, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            with torch.no_grad():
                for p in host.tasks[1].parameters():
                    p.fill_(float("nan"))


@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
def test_a_diverging_member_is_frozen_and_changes_nothing_of_the_others(cfg_factory, clip):
    overrides = settings("peephole_lstm", "none", clip)
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.callbacks.append(Poison())
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3
    assert host.update.diverged() == {1: 1}  # member 1 (seed 2), at its second update
    assert all(torch.isnan(p).all() for p in host.tasks[1].parameters())  # not moved since
    for s in (0, 2):
        single = single_run(cfg_factory, overrides, SEEDS[s])
        for name, value in host.tasks[s].state_dict().items():
            torch.testing.assert_close(value, single[name], rtol=0, atol=1e-5, msg=f"seed {SEEDS[s]}: {name}")


def test_all_members_diverged_stops_the_run(cfg_factory):
    from src.runs.callbacks import FiniteLoss, TrainingDiverged

    data, host, trainer = build_stacked(cfg_factory(*settings("mingru", "none", False)), SEEDS)
    with torch.no_grad():
        for p in host.parameters():
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
        # its own learning curves, as a single run's csv/metrics.csv
        header = (job / f"seed={s}" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"epoch", "step", "val/loss", "val/acc", "test/acc"} <= set(header)
    assert records[1]["config_hash"] != records[2]["config_hash"]
    sections = build_sections(find_runs([job]))
    assert [len(row.runs) for row in sections[0].rows] == [2]  # one row, two seeds
    alone = tmp_path / "alone"
    best = job / "seed=2" / "checkpoints" / "best.ckpt"
    done = run_cli("seed=2", *common, f"hydra.run.dir={alone}", "train=false", f"ckpt_path='{best}'")
    assert done.returncode == 0, done.stderr[-2000:]
    single = json.loads((alone / "metrics.json").read_text())
    assert single["test/loss"] == pytest.approx(records[2]["test/loss"], abs=1e-6)
    # a member resumed alone continues its history: its own dir, its last checkpoint, one more epoch
    member = job / "seed=2"
    resumed = run_cli("seed=2", *common, f"hydra.run.dir='{member}'", "ckpt_path=last", "trainer.max_epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = json.loads((member / "metrics.json").read_text())
    assert again["status"] == "ok" and again["epochs"] == 3 and again.get("resumed")
    with open(member / "csv" / "metrics.csv") as f:
        assert {row["epoch"] for row in csv.DictReader(f)} >= {"0", "1", "2"}


@pytest.mark.parametrize(
    "seeds, match", [(5, "non-empty list"), ([], "non-empty list"), ([1, 1], "twice"), ([1, "a"], "integer")]
)
def test_bad_seeds_are_refused(seeds, match):
    with pytest.raises(ConfigError, match=match):
        check_seeds(seeds)


@pytest.mark.parametrize("cell", ["lstm", "lru"])
def test_members_differing_in_optimizer_and_schedule(cfg_factory, cell):
    """Members whose optimizer (its class, its arguments) and LR schedule (its class, arguments, interval) differ:
    each is built with its own, and equals its own single run."""
    overrides = settings(cell, "none", False) + CELLS[cell]
    members = [
        ["seed=1", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.5"],
        ["seed=1", "optimizer=adamw", "optimizer.lr=0.02", "scheduler=step", "scheduler.step_size=1"]
        + ["task.scheduler_interval=step"],
        ["seed=2", "+optimizer.betas=[0.5,0.9]", "scheduler=none"],
        ["seed=2", "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.1", "task.scheduler_interval=step"],
    ]
    host = train_equal_to_single_runs(cfg_factory, overrides, members)
    optimizers = host.optimizers(use_pl_optimizer=False)
    kinds = [type(o).__name__ for o in optimizers.optimizers]
    assert kinds == ["SGD", "AdamW", "Adam", "Adam"]
    # the schedules stepped each member's own way: StepLR every update (gamma 0.5), every second (gamma 0.1)
    lrs = [o.param_groups[0]["lr"] for o in optimizers.optimizers]
    assert lrs[1] == pytest.approx(0.02 * 0.5**3) and lrs[3] == pytest.approx(0.05 * 0.1)
    assert lrs[2] == 0.05  # no schedule


def test_the_plan_counts_each_members_optimizer_state(cfg_factory):
    """The plan line's memory: weights and gradients, and the state each member's own optimizer keeps."""
    overrides = settings("gru", "none", False)
    members = [["seed=1"], ["seed=2", "optimizer=sgd"], ["seed=3", "optimizer=sgd", "optimizer.momentum=0"]]
    members += [["seed=4", "optimizer=adamw", "+optimizer.amsgrad=true"]]
    configs = [cfg_factory(*overrides, *m) for m in members]
    _, host, _ = build_stacked(configs[0], members=configs, names=[",".join(m) for m in members])
    assert [optimizer_state_per_weight(t) for t in host.tasks] == [2, 1, 0, 3]
    weights = sum(p.numel() * 4 for p in host.tasks[0].parameters())
    assert f"about {weights * (4 + 3 + 2 + 5) / 2**20:.1f} MB of weights, gradients and optimizer state" in plan(host)


def test_a_plateau_schedule_follows_each_members_own_validation_value(cfg_factory):
    """scheduler=plateau (patience 0) steps each member's learning rate on its own seed=<s>/val/loss."""
    overrides = [*settings("gru", "none", False), "scheduler=plateau", "scheduler.patience=0", "trainer.max_steps=-1"]
    overrides += ["trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    for s, seed in enumerate(SEEDS):
        single = single_run(cfg_factory, overrides, seed)
        for name, value in host.tasks[s].state_dict().items():
            torch.testing.assert_close(value, single[name], rtol=0, atol=1e-5, msg=f"seed {seed}: {name}")


def test_members_that_cannot_stack_exactly_train_one_after_another(cfg_factory, tmp_path):
    """Dropout draws other masks stacked than in the single runs: the seeds then run as their single runs."""
    cfg = cfg_factory(*settings("gru", "none", False), "depth=2", "stack.dropout=0.2", "seeds=[1,2]")
    records = train_seeds(cfg, single=train)
    assert [r["seed"] for r in records] == [1, 2] and all(r["status"] == "ok" for r in records)
    assert all("dropout" in r["stacked"]["not_stacked"] for r in records)
    assert all(r["update"] == "grouped(manual, K=8)" for r in records)  # each its own ordinary run
    assert (tmp_path / "seed=2" / "metrics.json").is_file()


def test_a_seeds_job_with_a_failed_member_exits_1_naming_it(cfg_factory, capsys):
    """As a multirun ends: the other members finish, every run dir is said, and the job's exit status is 1 with
    one error line per failed member (the job exited 0 with its failed members' dirs marked only "(failed)")."""
    from src.runs import seeds

    cfg = cfg_factory(*settings("gru", "none", False), "depth=2", "stack.dropout=0.2", "seeds=[1,2]")

    def second_fails(member):  # seed 2's run fails once its dir is claimed (its metrics.json: status failed)
        if member.seed == 2:
            member = copy.deepcopy(member)
            with open_dict(member):
                member.dataset.batch_size = 0
        return train(member)

    with pytest.raises(SystemExit) as ended:
        seeds.run(cfg, single=second_fails)
    said = capsys.readouterr()
    assert ended.value.code == 1
    assert "seed=1 (ok)" in said.out and "seed=2 (failed)" in said.out
    errors = [line for line in said.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: seed=2 failed: "), said.err[-2000:]
    assert "batch_size" in errors[0], errors[0]


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
    assert [t.update.setting("gradient_clip_val") for t in host.tasks] == [0.25, 0.25]
    assert host.update.truncation.steps == 4
    assert host.update.describe() == "stacked(S=2, truncated(k2=4, k1=4))"


def test_a_seed_given_on_the_command_line_wins_over_the_sweeps_seeds(tmp_path):
    """`make sweep SWEEP=quick ARGS="seed=3"`: the sweep config's seeds=[1,2] gives way, one single run."""
    args = ["-m", "sweep=quick", "dataset=digits", "cell=gru", "seed=3", f"hydra.sweep.dir={tmp_path}"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    assert [(r["seed"], r["update"]) for r in records] == [(3, "grouped(manual, K=8)")]


@pytest.mark.parametrize("dataset", ["selective_copy", "parity", "mqar"])
def test_the_memory_tasks_members_run_vmapped_and_equal_their_single_runs(cfg_factory, dataset):
    """A memory task's full-sequence loss reads nothing on the host, so its members run as one vmapped call (a
    count read on the host made them run one after another) and still equal their single runs."""
    overrides = [f"dataset={dataset}", "dataset.n_train=64", "dataset.batch_size=16", "cell=lru", "cell.hidden_size=8"]
    # lr 0.01, not 0.05: MQAR's token embedding gets its gradient summed in another order when vmapped, and at
    # lr 0.05 Adam's normalised step carries that float32 rounding into the weights (2e-5 after three updates)
    overrides += ["trainer.max_steps=3", "trainer.limit_val_batches=0", "test=false", "optimizer.lr=0.01"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    assert host.members.vmapped and host.update.notes() == [], host.update.notes()
    assert_members_equal_single_runs(cfg_factory, host, overrides, [[f"seed={s}"] for s in SEEDS])


# Padded text: news classification (characters, last step) and POS tagging (a tag per word, IGNORE past the end);
# batches of 8 documents, so the members' batches (each shuffled by its own seed) have different longest lengths.
PADDED = {
    "news_zh": ["dataset=news_zh", "dataset.tokenizer=char", "dataset.batch_size=8"],
    "pos_zh": ["dataset=pos_zh", "dataset.batch_size=8"],
}


@pytest.mark.parametrize("cell", ["lstm", "peephole_lstm"])
@pytest.mark.parametrize("dataset", list(PADDED))
def test_padded_text_members_stack_and_equal_their_single_runs(cfg_factory, dataset, cell):
    """Each member's batch is cut to the members' common longest sequence, not its own: the extra padding steps
    change nothing, so the members stack (torch's fused LSTM, bidirectional, and a custom cell) and each still
    equals its single run."""
    overrides = [*PADDED[dataset], f"cell={cell}", "cell.hidden_size=8", "direction=bi", "embedding.dim=8"]
    # lr 0.01, as for MQAR above: vmapped (the custom cell), a word's embedding gradient is summed in another order
    # (at lr 0.05 one of 397,800 embedding weights of POS differed by 2.4e-05 after three updates)
    overrides += ["trainer.max_steps=3", "trainer.limit_val_batches=0", "test=false", "optimizer.lr=0.01"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    batch = next(iter(data.train_dataloader()))
    longest = batch.lengths.max(dim=1).values  # each member's own longest in its first batch
    assert batch.x.shape[2] == int(longest.max()) and len(set(longest.tolist())) > 1  # cut to the common longest
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3 and host.update.diverged() == {}
    assert_members_equal_single_runs(cfg_factory, host, overrides, [[f"seed={s}"] for s in SEEDS])


def test_padded_text_under_truncation_trains_its_members_one_after_another(cfg_factory):
    """Under truncated BPTT a member's batch cut to the members' common longest would run windows of padding
    alone, which its single run never trains: the seeds then run as their single runs, and say why."""
    cfg = cfg_factory(
        *PADDED["pos_zh"],
        "cell=gru",
        "cell.hidden_size=8",
        "embedding.dim=8",
        "truncation=tbptt",
        "truncation.steps=5",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=0",
        "test=false",
        "seeds=[1,2]",
    )
    records = train_seeds(cfg, single=train)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all("truncation=tbptt" in r["stacked"]["not_stacked"] for r in records)
    assert all(r["update"].startswith("grouped(truncated(") for r in records)  # each its own single run's update


def test_members_load_their_data_once_and_keep_their_own_shuffle(cfg_factory):
    """Members whose data settings differ only in what the loaders read (the shuffle seed follows the seed) hold one
    load's tensors, each shuffling by its own seed; a member with other data settings loads its own."""
    overrides = ["dataset=digits", "dataset.batch_size=16", "cell=gru", "cell.hidden_size=8"]
    configs = [cfg_factory(*overrides, "seed=1"), cfg_factory(*overrides, "seed=2")]
    configs.append(cfg_factory(*overrides, "seed=3", "dataset.val_fraction=0.2"))
    data, host, trainer = build_stacked(configs[0], members=configs, names=["one", "two", "other"])
    first, second, other = data.datamodules
    assert all(first.splits[s][0] is second.splits[s][0] for s in ("train", "val", "test"))
    assert (first.shuffle_seed, second.shuffle_seed) == (1, 2)
    orders = [next(iter(dm.train_dataloader())).y for dm in (first, second)]
    assert not torch.equal(*orders)  # each member's own shuffle
    assert other.splits["train"][0] is not first.splits["train"][0]
    assert len(other.splits["val"][0]) > len(first.splits["val"][0])


def test_a_stream_data_sets_batch_rows_are_part_of_what_its_setup_depends_on(cfg_factory):
    """A stream's setup checks each split against its batch rows: members with other batch sizes load their own."""
    keys = [
        instantiate(cfg_factory("dataset=sin2cos", f"dataset.batch_size={b}").dataset).splits_key() for b in (8, 16)
    ]
    assert keys[0] != keys[1]
    seeds = [instantiate(cfg_factory("dataset=sin2cos", f"seed={s}").dataset) for s in (1, 2)]
    assert seeds[0].shuffle_seed != seeds[1].shuffle_seed and seeds[0].splits_key() == seeds[1].splits_key()
