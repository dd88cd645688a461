"""Every option of every config group composes and builds; bad values fail with a message that names them."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.data.tensors import TensorDataModule
from src.models.stack import RecurrentStack
from tests.conftest import CONF, run_cli

# conf/results/ holds the results pages, which python -m src.results reads (tests/test_results.py): not options of
# src.train's config.
NOT_TRAINING = {"results"}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in NOT_TRAINING)
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_the_contract_groups_exist():
    for group in (
        "dataset",
        "cell",
        "direction",
        "truncation",
        "trainer",
        "logger",
        "optimizer",
        "paths",
        "hydra",
        "experiment",
        "debug",
    ):
        assert group in GROUPS
    assert {"default", "cpu", "gpu", "ddp", "ddp_sim"} <= {o for g, o in OPTIONS if g == "trainer"}
    assert {"wandb", "csv", "many", "none"} <= {o for g, o in OPTIONS if g == "logger"}
    assert {"rnn", "rnn_relu", "lstm", "gru"} <= {o for g, o in OPTIONS if g == "cell"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(cfg_factory, group, option):
    if group == "hydra":
        override = f"hydra={option}"
    else:
        override = f"{group}={option}"
    cfg = cfg_factory(override, quiet=False)
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert container["task"]["_target_"]
    if group == "dataset":
        dm = instantiate(cfg.dataset)
        assert isinstance(dm, TensorDataModule)
    if group in ("cell", "direction"):
        stack = instantiate(cfg.stack)(input_size=5)
        assert isinstance(stack, RecurrentStack)
    if group == "trainer" and option in ("default", "cpu"):
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs


def test_cli_rejects_unknown_cell_and_lists_choices(tmp_path):
    done = run_cli("cell=nope", f"hydra.run.dir={tmp_path}")
    assert done.returncode != 0
    assert "nope" in done.stderr and "lstm" in done.stderr and "gru" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_rejects_unknown_direction(tmp_path):
    done = run_cli("direction=sideways", f"hydra.run.dir={tmp_path}")
    assert done.returncode != 0
    assert "sideways" in done.stderr and "bi" in done.stderr and "uni" in done.stderr


def test_cli_rejects_depth_zero_with_one_clear_message(tmp_path):
    done = run_cli("depth=0", "logger=none", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert "depth=0 must be a positive integer" in done.stderr
    assert "Traceback" not in done.stderr
    record = (tmp_path / "metrics.json").read_text()
    assert '"status": "failed"' in record and "depth=0" in record


def test_cli_rejects_missing_data_dir_and_says_how_to_get_data(tmp_path):
    missing = tmp_path / "no-such-folder"
    done = run_cli("dataset=smnist", f"dataset.data_dir={missing}", "logger=none", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert str(missing) in done.stderr and "does not exist" in done.stderr
    assert "download=true" in done.stderr  # the fix
    assert "Traceback" not in done.stderr


def test_the_resolved_config_a_run_records_is_its_config_resolved_without_hydras_node(cfg_factory):
    """build's resolved_config (the run_config a task and a checkpoint carry), node by node, equals the config
    resolved as one (a masked copy without `hydra`): interpolations across groups, a value left missing, lists."""
    from omegaconf import open_dict

    from src.runs.build import resolved_config

    cfg = cfg_factory("cell=gru", "cell.hidden_size=16", "+tags=[a,b]")
    with open_dict(cfg):
        cfg.task.head_hidden = "${cell.hidden_size}"  # across groups, resolved against the whole config
        cfg.note = "${seed}"  # a top-level interpolation
        cfg.later = "???"
    mine = resolved_config(cfg)
    expected = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert mine == expected and "hydra" not in mine
    assert mine["task"]["head_hidden"] == 16 and mine["note"] == cfg.seed and mine["later"] == "???"
