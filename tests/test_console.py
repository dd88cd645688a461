"""The console and the run's log (conf/hydra/job_logging/quiet.yaml, src/runs/console.py), the progress bar
(conf/progress/), TensorBoard and tags=[...] for every logger, and what identifies a run on W&B
(src/records/identity.py: name, tags, job type and run.* keys), in sweeps too. W&B offline, as run_cli sets it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import run_cli
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from src.common.errors import ConfigError
from src.records import identity
from src.runs.build import build
from src.runs.sweeps import sweep_names, wandb_sweep
from src.train import train

LIBRARY_NOISE = ("wandb:", "litlogger", "LeafSpec", "GPU available", "Seed set to", "Trainer.fit` stopped")


def test_a_default_run_prints_its_own_lines_and_train_log_holds_the_whole_log(tmp_path):
    """The default command (logger=many: CSV and W&B offline, the tqdm bar): no W&B banner or footer, no
    Lightning notices on the console, but where the run is, its result and how to upload the W&B run; train.log
    holds the run's lines, Lightning's and the warnings."""
    done = run_cli("debug=limit", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in LIBRARY_NOISE:
        assert noise not in done.stderr and noise not in done.stdout, noise
    # No warning: 4 batches an epoch (debug=limit) are fewer than log_every_n_steps, which then follows the epoch.
    assert done.stderr.strip() == "", done.stderr[-3000:]
    # The progress bar has no v_num (the loggers' versions: the W&B id); the model summary no FLOPs column of 0s.
    assert "v_num" not in done.stdout and "train/loss=" in done.stdout
    assert "Trainable params" in done.stdout and "FLOPs" not in done.stdout and "Flops" not in done.stdout
    assert f"run lstm-d1-uni-none-debug=limit-s42 on smnist5k: {tmp_path}" in done.stdout
    assert "result: val/acc_best " in done.stdout and "test/acc " in done.stdout
    offline = next((tmp_path / "wandb").glob("offline-run-*"))
    assert f"wandb sync {offline}" in done.stdout
    assert done.stdout.rstrip().endswith(f"run dir: {tmp_path}")
    log = (tmp_path / "train.log").read_text()
    for line in (
        "run lstm-d1-uni-none",
        "GPU available",
        "`Trainer.fit` stopped",
        "result: val/acc_best",
        "wandb sync",
    ):
        assert line in log, line
    assert "litlogger" not in log and "Trainable params" in log and "FLOPs" not in log
    assert "\n\n" not in log  # a warning is one line, not followed by an empty one


def test_multirun_jobs_are_quiet_each_with_its_log_and_rich_progress(tmp_path):
    """Each job of a multirun: its own train.log and W&B run, no W&B or Lightning lines on the console; the jobs
    differ by a plain value (cell.variant), which names them apart. progress=rich: Lightning's RichProgressBar,
    which today's code refused beside its own tqdm bar ("multiple progress bar callbacks")."""
    done = run_cli(
        "-m",
        "cell=lstm_variant",
        "cell.variant=NIG,NFG",
        "debug=limit",
        "logger=wandb",
        "progress=rich",
        "trainer.log_every_n_steps=1",
        "callbacks=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip() == "", done.stderr[-3000:]
    for noise in LIBRARY_NOISE:
        assert noise not in done.stdout, noise
    assert "Epoch 1/1" in done.stdout  # rich's bar (tqdm's reads "Epoch 1: 100%")
    for variant in ("NIG", "NFG"):
        assert f"run lstm_variant-d1-uni-none-variant={variant}-debug=limit-" in done.stdout
    assert done.stdout.count("wandb sync ") == 2
    runs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(runs) == 2
    for path in runs:
        record = json.loads(path.read_text())
        assert record["status"] == "ok" and record["setting"].startswith("cell.variant=N")
        log = (path.parent / "train.log").read_text()
        assert "result: val/acc_best" in log and "wandb sync" in log
        assert len(list((path.parent / "wandb").glob("offline-run-*"))) == 1


# -- progress= ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "bar"),
    [("tqdm", "TQDMProgressBar"), ("rich", "RichProgressBar"), ("none", None)],
)
def test_progress_chooses_lightnings_bar_or_none(cfg_factory, option, bar):
    cfg = cfg_factory("dataset=digits", f"progress={option}", "trainer.enable_progress_bar=true")
    trainer = build(cfg)[2]
    found = trainer.progress_bar_callback
    assert (type(found).__name__ if found else None) == bar
    if bar:
        assert found.refresh_rate == cfg.trainer.log_every_n_steps  # a redraw syncs with the device
    # trainer.enable_progress_bar=false (the sweeps, the tests) turns any of them off
    off = build(cfg_factory("dataset=digits", f"progress={option}"))[2]
    assert off.progress_bar_callback is None


@pytest.mark.parametrize("option", ["tqdm", "rich"])
@pytest.mark.parametrize("update", [["update=grouped", "update.per_step=3"], ["update=automatic"]], ids=["K3", "K1"])
def test_the_progress_bar_counts_batches_when_a_step_trains_several(cfg_factory, option, update):
    """7 batches an epoch in steps of 3, 3, 1: the bar's total and its last position are 7 (batches), as with
    one batch per step, not 3 (Lightning's steps)."""
    cfg = cfg_factory(
        "dataset=digits", f"progress={option}", "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=1",
        "trainer.max_epochs=1", "trainer.limit_train_batches=7", "trainer.limit_val_batches=1", *update,
    )  # fmt: skip
    datamodule, model, trainer = build(cfg)
    bar, seen = trainer.progress_bar_callback, []
    if option == "tqdm":
        original = bar.on_train_batch_end

        def spy(*args, **kwargs):
            original(*args, **kwargs)
            seen.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    else:
        original = bar.on_train_batch_end

        def spy(*args, **kwargs):
            original(*args, **kwargs)
            task = bar.progress.tasks[bar.train_progress_bar_id]
            seen.append((int(task.completed), int(task.total)))

    bar.on_train_batch_end = spy
    trainer.fit(model, datamodule=datamodule)
    steps = [3, 6, 7] if "update.per_step=3" in update else [1, 2, 3, 4, 5, 6, 7]
    assert seen == [(n, 7) for n in steps]


# -- logger=tensorboard and tags=[...] ----------------------------------------------------------------------------


def test_tensorboard_logger_and_tags_reach_every_logger_and_metrics_json(cfg_factory, tmp_path):
    record = train(cfg_factory("debug=limit", "logger=[csv,tensorboard]", "tags=[baseline,v2]"))
    assert record["status"] == "ok" and record["tags"] == ["baseline", "v2"]
    assert json.loads((tmp_path / "metrics.json").read_text())["tags"] == ["baseline", "v2"]
    tagged = {tag for path in (tmp_path / "tensorboard").glob("events.out.tfevents.*") for tag in scalar_tags(path)}
    assert {"val/acc", "train/acc", "test/acc"} <= tagged  # (train/loss: every log_every_n_steps, past 4 batches)
    for logger in ("tensorboard", "csv"):
        hparams = yaml.safe_load((tmp_path / logger / "hparams.yaml").read_text())
        assert hparams["tags"] == ["baseline", "v2"], logger
        assert hparams["run"]["tags"] == ["baseline", "v2"] and hparams["run"]["setting"], logger


def test_tensorboard_keeps_fit_scalars_when_test_starts_within_the_same_second(tmp_path):
    from src.runs.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    logger.log_metrics({"val/acc": 0.5}, step=1)
    logger.finalize("success")  # the end of fit; test starts at once, as with a small data set
    logger.log_metrics({"test/acc": 0.4}, step=1)
    logger.finalize("success")
    tagged = {tag for path in (tmp_path / "tb").glob("events.out.tfevents.*") for tag in scalar_tags(path)}
    assert {"val/acc", "test/acc"} <= tagged


def scalar_tags(path) -> set[str]:
    """The scalar names in a TensorBoard event file: TFRecords (length, its CRC, an Event proto, the proto's CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, tags, at = path.read_bytes(), set(), 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = Event.FromString(data[at + 12 : at + 12 + length])
        tags |= {value.tag for value in event.summary.value}
        at += 12 + length + 4
    return tags


@pytest.mark.parametrize("tags", ["tags=[" + "x" * 65 + "]", "tags=[a,[b]]", "tags=[true]"])
def test_bad_tags_are_a_config_error(cfg_factory, tags):
    with pytest.raises(ConfigError, match=r"tags=.*labels of 1 to 64 characters"):
        train(cfg_factory("debug=limit", tags))


# -- what identifies a run on W&B ---------------------------------------------------------------------------------


def wandb_fields(cfg) -> dict:
    """The W&B logger's name, tags and job type as it gets them, and the run.* config train.py logs."""
    logger = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    return {**{k: logger[k] for k in ("name", "tags", "job_type", "group")}, "run": identity.wandb_run(cfg)}


def as_multirun(cfg):
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_plain_values_name_and_tag_the_run_and_are_run_config_keys(cfg_factory):
    base = ["logger=wandb", "cell=lstm_variant"]
    nig = wandb_fields(cfg_factory(*base, "cell.variant=NIG", "optimizer.lr=0.0012345", "tags=[study]"))
    assert nig["name"] == "lstm_variant-d1-uni-none-callbacks=none-variant=NIG-lr=0.00123-s42"
    assert {"cell.variant=NIG", "optimizer.lr=0.00123", "study", "sweep=none"} <= set(nig["tags"])
    assert nig["job_type"] == "train" and nig["group"] == "smnist5k"
    run = nig["run"]
    assert run["cell_variant"] == "NIG" and run["optimizer_lr"] == 0.0012345  # typed: W&B can plot it
    assert run["setting"] == "callbacks=none cell.variant=NIG optimizer.lr=0.0012345" and run["sweep"] == "train"
    nfg = wandb_fields(cfg_factory(*base, "cell.variant=NFG", "optimizer.lr=0.0012345", "tags=[study]"))
    assert nfg["name"] != nig["name"] and nfg["run"]["cell_variant"] == "NFG"
    hidden = wandb_fields(cfg_factory("logger=wandb", "cell.hidden_size=64"))
    assert "hidden=64" in hidden["name"] and hidden["run"]["cell_hidden_size"] == 64
    assert "cell.hidden_size=64" in hidden["tags"]
    # a config-group choice beyond the run fields is a setting too
    sgd = wandb_fields(cfg_factory("logger=wandb", "optimizer=sgd"))
    assert "optimizer=sgd" in sgd["name"] and sgd["run"]["optimizer"] == "sgd" and "optimizer=sgd" in sgd["tags"]


def test_the_wandb_logger_config_resolves_in_place(cfg_factory):
    """`python -m src.train --cfg job --resolve` resolves the config in place: the tags resolver's list too."""
    cfg = cfg_factory("logger=wandb", "tags=[a]")
    OmegaConf.resolve(cfg.logger)
    assert list(cfg.logger.wandb.tags)[-1] == "a" and cfg.logger.wandb.job_type == "train"


def test_an_ad_hoc_multirun_has_its_own_job_type_and_sweep_dir(cfg_factory, tmp_path):
    fields = wandb_fields(as_multirun(cfg_factory("logger=wandb", "cell=gru")))
    assert fields["job_type"] == "multirun" and "sweep=multirun" in fields["tags"]
    assert fields["run"]["sweep"] == "multirun" and fields["run"]["sweep_dir"].startswith(str(tmp_path / "multiruns"))
    named = wandb_fields(as_multirun(cfg_factory("logger=wandb", "sweep=quick")))
    assert named["job_type"] == "quick" and "sweep=quick" in named["tags"]


def grid_jobs(name: str) -> list[dict]:
    """For each searched key of the sweep: two jobs that differ in that key only (the first two values of a
    grid, the ends of an interval), as the sweeper hands them to the jobs: overrides."""
    params = wandb_sweep(name)["parameters"]
    first = {k: p["values"][0] if "values" in p else p.get("value", p.get("min")) for k, p in params.items()}
    pairs = []
    for key, p in params.items():
        other = p["values"][1] if len(p.get("values", [])) > 1 else p.get("max")
        if other is not None:
            pairs.append((key, first, {**first, key: other}))
    return pairs


@pytest.mark.parametrize("name", sweep_names())
def test_every_sweep_logs_to_wandb_offline_and_tells_its_jobs_apart(cfg_factory, name):
    """Every conf/sweep/*.yaml keeps W&B (offline) like a single run, and any two of its jobs that differ in one
    searched key differ in their run.* keys, in their tags unless the key is the seed, and in their name unless it
    is the data set (the W&B group)."""
    pairs = grid_jobs(name)
    assert pairs, f"sweep {name} searches nothing"
    for key, a, b in pairs:
        seen = []
        for job in (a, b):
            cfg = as_multirun(cfg_factory(f"sweep={name}", *[f"{k}={v}" for k, v in job.items()], quiet=False))
            assert "wandb" in cfg.logger and cfg.logger.wandb.offline is True, f"sweep {name} drops W&B"
            seen.append(wandb_fields(cfg))
        assert seen[0]["job_type"] == seen[1]["job_type"] == name
        if key != "seed":  # seeds are the replicas a group averages over: in the name and run.seed, no tag
            assert set(seen[0]["tags"]) != set(seen[1]["tags"]), (name, key)
        assert seen[0]["run"] != seen[1]["run"], (name, key)
        if key != "dataset":
            assert seen[0]["name"] != seen[1]["name"], (name, key)


def test_the_wandb_dashboard_groups_each_task_by_the_settings_that_differ(tmp_path):
    """src.compare.wandb_dashboard groups a task's runs as the leaderboard rows them: the architecture and every setting
    that differs between them, under the run.* keys that src.train logs (run.cell_variant)."""
    from src.compare.leaderboard import build_sections, find_runs
    from src.compare.wandb_dashboard import GROUP_BY, group_by

    for variant in ("NIG", "NFG"):
        for seed in (1, 2):
            run = tmp_path / f"{variant}-{seed}"
            (run / ".hydra").mkdir(parents=True)
            overrides = ["cell=lstm_variant", f"cell.variant={variant}", "optimizer.lr=0.01", f"seed={seed}"]
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            record = {"status": "ok", "dataset": "digits", "task": "classify", "cell": "lstm_variant", "depth": 1}
            record |= {"direction": "uni", "truncation": "none", "seed": seed, "monitor": "val/acc"}
            record |= {"monitor_mode": "max", "test/acc": 0.5 + seed / 10}
            (run / "metrics.json").write_text(json.dumps(record))
    [section] = build_sections(find_runs([tmp_path]))
    assert group_by(section) == [*GROUP_BY, "run.cell_variant"]  # lr is the same in every run: no group of its own
    assert len(section.rows) == 2
