"""A run's .hydra/ files (src/records/rundir.py write_hydra_files, through src/common/config_yaml.py) are the text OmegaConf.to_yaml gives, though
written by libyaml's emitter: checked on every option of every config group and on the values whose quoting or
wrapping a YAML emitter decides."""

from __future__ import annotations

import math
from enum import Enum

import pytest
import yaml
from omegaconf import OmegaConf

from src.common import config_yaml
from src.records import rundir
from tests.conftest import CONF, make_cfg

GROUPS = ["dataset", "cell", "optimizer", "scheduler", "update", "truncation", "direction", "task", "logger"]


def options() -> list[str]:
    return [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("override", options())
def test_every_composed_config_is_written_as_omegaconf_writes_it(tmp_path, override):
    try:
        cfg = make_cfg(tmp_path, [override])
    except Exception:  # an option that composes only beside others (a task without its data set): the default
        cfg = make_cfg(tmp_path, [])
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    assert config_yaml.to_yaml(job) == OmegaConf.to_yaml(job)
    assert config_yaml.to_yaml({"hydra": cfg.hydra}) == OmegaConf.to_yaml({"hydra": cfg.hydra})


class Color(Enum):
    RED = 1


TRICKY = {
    "numbers as strings": ["1", "1e-3", "0x1f", ".5", "1_000", "inf", ".nan", "-0"],
    "booleans and null as strings": ["true", "False", "yes", "off", "null", "~", "y", "n", ""],
    "floats": [1e-3, 1e20, -0.0, math.inf, -math.inf, 0.1 + 0.2],
    "plain": [None, True, 0, -7, 2**40],
    "text": ["数据集 新闻", "é à ü", "a: b", "- dash", "#hash", "it's", 'say "hi"', "  padded  ", "tab\there"],
    "lines": ["two\nlines", "trailing\n", "x" * 200, " ".join(["word"] * 60)],
    "interpolations": ["${seed}", "${oc.env:HOME,/tmp}", "a_${seed}_b"],
    "keys": {"a.b": 1, "with space": 2, "数": 3, "1": 4, "true": 5},
    "empty": [{}, []],
    "enum": Color.RED,
    "override lines": ["cell=gru", "'seeds=[1,2]'", 'ckpt_path="/a/seed=1/x.ckpt"', "+a=b=c"],
}


PLAIN = {k: v for k, v in TRICKY.items() if k != "enum"}  # taken as it is, without OmegaConf's copy
CONVERTED = {"tuple": (1, "a"), "int keys": {1: "a", 2: (3,)}, "enum": Color.RED, "keys": {Color.RED: 1}}


@pytest.mark.parametrize(
    "value", [TRICKY, PLAIN, CONVERTED, list(TRICKY["override lines"]), {"hydra": TRICKY}, {"a": [PLAIN, CONVERTED]}]
)
def test_values_an_emitter_quotes_or_wraps_are_written_as_omegaconf_writes_them(value):
    written = config_yaml.to_yaml(value)
    assert written == OmegaConf.to_yaml(value)
    assert yaml.safe_load(written) is not None


def test_the_files_of_a_run_dir(tmp_path, cfg_factory):
    cfg = cfg_factory("cell=gru")
    rundir.write_hydra_files(tmp_path, cfg, cfg.hydra, ["cell=gru"])
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == OmegaConf.to_yaml(cfg)
    assert (tmp_path / ".hydra" / "hydra.yaml").read_text() == OmegaConf.to_yaml({"hydra": cfg.hydra})
    assert OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml") == ["cell=gru"]
