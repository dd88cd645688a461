"""From a composed config to the objects that run: the config's checks, then the data module, the update strategy,
the task (handed the data's DataSpec) and the Trainer, each built by Hydra's instantiate from its config group
(`build`); a value a class refuses becomes one ConfigError line (`make`). src/train.py (one run) and src/runs/seeds.py
(seeds=[...], stacked) build through here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from src.common import allocator
from src.common.errors import ConfigError, DataError, not_there, user_error
from src.common.files import probe_writable
from src.common.paths import CONF_DIR
from src.records import identity
from src.runs.learning import budget_updates, budgeted
from src.runs.ranges import check_ranges, check_truncation_length, override_key
from src.runs.sweeps import check_one_process_per_job

# torch, Lightning and the modules built on them are imported in the functions that use them, so that `--help`
# and a bad command line answer without loading them (seconds).
if TYPE_CHECKING:
    import lightning as L

    from src.updates.base import Update


def run_fields(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run in metrics.json, W&B and the leaderboard: the config groups chosen, depth, seed, the
    other overrides (its setting) and the user's tags (src/records/identity.py)."""
    return identity.fields(cfg)


# Trainer settings Lightning would accept and then act on wrongly (a negative clip value flips the gradients) or
# fail on deep inside fit: checked first.
TRAINER_VALUES = (
    ("max_epochs", lambda v: isinstance(v, int) and v >= -1, "an integer >= 1 (or -1: no limit)"),
    ("min_epochs", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("max_steps", lambda v: isinstance(v, int) and v >= -1, "an integer >= 1 (or -1: no limit)"),
    ("log_every_n_steps", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    ("accumulate_grad_batches", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    ("check_val_every_n_epoch", lambda v: isinstance(v, int) and v >= 1, "a positive integer (or null)"),
    (
        "limit_train_batches",
        lambda v: isinstance(v, (int, float)) and v > 0,
        "a fraction in (0, 1] or a count >= 1 (0 would train nothing; use train=false to only evaluate)",
    ),
    ("limit_val_batches", lambda v: isinstance(v, (int, float)) and v >= 0, "a fraction in [0, 1] or a count"),
    ("limit_test_batches", lambda v: isinstance(v, (int, float)) and v >= 0, "a fraction in [0, 1] or a count"),
)


# The top-level keys a config may have: the config groups (conf/<group>/), the keys of conf/config.yaml, and
# what sweeps set for the loggers.
CONF = CONF_DIR


TOP_LEVEL = (
    {p.name for p in CONF.iterdir() if p.is_dir()} | set(OmegaConf.load(CONF / "config.yaml")) | {"sweep_name", "hydra"}
) - {"defaults"}


# Settings that moved into the update group (conf/update/), with what replaces them: refused by name, on the
# command line (before Hydra would call them unknown keys) and in a composed config (a user's own yaml).
MOVED = {
    "updates_per_step": "update=grouped update.per_step=K (K batches per Lightning step), or update=auto",
    "graph_updates": "update=graphed (true) or update=grouped (false)",
    "trainer.gradient_clip_val": "update.gradient_clip_val",
    "trainer.gradient_clip_algorithm": "update.gradient_clip_algorithm",
}


def moved_setting(keys: list[str]) -> ConfigError | None:
    """The error for the first of `keys` (override keys, or dotted config keys) that moved, or None."""
    for key in keys:
        key = override_key(key)
        if key in MOVED:
            return ConfigError(
                f"{key} is no longer a setting: clipping and how updates run are the update group's; use {MOVED[key]}"
            )
    return None


def check_config(cfg: DictConfig) -> None:
    """Fail fast, before any data is loaded, on the values every run depends on."""
    present = [k for k in MOVED if OmegaConf.select(cfg, k, default=None) is not None]
    if (moved := moved_setting(present)) is not None:
        raise moved
    if not isinstance(cfg.depth, int) or isinstance(cfg.depth, bool) or cfg.depth < 1:
        raise ConfigError(f"depth={cfg.depth!r} must be a positive integer (1 = one recurrent layer)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**32:
        raise ConfigError(
            f"seed={cfg.seed!r} must be an integer in [0, 2**32) (Lightning would replace any other "
            f"value by a random seed)"
        )
    for key in ("train", "test", "skip_completed"):
        if not isinstance(cfg.get(key, True), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    if not cfg.train and not cfg.ckpt_path:
        raise ConfigError(
            "train=false evaluates a trained model: give it with ckpt_path=<a .ckpt file> (or "
            "ckpt_path=last hydra.run.dir=<its run dir>); without one it would test an untrained model"
        )
    unknown = sorted(k for k in cfg if k not in TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: no such top-level setting (a typo, or a `+key=` override that "
            f"nothing reads); the settings are {', '.join(sorted(TOP_LEVEL - {'hydra'}))}"
        )
    hidden = cfg.cell.get("hidden_size")
    if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
        raise ConfigError(f"cell.hidden_size={hidden!r} must be a positive integer")
    for key, check, what in TRAINER_VALUES:
        value = cfg.trainer.get(key)
        if value is not None and (isinstance(value, bool) or not check(value)):
            raise ConfigError(f"trainer.{key}={value!r} must be {what}")
    check_ranges(cfg)
    check_one_process_per_job(cfg)
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_writable(out)
    except OSError as e:
        raise ConfigError(
            f"the output directory {out} is not writable ({e.strerror}); choose another with "
            f"hydra.run.dir=<dir> (or paths.log_dir=<dir>)"
        ) from None


def build(cfg: DictConfig, wandb_id: str | None = None) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """The data module (set up), the task module and the Trainer that `cfg` describes; `wandb_id`: the W&B run
    this run dir logs to (one per run dir, however often resumed: src/records/rundir.py keeps it). `cfg` is only
    read."""
    allocator.start_up_done()  # what is alive before a run is built lives as long as the process
    datamodule, model = build_model(cfg)
    return datamodule, model, build_trainer(cfg, wandb_id, datamodule=datamodule)


def build_model(
    cfg: DictConfig, set_up: dict[str, L.LightningDataModule] | None = None, stacked: bool = False
) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module (set up) and the task module of `cfg`, seeded with cfg.seed: what a run trains, without the
    Trainer that runs it (a stacked job's members: src/runs/seeds.py). `set_up`: data modules set up before, by
    their splits_key (a stacked job's members'); one with this run's key lends its splits instead of a new load,
    and this run's is added. `stacked`: a stacked job's member, whose batches the stacked update takes one per
    step whatever the member's own update groups."""
    import lightning as L

    from src.updates.schedules import check_optimization

    cfg = budgeted(cfg)  # budget.updates: the trainer limits and the run-long schedule it sets
    L.seed_everything(cfg.seed, workers=True)
    update = update_strategy(cfg)
    per_step = 1 if stacked else update.setting("per_step", 1)
    datamodule = make(cfg.dataset, "dataset", **batch_groups(cfg, per_step))
    key = datamodule.splits_key() if set_up is not None and hasattr(datamodule, "splits_key") else None
    try:
        if key in (set_up or {}):
            datamodule = datamodule.share_splits(set_up[key])
        else:
            datamodule.prepare_data()
            datamodule.setup()
            if key is not None:
                set_up[key] = datamodule
    except OSError as e:  # a data file or folder the file system refuses (a directory, a FIFO, no permission)
        where = e.filename or "a data file"
        raise DataError(
            f"dataset={run_fields(cfg)['dataset']}: cannot read {where} ({e.strerror or e}); check "
            f"dataset.data_dir / dataset.path and the cache folder paths.cache_dir"
        ) from None
    spec = datamodule.spec  # all the task learns of the data
    if cfg.truncation.get("carry_across_batches") is True and not spec.stream:
        raise ConfigError(
            f"truncation.carry_across_batches=true needs a stream data set, whose batches continue "
            f"each other row by row (lm_*, sine, sin2cos); dataset={run_fields(cfg)['dataset']} has "
            f"independent (shuffled) sequences, so a carried state would leak between them. Set "
            f"truncation.carry_across_batches=false"
        )
    if (cfg.get("embedding") or {}).get("kind", "random") != "random" and spec.input_kind != "tokens":
        raise ConfigError(
            f"embedding.kind={cfg.embedding.kind} sets the initial vectors of tokens, but "
            f"dataset={run_fields(cfg)['dataset']} has feature inputs; drop the embedding override "
            f"(embedding=random)"
        )
    kind = get_class(cfg.task._target_).kind
    if kind != spec.task:
        raise ConfigError(
            f"dataset={run_fields(cfg)['dataset']} is a {spec.task!r} data set but "
            f"task={run_fields(cfg).get('task') or cfg.task._target_} trains {kind!r} models; "
            f"drop the task override (each data set's config chooses its task)"
        )
    check_truncation_length(cfg, datamodule, run_fields(cfg)["dataset"])
    cfg = sized(cfg, datamodule)  # model.params / model.state: the cell width that meets them
    # _convert_="object": the task gets plain Python objects (lists), not config nodes; the spec is handed over as
    # it is (`handed`).
    handed = {"spec": spec, "run_config": resolved_config(cfg)}
    model = make(cfg.task, "task", handed=handed, update=update, _convert_="object")
    if cfg.train and cfg.trainer.get("max_epochs") != 0:
        check_optimization(model.optimizer_factory, model.scheduler_factory, step=True)
    return datamodule, model


def build_loggers(
    cfg: DictConfig, wandb_id: str | None = None, wandb: bool = True, only_wandb: bool = False, **wandb_init: Any
) -> list:
    """The loggers of `cfg` (`wandb_id`: see build; wandb=False: all but W&B; only_wandb: W&B's alone, built with
    `wandb_init` besides its config, e.g. reinit="create_new" for a run of its own beside others)."""
    return [
        make(c, f"logger.{k}", **({**({"id": wandb_id} if wandb_id else {}), **wandb_init} if is_wandb(c) else {}))
        for k, c in (cfg.get("logger") or {}).items()
        if c and (wandb or not is_wandb(c)) and (is_wandb(c) or not only_wandb)
    ]


def build_trainer(
    cfg: DictConfig,
    wandb_id: str | None = None,
    callbacks: list[L.Callback] = (),
    datamodule: Any = None,
    loggers: list = (),
) -> L.Trainer:
    """The Trainer of `cfg`: its callbacks (the suite's own and `callbacks` added) and loggers (`loggers` added;
    `wandb_id`: see build); its step counts follow `datamodule`'s training loader where given (step_counts)."""
    extra_loggers = list(loggers)
    from lightning.pytorch.callbacks import Checkpoint, EarlyStopping

    from src.runs.callbacks import (
        EndProcessGroup,
        FiniteLoss,
        LearningCurve,
        ModelSummary,
        Throughput,
        WandbSummary,
    )

    cfg = budgeted(cfg)

    extra, callbacks = (
        list(callbacks),
        [make(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c],
    )
    for c in callbacks:  # EarlyStopping takes any patience and fails (or never stops) only when it is compared
        if isinstance(c, EarlyStopping) and (
            not isinstance(c.patience, int) or isinstance(c.patience, bool) or c.patience < 0
        ):
            raise ConfigError(
                f"callbacks.early_stopping.patience={c.patience!r} must be an integer >= 0 "
                f"(validation epochs without improvement before stopping)"
            )
    callbacks += [make(cfg.diagnostics, "diagnostics")] if cfg.get("diagnostics") else []  # diagnostics=gradients
    callbacks += [Throughput(), FiniteLoss(), WandbSummary(), LearningCurve(budget_updates(cfg)), EndProcessGroup()]
    callbacks += extra
    callbacks += [ModelSummary()] if cfg.trainer.get("enable_model_summary", True) else []  # no FLOPs column of 0s
    # The bar is progress= (conf/progress/); trainer.enable_progress_bar=false or progress=none: none at all.
    bar = cfg.trainer.get("enable_progress_bar", True) and bool(cfg.get("progress"))
    callbacks += [make(cfg.progress, "progress")] if bar else []
    loggers = [*build_loggers(cfg, wandb_id), *extra_loggers]
    # Without a checkpoint callback of ours (callbacks=none) no checkpoint at all: Lightning would add its own.
    # (A stacked job's MemberCheckpoints is one too: src/runs/seeds.py.)
    checkpoints = any(isinstance(c, Checkpoint) for c in callbacks)
    check_accelerator(cfg.trainer.get("accelerator"))
    trainer: L.Trainer = make(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=checkpoints,
        enable_progress_bar=bar,
        **(step_counts(cfg, getattr(datamodule, "batches_per_step", 1), datamodule) if datamodule else {}),
    )
    return trainer


def check_accelerator(accelerator: Any) -> None:
    """A GPU asked for where torch sees none, said in one line with the fix (Lightning's words name neither the
    setting nor the way out)."""
    import torch

    if str(accelerator).lower() not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if str(accelerator).lower() == "gpu" and torch.backends.mps.is_available():  # Lightning's "gpu": CUDA or MPS
        return
    build = "a CPU-only build of torch" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device found"
    raise ConfigError(
        f"trainer.accelerator={accelerator} (trainer=gpu, gpu_pool or ddp): torch sees no GPU on this machine "
        f"(torch {torch.__version__}: {build}); run on the CPU with trainer=cpu (or trainer.accelerator=cpu)"
    )


def batch_groups(cfg: DictConfig, per_step: int) -> dict[str, Any]:
    """The data module's arguments that make a Lightning step a group of `per_step` batches (update=grouped): its
    training loader hands the groups, applies trainer.limit_train_batches itself and keeps
    trainer.log_every_n_steps, both in batches (the Trainer gets its counts in steps: step_counts). {} for one
    batch per step."""
    if per_step == 1:
        return {}
    if not groups_batches(cfg):
        raise ConfigError(
            f"update.per_step={per_step}: the groups of batches come from the suite's loader "
            f"(src/data/tensors.py TensorDataModule), and dataset={cfg.dataset._target_} has its own; "
            f"set update.per_step=1 (or update=automatic)"
        )
    return {
        "batches_per_step": per_step,
        "train_batch_limit": cfg.trainer.get("limit_train_batches"),
        "train_log_interval": cfg.trainer.get("log_every_n_steps"),
    }


def groups_batches(cfg: DictConfig) -> bool:
    """Whether the data set's loader can hand groups of batches (the suite's TensorDataModule can); a target
    that does not import is left to the data set's own build to report."""
    from src.data.tensors import TensorDataModule

    try:
        return issubclass(get_class(cfg.dataset._target_), TensorDataModule)
    except (ImportError, ValueError, TypeError, AttributeError):  # make(cfg.dataset) names a bad target itself
        return True


def counted_in_batches(cfg: DictConfig) -> dict[str, int | float]:
    """The counts of batches (or updates) the config sets that a Lightning step of several batches could only
    honour rounded: trainer.val_check_interval (batches, or a fraction of the epoch's) and any callback's
    every_n_train_steps."""
    found = {"trainer.val_check_interval": cfg.trainer.get("val_check_interval")}
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig):
            found[f"callbacks.{name}.every_n_train_steps"] = node.get("every_n_train_steps")
    return {k: v for k, v in found.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}


def step_counts(cfg: DictConfig, per_step: int, datamodule: Any) -> dict[str, Any]:
    """The Trainer's counts in its own steps. With groups of `per_step` batches the loader applies the batch limit
    and counts given in batches become counts of steps (rounded up). The logging interval never exceeds the
    steps of an epoch, so a short epoch's train/ curves are not empty (and Lightning does not warn that they
    would be)."""
    counts: dict[str, Any] = {"limit_train_batches": None} if per_step > 1 else {}
    for key in ("val_check_interval", "log_every_n_steps"):
        value = cfg.trainer.get(key)
        if per_step > 1 and isinstance(value, int) and not isinstance(value, bool):
            counts[key] = -(-value // per_step)
    try:
        steps = len(datamodule.train_dataloader())
    except TypeError:  # a loader of the user's own without a length: Lightning's interval as configured
        return counts
    limit = None if per_step > 1 else cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        steps = min(steps, limit)
    elif isinstance(limit, float):
        steps = int(steps * limit)
    interval = counts.get("log_every_n_steps", cfg.trainer.get("log_every_n_steps") or 50)
    if 0 < steps < interval:
        counts["log_every_n_steps"] = steps
    return counts


def sized(cfg: DictConfig, datamodule: Any) -> DictConfig:
    """cfg, or with model.params / model.state a copy whose cell width meets them (src/models/sizing.py); the trial
    models are built under a forked RNG, so the run's own initialisation is that of its width given directly."""
    from src.models.sizing import sequence_steps, size_model

    if not any((cfg.get("model") or {}).get(k) is not None for k in ("params", "state")):
        return cfg
    import torch

    spec = datamodule.spec

    def build_task(trial: DictConfig) -> Any:
        return make(trial.task, "task", handed={"spec": spec, "run_config": {}}, _convert_="object")

    with torch.random.fork_rng(devices=[]):
        return size_model(cfg, build_task, sequence_steps(datamodule))


def is_wandb(node: DictConfig) -> bool:
    return str(node.get("_target_", "")).endswith("WandbLogger")


def update_choice(cfg: DictConfig) -> str:
    """How the config named the update strategy (`update=<choice>`): metrics.json's `update_reason` where the
    strategy gives no reason of its own."""
    choice = HydraConfig.get().runtime.choices.get("update") if HydraConfig.initialized() else None
    return f"update={choice or cfg['update'].get('_target_')}"


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data, resolved, without the hydra node (which tests compose in). Node by node, each
    resolved against the whole config: a masked copy of the config took twice as long, once per stacked member."""
    plain: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":
            continue
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            plain[key] = OmegaConf.to_container(node, resolve=True)
        else:
            plain[key] = "???" if OmegaConf.is_missing(cfg, key) else cfg[key]
    return plain


def resume_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint `ckpt_path` names (`last`: this run dir's checkpoints/last.ckpt), checked against this
    run's architecture; None without ckpt_path. The same check for `last` as for an explicit path."""
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last: {path} does not exist, so there is nothing to resume; run in the "
                f"dir of the run to resume (hydra.run.dir=<its dir>), give ckpt_path=<a .ckpt file>, "
                f"or drop ckpt_path to start afresh"
            )
    else:
        path = Path(cfg.ckpt_path).expanduser()
        if path.exists() and not path.is_file() and not path.is_dir():  # /dev/null, a FIFO: not "no such file"
            raise ConfigError(f"ckpt_path={path} {not_there(path)}; give a .ckpt file (or ckpt_path=last)")
    from src.records.checkpoints import check_compatible

    check_compatible(path, resolved_config(cfg), resuming=bool(cfg.train))
    return path


def make(node: DictConfig, group: str, handed: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs) for the config group `group`: a value the class refuses (torch's, Lightning's
    or the suite's own) is a ConfigError naming the group, not Hydra's wrapped traceback. `handed` arguments go to
    the class as they are: passed to instantiate, a dataclass becomes a config node and back (slow for a
    DataSpec: a language model's vocabulary becomes a node per token). Instantiated from a resolved copy: Hydra
    resolves the node it is given in place, and a `${stack}` inside the task would write the run's resolved values
    into the composed config, which is only read."""
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    try:
        if handed is None:
            return instantiate(node, **kwargs)
        return instantiate(node, _partial_=True, **kwargs)(**handed)
    except (InstantiationException, ValueError, TypeError, KeyError) as e:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        if (bad := user_error(e)) is not None:
            raise bad from None
        cause = (e.__cause__ or e) if isinstance(e, InstantiationException) else e
        if not isinstance(cause, (ValueError, TypeError, KeyError, ImportError, MisconfigurationException)):
            raise
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(
            f"{group}: {message} ({type(cause).__name__} from {node.get('_target_', group)}); fix the {group}.* value"
        ) from None


def update_strategy(cfg: DictConfig) -> Update:
    """How this run's optimizer updates run: the update group (conf/update/), instantiated, with the reason
    metrics.json records (update=auto gives its own), checked against the settings it must agree with."""
    from src.updates.base import Update
    from src.updates.truncated import Truncation

    node = cfg["update"]  # not cfg.update: that is the mapping's update() method
    picked = node.get("_target_") == "src.updates.auto.pick"
    seen = {"groups_batches": groups_batches(cfg), "counted_in_batches": counted_in_batches(cfg)} if picked else {}
    update = make(node, "update", **seen)
    if not isinstance(update, Update):
        raise ConfigError(
            f"update: {node.get('_target_')} built a {type(update).__name__}, not an update strategy "
            f"(src/updates/base.py Update); choose one of conf/update/"
        )
    choice = update_choice(cfg)
    truncated = Truncation.from_config(OmegaConf.to_container(cfg.truncation, resolve=True)) is not None
    if truncated and update.setting("truncation") is None:
        raise ConfigError(
            f"truncation=tbptt but {choice} runs full-BPTT updates; use update=auto, "
            f"update=truncated or update=grouped (which follow truncation), or truncation=none"
        )
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
    if accumulate != 1 and not update.automatic:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} cannot be combined with update={update.describe()}, "
            f"which steps the optimizer itself (each batch, or window, gets its own update); set one of them to 1 "
            f"(update=automatic accumulates)"
        )
    if update.setting("per_step", 1) > 1 and cfg.get("diagnostics"):
        raise ConfigError(
            f"update={update.describe()} ({update.setting('per_step')} updates per Lightning step) cannot be "
            f"combined with diagnostics, which watch single updates; set update.per_step=1 or update=auto"
        )
    return update


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}
