"""What identifies a run, the same in metrics.json, on W&B and in the leaderboard (src/compare/leaderboard.py).

A run is its config-group choices (dataset, task, cell, direction, truncation), depth and seed, plus its *setting*:
every other override it was started with (`cell.variant=NIG`, `optimizer.lr=0.0012`, `cell.hidden_size=64`,
`embedding=word2vec`). In a sweep those are what differs between its jobs (the sweeper hands each job its values
as overrides, Optuna's trials too), so runs that differ only there stay apart on W&B: in the run's name, its tags
and the config keys `run.setting` and `run.<key>` (`run.cell_variant`, `run.optimizer_lr`) that W&B groups by.

The W&B logger's config reads these through resolvers (`${run_name:}`, `${run_tags:}`, `${run_job_type:}`,
registered in src/__init__.py on import of the package). Hydra is imported where it is used,
so that importing the package stays light for every command.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.common.errors import ConfigError

FIELDS = ("dataset", "task", "cell", "direction", "truncation")
# Beyond NOT_SETTINGS (where outputs go, how a run is shown): which sweep, and whether it resumes, trains, tests.
NOT_IDENTITY = {"sweep", "ckpt_path", "train", "test"}
MAX_TAG = 64  # W&B refuses longer tags

# What tells runs apart, the same for their names here and for the leaderboard's rows and setting column.
ARCH = ("cell", "depth", "direction", "truncation")
NOT_SETTINGS = {
    "dataset",
    "seed",
    *ARCH,
    "skip_completed",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "progress",  # the progress bar and the labels: how a run is shown, not what it computes
    "tags",
}
NOT_SETTINGS_PREFIXES = ("hydra.", "hydra/", "paths.", "logger")  # where outputs go: not what a run computes
# Short names of common settings for the "setting" column; any other key shows as its last part (cell.variant ->
# variant), or whole when two keys would share a name.
SHORT_KEYS = {
    "cell.hidden_size": "hidden",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "weight decay",
    "trainer.max_epochs": "epochs",
    "dataset.batch_size": "batch",
    "dataset.seq_len": "T",
    "update.gradient_clip_val": "clip",
    "trainer.gradient_clip_val": "clip",  # records made before clipping moved to the update group
    "cell.dropout": "dropout",
    "embedding.dim": "embedding",
}


def short_value(value: str) -> str:
    """Long floats from a search (0.0010789816...) to 3 significant digits, for display only."""
    if re.fullmatch(r"-?\d+\.\d{4,}(?:[eE][-+]?\d+)?|-?\d+(?:\.\d+)?[eE][-+]?\d+", value):
        return f"{float(value):.3g}"
    return value


def setting_names(keys: Iterable[str]) -> dict[str, str]:
    """key -> its short name (cell.hidden_size -> hidden, cell.variant -> variant), whole where two would clash."""
    keys = list(keys)
    short = {k: SHORT_KEYS.get(k, k.rsplit(".", 1)[-1].replace("_", " ")) for k in keys}
    clashes = {name for name in short.values() if list(short.values()).count(name) > 1}
    return {k: (k if name in clashes else name) for k, name in short.items()}


def _hydra() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _multirun(hydra: Any | None) -> bool:
    from hydra.types import RunMode

    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def in_multirun() -> bool:
    """Whether this process runs a multirun's jobs (-m): their failures go to the sweep's ledger, its end says them."""
    return _multirun(_hydra())


# A stacked job's member (src/runs/seeds.py): the overrides of the single run it equals, while it is identified.
_member_overrides: list[list[str]] = []


@contextlib.contextmanager
def as_run(task_overrides: list[str] | None) -> Iterator[None]:
    """Within: the run identified is the one started with `task_overrides` (a stacked job's member: its single
    run's overrides, seed=<s> where the job said seeds=[...]), for every function here and the W&B logger's
    resolvers. None: the job's own."""
    if task_overrides is None:
        yield
        return
    _member_overrides.append(list(task_overrides))
    try:
        yield
    finally:
        _member_overrides.pop()


def overrides() -> list[str]:
    """The job's own overrides (a sweep's job: the command line's and the values the sweeper chose for it), or
    within as_run those of the run it names."""
    if _member_overrides:
        return list(_member_overrides[-1])
    hydra = _hydra()
    return list(hydra.overrides.task) if hydra is not None else []


def settings(task_overrides: list[str] | None = None) -> dict[str, Any]:
    """key -> value of each override beyond the run fields, depth and seed, in command-line order: a value as
    Hydra parsed it (0.01 a float, 64 an int), a config-group choice (`embedding=word2vec`) as its name."""
    return dict(_settings(tuple(overrides() if task_overrides is None else task_overrides)))


# parsed once per run: a stacked job's records, loggers and W&B config ask for each member's several times
@functools.lru_cache(maxsize=1024)
def _settings(task_overrides: tuple[str, ...]) -> dict[str, Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    found: dict[str, Any] = {}
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or key in NOT_SETTINGS or key in NOT_IDENTITY or key.startswith(NOT_SETTINGS_PREFIXES):
            continue
        value = o.value()
        found[key] = (
            value if isinstance(value, (str, int, float, bool)) or value is None else o.get_value_element_as_str()
        )
    return found


def setting_text(values: dict[str, Any]) -> str:
    """`cell.variant=NIG optimizer.lr=0.0012`: the raw overrides, as src.compare keys its rows."""
    return " ".join(f"{k}={v}" for k, v in values.items())


def config_key(key: str) -> str:
    """A setting's key under `run.` in the W&B config: no dots (W&B reads them as nesting), cell.variant ->
    cell_variant, hydra/launcher -> hydra_launcher."""
    return key.replace(".", "_").replace("/", "_").lstrip("+~")


def fields(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run in metrics.json: the config groups chosen, depth, seed and the setting."""
    hydra = _hydra()
    choices = hydra.runtime.choices if hydra is not None else {}
    values = settings()
    return {
        **{key: choices.get(key) for key in FIELDS},
        "depth": cfg.depth,
        "seed": cfg.seed,
        "setting": setting_text(values),
        "tags": user_tags(cfg),
    }


def wandb_run(cfg: DictConfig) -> dict[str, Any]:
    """The `run` section of the logged config, to group by: the fields, `setting`, one `run.<key>` per setting
    (its value typed, so W&B can plot it), the sweep and, in a multirun, the sweep dir and the job's number."""
    hydra = _hydra()
    found = {**fields(cfg), **{config_key(k): v for k, v in settings().items()}}
    found["sweep"] = job_type(cfg)
    if _multirun(hydra):
        found.update(sweep_dir=str(hydra.sweep.dir), job=hydra.job.get("num"))
    return found


def user_tags(cfg: DictConfig) -> list[str]:
    """The top-level `tags=[...]` (one word alone is one tag), checked: W&B takes labels of 1 to 64 characters."""
    raw = cfg.get("tags")
    if raw is None:
        return []
    items = list(raw) if isinstance(raw, (list, ListConfig)) else [raw]
    if any(
        isinstance(t, bool) or not isinstance(t, (str, int, float)) or not 1 <= len(str(t)) <= MAX_TAG for t in items
    ):
        shown = OmegaConf.to_container(raw) if isinstance(raw, (ListConfig, DictConfig)) else raw
        raise ConfigError(
            f"tags={shown!r}: give a list of labels of 1 to {MAX_TAG} characters, e.g. tags=[baseline,v2]"
        )
    return [str(t) for t in items]


def job_type(cfg: DictConfig) -> str:
    """The sweep that ran this job (conf/sweep/<name>.yaml), `multirun` for any other `-m` run, else `train`."""
    name = cfg.get("sweep_name")
    if name:
        return str(name)
    return "multirun" if _multirun(_hydra()) else "train"


def name(cfg: DictConfig) -> str:
    """lstm-d1-uni-none-s42; with a setting: lstm_variant-d1-uni-none-variant=NIG-s1, gru-d1-uni-none-lr=0.00123-s1
    (the short names and values of the leaderboard's setting column)."""
    f = fields(cfg)
    parts = [str(f["cell"]), f"d{f['depth']}", str(f["direction"]), str(f["truncation"])]
    values = settings()
    short = setting_names(values)
    parts += [f"{short[k].replace(' ', '_')}={short_value(str(v))}" for k, v in values.items()]
    return "-".join([*parts, f"s{f['seed']}"])


def tags(cfg: DictConfig) -> list[str]:
    """key=value tags of the run fields, its sweep (job type) and each setting, then the user's tags=[...]."""
    f = fields(cfg)
    found = [f"{key}={f[key]}" for key in ("dataset", "cell")] + [f"depth={f['depth']}"]
    found += [f"{key}={f[key]}" for key in ("direction", "truncation")]
    found.append(f"sweep={cfg.get('sweep_name') or ('multirun' if job_type(cfg) == 'multirun' else 'none')}")
    found += [f"{k}={short_value(str(v))}"[:MAX_TAG] for k, v in settings().items()]
    return found + [t for t in user_tags(cfg) if t not in found]


def _config_value(value: Any) -> Any:
    return ListConfig(value) if isinstance(value, list) else value


def register_resolvers() -> None:
    """${run_name:}, ${run_tags:}, ${run_job_type:} for conf/logger/wandb.yaml: computed when the logger is made,
    from the job's own config and overrides."""
    for key, fn in (("run_name", name), ("run_tags", tags), ("run_job_type", job_type)):
        if not OmegaConf.has_resolver(key):
            # A list as a ListConfig: OmegaConf.resolve (`--cfg job --resolve`) cannot put a plain list in a node.
            OmegaConf.register_new_resolver(key, lambda _root_, fn=fn: _config_value(fn(_root_)))
