"""Matched sizes: `model.params=<int>` (parameters of the whole model) or `model.state=<int>` (floats of recurrent
state per sequence) instead of a width. The cell's width (`cell.hidden_size`: the layer's, or for the block cells
the block's) is chosen so that the count lands within TOLERANCE of the target, or the run stops with one line that
names the target, the nearest counts reachable and why.

The counts are the model's own: the task is built at a trial width and counted (parameters), or run over one
sequence of the data set's length (state: every float of the state the stack hands back, convolution tails and a
key/value cache included; attention's grows with the sequence). Settings tied to the width keep their ratio to it
(`cell.proj_size` of lstmp). Both targets at once: the width meets model.params and model.state is checked there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from src.common.errors import ConfigError

TOLERANCE = 0.03  # |count - target| <= 3% of the target
MAX_WIDTH = 1 << 16
# Settings that scale with the width (their configured ratio to cell.hidden_size is kept).
WITH_WIDTH = ("proj_size",)


def count_floats(state: Any) -> int:
    """Floats held by a recurrent state of any shape (tensors, nested tuples and lists; None holds none)."""
    if isinstance(state, torch.Tensor):
        return state.numel() if state.is_floating_point() or state.is_complex() else 0
    if isinstance(state, (tuple, list)):
        return sum(count_floats(s) for s in state)
    if isinstance(state, dict):
        return sum(count_floats(s) for s in state.values())
    return 0


def sequence_steps(datamodule: Any) -> int:
    """The length of one training sequence: a stream's window (bptt), else the training tensors' time axis."""
    if getattr(datamodule, "stream", False):
        return int(datamodule.bptt)
    x = datamodule.splits["train"][0]
    return int(x.shape[1]) if x.ndim >= 2 else 1


@torch.no_grad()
def state_floats(model: Any, steps: int) -> int:
    """Floats of recurrent state the model's stack carries per sequence after `steps` steps (batch of one)."""
    spec = model.spec
    if spec.input_kind == "tokens":
        x = torch.ones(1, steps, dtype=torch.long)
    else:
        x = torch.zeros(1, steps, spec.input_size)
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        _, state = model.encode(x.to(device))
    finally:
        model.train(training)
    return count_floats(state)


def targets(cfg: DictConfig) -> dict[str, int]:
    """{"params": n, "state": n} for the targets the config sets (model.params, model.state), checked."""
    model = cfg.get("model") or {}
    found = {}
    for key in ("params", "state"):
        value = model.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key}={value!r} must be a positive integer (or null: the width sets the size)")
        found[key] = value
    if found and cfg.cell.get("hidden_size") is None:
        raise ConfigError(f"model.{next(iter(found))}: cell {cfg.cell._target_} has no hidden_size to choose")
    return found


def with_width(cfg: DictConfig, width: int) -> DictConfig:
    """A copy of cfg whose cell is `width` wide; settings tied to the width keep their ratio to it."""
    sized = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    base = cfg.cell.hidden_size
    with open_dict(sized):
        for key in WITH_WIDTH:
            value = cfg.cell.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                sized.cell[key] = max(1, round(value * width / base))
        sized.cell.hidden_size = width
    return sized


class Counter:
    """count(width) -> the quantity at that width, or None where the cell refuses the width (num_heads must divide
    it, ...); memoised."""

    def __init__(self, measure: Callable[[int], int]):
        self.measure, self.seen = measure, {}

    def __call__(self, width: int) -> int | None:
        if width not in self.seen:
            try:
                self.seen[width] = self.measure(width)
            except ConfigError:
                self.seen[width] = None
        return self.seen[width]


def nearest_valid(count: Counter, width: int, step: int, limit: int = 64) -> int | None:
    """The first width from `width` on (going by `step`) that the cell accepts, within `limit` tries."""
    for w in range(width, width + step * limit, step):
        if 1 <= w <= MAX_WIDTH and count(w) is not None:
            return w
    return None


def choose_width(count: Counter, target: int, what: str) -> tuple[int, int]:
    """(width, its count): the accepted width whose count is nearest `target`; ConfigError if none is within
    TOLERANCE. `what` names the target in the message (`model.params=100000 (parameters, cell LSTM)`).

    Counts grow with the width, about quadratically (parameters) or linearly (state): a quadratic through three
    widths gives a first guess, then the neighbouring accepted widths are walked to bracket the target."""
    low = nearest_valid(count, 1, 1)
    if low is None:
        raise ConfigError(f"{what} cannot be met: the cell accepts no width from 1 to 64; check its other settings")
    if count(low) >= target:
        if count(low) - target <= TOLERANCE * target:
            return low, count(low)
        raise ConfigError(
            f"{what} cannot be met: the smallest width the cell accepts (hidden_size {low}) already gives "
            f"{count(low):,}; the parts that do not depend on the width (embedding, head) set a floor. Ask for more"
        )
    points = sorted({w for w in (nearest_valid(count, x, 1) for x in (low, 4 * low + 16, 16 * low + 112)) if w})
    guess = _solve([float(w) for w in points], [float(count(w)) for w in points], float(target))
    width = nearest_valid(count, min(max(round(guess), low), MAX_WIDTH), 1) or low
    below, above = None, None
    for _ in range(4096):  # walk to the two accepted widths around the target
        if count(width) >= target:
            above = width
            step = nearest_valid(count, width - 1, -1) if width > low else None
            if step is None or count(step) < target:
                below = step
                break
        else:
            below = width
            step = nearest_valid(count, width + 1, 1)
            if step is None:
                raise ConfigError(
                    f"{what} cannot be met: the largest width tried (hidden_size {width}) gives {count(width):,}"
                )
            if count(step) >= target:
                above = step
                break
        width = step
    candidates = [w for w in (below, above) if w is not None]
    best = min(candidates, key=lambda w: (abs(count(w) - target), w))
    if abs(count(best) - target) > TOLERANCE * target:
        gap = [w for w in range(below + 1, above) if count(w) is None] if below and above else []
        why = f" (the cell refuses the widths between: {_widths(gap)})" if gap else " (one width step apart)"
        raise ConfigError(
            f"{what} cannot be met within {TOLERANCE:.0%}: the nearest widths give {count(below):,} (hidden_size "
            f"{below}) and {count(above):,} (hidden_size {above}){why}; ask for a size nearer one of them"
        )
    return best, count(best)


def _solve(ws: list[float], counts: list[float], target: float) -> float:
    """The width where the quadratic (or line) through the points (w, count) reaches `target`."""
    import numpy as np

    a, b, c = (
        np.polyfit(ws, counts, 2) if len(ws) >= 3 else (0.0, *np.polyfit(ws, counts, 1)) if len(ws) == 2 else (0, 0, 0)
    )
    if abs(a) > 1e-12:
        disc = b * b - 4 * a * (c - target)
        if disc >= 0:
            return max((-b + disc**0.5) / (2 * a), (-b - disc**0.5) / (2 * a))
    return (target - c) / b if b else ws[-1]


def _widths(ws: list[int]) -> str:
    return ", ".join(map(str, ws[:6])) + (", ..." if len(ws) > 6 else "")


def cell_name(cfg: DictConfig) -> str:
    """The cell as the command line names it (cell=lstm), else its class."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and (name := HydraConfig.get().runtime.choices.get("cell")):
        return str(name)
    return str(cfg.cell._target_).rsplit(".", 1)[-1]


def size_model(cfg: DictConfig, build_task: Callable[[DictConfig], Any], steps: int) -> DictConfig:
    """cfg itself without model.params / model.state; else a copy whose cell width meets them (src/runs/build.py).
    `build_task(cfg)` builds the task module that cfg describes (for counting); `steps`: one sequence's length."""
    wanted = targets(cfg)
    if not wanted:
        return cfg
    cell = cell_name(cfg)

    # The trial configs without the hydra node (copying it for every trial is most of a trial's cost).
    trial = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])

    def params(width: int) -> int:
        try:  # on the meta device: shapes only, no memory and no initialisation (the counts are the same)
            with torch.device("meta"):
                return build_task(with_width(trial, width)).num_params
        except ConfigError:
            raise
        except Exception:  # a class that computes on its weights while it is built: count a real one
            return build_task(with_width(trial, width)).num_params

    def state(width: int) -> int:
        return state_floats(build_task(with_width(trial, width)), steps)

    by = "params" if "params" in wanted else "state"
    build_task(cfg)  # the configured width must build: an error there is the config's, not the size's
    count = Counter(params if by == "params" else state)
    unit = {"params": "parameters", "state": "floats of state per sequence"}
    width, _ = choose_width(count, wanted[by], f"model.{by}={wanted[by]} ({unit[by]}, cell {cell})")
    if by == "params" and "state" in wanted:
        got = state(width)
        if abs(got - wanted["state"]) > TOLERANCE * wanted["state"]:
            raise ConfigError(
                f"model.state={wanted['state']} cannot be met together with model.params={wanted['params']} "
                f"(cell {cell}): the width that gives the parameters (hidden_size {width}) holds {got:,} floats of "
                f"state, and one width cannot set both; give one of them"
            )
    return with_width(cfg, width)
