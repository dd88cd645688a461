"""OmegaConf.to_yaml's text, written by libyaml's C emitter instead of PyYAML's Python one: the same bytes, sooner.
Every run writes its config several times (.hydra/'s files, the CSV logger's hparams.yaml), and a stacked job does
it for each member (measured in docs/speed.md, "A run's config files").
tests/test_hydra_files.py holds the text equal to OmegaConf's on every option of every config group."""

from __future__ import annotations

from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper


class _LibyamlDumper(getattr(yaml, "CDumper", yaml.Dumper)):
    """OmegaConf's dumper (its quoting of strings that would read back as numbers or booleans) on libyaml."""


_LibyamlDumper.add_representer(str, get_omega_conf_dumper().str_representer)


def to_yaml(data: Any) -> str:
    """OmegaConf.to_yaml(data): a config, or plain data OmegaConf can hold."""
    return dump(plain(data))


def plain(data: Any) -> Any:
    """The plain data OmegaConf.to_yaml dumps: the config's, interpolations kept, enums by name. Data that is
    plain already (a run's resolved settings, a list of overrides) is its own, without OmegaConf's copy."""
    if OmegaConf.is_config(data):
        return OmegaConf.to_container(data, enum_to_str=True)
    if _is_plain(data):
        return data
    return OmegaConf.to_container(OmegaConf.create(data), enum_to_str=True)


def _is_plain(data: Any) -> bool:
    """Only dicts with string keys, lists and exactly str, int, float, bool or None: what OmegaConf holds and gives
    back unchanged (a subclass, such as numpy's float64, or a tuple or an enum, is converted, or refused, by it)."""
    if type(data) is dict:
        return all(type(k) is str and _is_plain(v) for k, v in data.items())
    if type(data) is list:
        return all(_is_plain(v) for v in data)
    return data is None or type(data) in (str, int, float, bool)


def dump(plain_data: Any) -> str:
    """The YAML text of plain data (what `plain` gives), as OmegaConf.to_yaml writes it."""
    return yaml.dump(plain_data, Dumper=_LibyamlDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
