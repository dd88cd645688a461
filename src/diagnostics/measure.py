"""The measuring half of the gradient diagnostics (src/diagnostics/report.py): the Lightning callback and the torch code
it runs. Kept apart so that reading, plotting and the `python -m src.diagnostics` command import neither torch
nor Lightning; conf/diagnostics/gradients.yaml names this module's GradientDiagnostics."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from src.common.errors import ConfigError
from src.common.files import atomic_write_json
from src.data.tensors import Batch
from src.diagnostics.report import (
    FLOW_COLUMNS,
    FLOW_FLOATS,
    FLOW_INTS,
    NORM_COLUMNS,
    SATURATED,
    _mean_by_layer,
    curve_name,
    flow_decay,
    plot_run,
    read_csv,
    write_csv,
)
from src.models.stack import reverse_padded
from src.models.trace import LayerTrace, trace_stack

log = logging.getLogger(__name__)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module):
    """Eval mode (no dropout) for a measurement inside training, restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _sq_norms(grads: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor:
    """Per step and sample squared norms [B, T] of gradients listed per step (None: no gradient reached)."""
    return torch.stack(
        [
            (g.reshape(y.shape).pow(2).sum(-1) if g is not None else y.new_zeros(y.shape[0]))
            for g, y in zip(grads, like)
        ],
        dim=1,
    )


def _to_time_order(per_step: torch.Tensor, trace: LayerTrace, lengths: torch.Tensor | None) -> torch.Tensor:
    """[B, T] in processing order -> in time order (the backward direction processed each sequence reversed)."""
    return reverse_padded(per_step[..., None], lengths)[..., 0] if trace.direction else per_step


# -- 1. gradient flow through time ---------------------------------------------------------------------------
def gradient_flow(task, batch: Batch) -> list[dict[str, Any]]:
    """Rows (layer, direction, t, grad_h, grad_c) of ||d loss / d h_t|| on `batch`, computed as the task trains:
    over the whole sequence, or under truncation over the last update's window (see the module docstring)."""
    total = batch.x.shape[1]
    truncation = task.update.setting("truncation")
    windows = truncation.windows(total) if truncation is not None else [(0, 0, total)]
    lengths = batch.lengths if truncation is None else None
    with evaluating(task), torch.enable_grad():
        for start, t0, t1 in reversed(windows):  # the last window with a target (many-to-one: the final one)
            state = None
            if start:  # the state the window starts from, detached as in training
                with torch.no_grad():
                    state = task.encode(batch.x[:, :start], None, None)[1]
            outputs, traces = trace_stack(task.stack, task.encoder(batch.x[:, start:t1]), lengths, state)
            result = task.loss(task.head(outputs[:, t0 - start :], lengths), batch, t0, t1)
            if result is not None:
                break
        else:
            return []
        nodes = [n for tr in traces for n in (*tr.outputs, *tr.h, *tr.c) if n is not None]
        found = dict(zip(map(id, nodes), torch.autograd.grad(result[0], nodes, allow_unused=True)))
    rows = []
    for tr in traces:
        grad = lambda seq: [found.get(id(n)) if n is not None else None for n in seq]  # noqa: E731
        g_out, g_h = grad(tr.outputs), grad(tr.h)
        # Both paths out of h_t: into the next layer/head (y_t) and into the next step (the state's h).
        g_total = [
            go if gh is None else (gh.reshape(go.shape) if go is None else go + gh.reshape(go.shape))
            for go, gh in zip(g_out, g_h)
        ]
        h_norm = _to_time_order(_sq_norms(g_total, tr.outputs), tr, lengths).sum(0).sqrt()
        c_norm = [None] * len(h_norm)
        if any(c is not None for c in tr.c):
            c_norm = _to_time_order(_sq_norms(grad(tr.c), tr.outputs), tr, lengths).sum(0).sqrt().tolist()
        for k, (h_value, c_value) in enumerate(zip(h_norm.tolist(), c_norm)):
            rows.append(
                {"layer": tr.layer, "direction": tr.direction, "t": start + k, "grad_h": h_value, "grad_c": c_value}
            )
    return rows


# -- 3. state statistics ----------------------------------------------------------------------------------
def state_statistics(task, batch: Batch) -> tuple[list[dict], list[dict]]:
    """(per-step rows of h/c mean and std, per-gate saturation rows) on `batch`, full sequence, no truncation.
    Padded steps are left out."""
    with evaluating(task), torch.no_grad():
        _, traces = trace_stack(task.stack, task.encoder(batch.x), batch.lengths, None, gates=True)
    total = batch.x.shape[1]
    valid = (
        torch.ones(batch.x.shape[0], total, dtype=torch.bool, device=batch.x.device)
        if batch.lengths is None
        else torch.arange(total, device=batch.x.device)[None, :] < batch.lengths.to(batch.x.device)[:, None]
    )

    def in_time(values: list[torch.Tensor], trace: LayerTrace) -> torch.Tensor:  # [B, T, H] in time order
        seq = torch.stack([v.reshape(trace.outputs[0].shape) for v in values], dim=1)
        return reverse_padded(seq, batch.lengths) if trace.direction else seq

    def mean_std(seq: torch.Tensor | None) -> tuple[list, list]:  # per step, over real samples and units
        if seq is None:
            return [None] * total, [None] * total
        weight = valid[..., None].to(seq.dtype)
        count = weight.sum((0, 2)) * seq.shape[-1]
        mean = (seq * weight).sum((0, 2)) / count
        var = ((seq - mean[None, :, None]).pow(2) * weight).sum((0, 2)) / count
        empty = count == 0  # a step that is padding in every sequence
        return (
            [None if e else m for m, e in zip(mean.tolist(), empty.tolist())],
            [None if e else v for v, e in zip(var.sqrt().tolist(), empty.tolist())],
        )

    stats, gates = [], []
    for tr in traces:
        h_mean, h_std = mean_std(in_time(tr.outputs, tr))
        c_mean, c_std = mean_std(in_time(tr.c, tr) if all(v is not None for v in tr.c) else None)
        stats += [
            {
                "layer": tr.layer,
                "direction": tr.direction,
                "t": t,
                "h_mean": h_mean[t],
                "h_std": h_std[t],
                "c_mean": c_mean[t],
                "c_std": c_std[t],
            }
            for t in range(total)
        ]
        counts = {"high": 0, "low": 0, "n": 0}
        for name, values in tr.gates.items():
            seq = torch.stack([v.reshape(v.shape[0], -1) for v in values], dim=1)  # [B, T, width], any width
            g = (reverse_padded(seq, batch.lengths) if tr.direction else seq)[valid]
            high, low, n = int((g > 1 - SATURATED).sum()), int((g < SATURATED).sum()), g.numel()
            gates.append(_gate_row(tr, name, high, low, n))
            for key, value in (("high", high), ("low", low), ("n", n)):
                counts[key] += value
        if counts["n"]:
            gates.append(_gate_row(tr, "all", counts["high"], counts["low"], counts["n"]))
    return stats, gates


def _gate_row(tr: LayerTrace, gate: str, high: int, low: int, n: int) -> dict:
    return {
        "layer": tr.layer,
        "direction": tr.direction,
        "gate": gate,
        "saturated": (high + low) / n,
        "above_0.99": high / n,
        "below_0.01": low / n,
    }


# -- the callback ---------------------------------------------------------------------------------------------
class GradientDiagnostics(L.Callback):
    """See the module docstring. Measures on global rank 0 only (after the all-reduce every rank holds the same
    gradients); files are rewritten atomically after every epoch, so an interrupted run keeps what it measured.

    flow_epochs: when to measure the gradient flow, in completed epochs: 0 = before the first update,
        k = after epoch k, -1 = at the end of training (also after early stopping).
    samples: sequences in the fixed batch (the first of the validation split, or of the first training batch
        when there is no data module).
    """

    def __init__(
        self,
        out_dir: str | None = None,
        flow_epochs: Sequence[int] = (0, -1),
        samples: int = 64,
        grad_norms: bool = True,
        state_stats: bool = True,
    ):
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ConfigError(f"diagnostics.samples={samples!r} must be a positive integer (sequences measured)")
        if isinstance(flow_epochs, (str, bytes)) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= -1 for e in flow_epochs
        ):
            raise ConfigError(
                f"diagnostics.flow_epochs={flow_epochs!r} must be a list of completed-epoch counts "
                f"(0 = before training, -1 = the end), e.g. [0, -1]"
            )
        for name, value in (("grad_norms", grad_norms), ("state_stats", state_stats)):
            if not isinstance(value, bool):
                raise ConfigError(f"diagnostics.{name}={value!r} must be true or false")
        self.out_dir = Path(out_dir) if out_dir else None
        self.flow_epochs, self.samples = set(flow_epochs), samples
        self.grad_norms, self.state_stats = grad_norms, state_stats
        self.batch: Batch | None = None
        self.flow_rows: list[dict] = []
        self.norms: list[torch.Tensor] = []  # this epoch's per-update norms, kept on the device until it ends
        self.clipped: list[torch.Tensor] = []
        self.norm_steps: list[tuple[int, int]] = []
        self.logged_upto = 0
        self.norm_rows: list[dict] = []
        self.summary: dict[str, Any] = {}

    # -- where and what --------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.out_dir is None:
            self.out_dir = Path(trainer.default_root_dir) / "diagnostics"

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step and trainer.is_global_zero:
            self._reload(trainer.global_step)

    def _reload(self, step: int) -> None:
        """A resumed run: keep what the interrupted one measured before `step` (later rows are measured again)."""
        flow, norms = self.out_dir / "gradient_flow.csv", self.out_dir / "grad_norms.csv"
        if flow.is_file():
            self.flow_rows = [r for r in read_csv(flow, FLOW_INTS, FLOW_FLOATS) if r["step"] < step]
        if norms.is_file():
            self.norm_rows = [
                r for r in read_csv(norms, ["step", "epoch", "clipped"], ["grad_norm"]) if r["step"] < step
            ]

    def _fixed_batch(self, trainer: L.Trainer, fallback: Any) -> Batch:
        datamodule = trainer.datamodule
        source = next(iter(datamodule.val_dataloader())) if datamodule is not None else fallback
        return Batch(
            *(None if t is None else t[: self.samples].detach().to(trainer.strategy.root_device) for t in source)
        )

    def _describe(self, pl_module) -> dict[str, Any]:
        stack = pl_module.stack
        cell = stack.rnn.rnn.mode.lower() if stack.fused else type(stack.layers[0][0]).__name__
        trunc = pl_module.update.setting("truncation")
        return {
            "cell": cell,
            "depth": stack.depth,
            "bidirectional": stack.bidirectional,
            "truncation_steps": trunc.steps if trunc else None,
            "samples": len(self.batch.x),
            "seq_len": int(self.batch.x.shape[1]),
        }

    # -- gradient flow ------------------------------------------------------------------------------------------
    def _measure_flow(self, trainer: L.Trainer, pl_module, epoch: int) -> None:
        """Measure at the current weights, after `epoch` completed epochs."""
        step = trainer.global_step
        if self.flow_rows and int(self.flow_rows[-1]["step"]) == step:
            return  # already measured at these weights
        rows = [{"epochs_done": epoch, "step": step, **r} for r in gradient_flow(pl_module, self.batch)]
        self.flow_rows += rows
        write_csv(self.out_dir / "gradient_flow.csv", self.flow_rows, FLOW_COLUMNS)
        self._wandb_flow(trainer, rows)

    def _plot(self, trainer: L.Trainer) -> None:
        # Once, at the end: drawing costs seconds, more than a measurement (the CSV has every one meanwhile).
        png = plot_run(
            self.flow_rows,
            self.out_dir / "gradient_flow.png",
            f"gradient flow: {self.summary['cell']}, depth {self.summary['depth']}"
            + (", bi" if self.summary["bidirectional"] else ""),
        )
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log(
                    {"diagnostics/gradient_flow_png": wandb.Image(str(png)), "trainer/global_step": trainer.global_step}
                )

    def _wandb_flow(self, trainer: L.Trainer, rows: list[dict]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            import wandb

            keys = sorted({(r["layer"], r["direction"]) for r in rows})
            xs, ys = [], []
            for key in keys:
                pts = [
                    (r["t"], math.log10(r["grad_h"]) if r["grad_h"] > 0 else None)
                    for r in rows
                    if (r["layer"], r["direction"]) == key
                ]
                xs.append([t for t, _ in pts])
                ys.append([v for _, v in pts])
            step = trainer.global_step
            chart = wandb.plot.line_series(
                xs=xs,
                ys=ys,
                keys=[curve_name(*k) for k in keys],
                title=f"log10 ||d loss / d h_t|| at step {step}",
                xname="t",
            )
            logger.experiment.log({"diagnostics/gradient_flow": chart, "trainer/global_step": step})

    # -- gradient norms before clipping -------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        # Callbacks run this hook before the module's (where truncation clips) and before Lightning's own
        # clipping (automatic optimization), after AMP has unscaled: these are the gradients clipping sees.
        if not (self.grad_norms and trainer.is_global_zero):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)  # the norm clip_grad_norm_ compares
        clip_val, algorithm = self._clipping(trainer, pl_module)
        if not clip_val:
            clipped = torch.zeros((), dtype=torch.bool, device=norm.device)
        elif algorithm == "value":
            clipped = torch.stack([g.abs().max() for g in grads]).max() > clip_val
        else:
            clipped = norm > clip_val
        self.norms.append(norm.detach())
        self.clipped.append(clipped)
        self.norm_steps.append((trainer.global_step, trainer.current_epoch))

    @staticmethod
    def _clipping(trainer: L.Trainer, pl_module) -> tuple[float | None, str]:
        """The clip value and algorithm in force: the update strategy's (update.gradient_clip_*), for every
        strategy."""
        value = pl_module.update.setting("gradient_clip_val")
        algorithm = pl_module.update.setting("gradient_clip_algorithm")
        return value, str(algorithm or "norm")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.batch is not None or not trainer.is_global_zero:
            return
        self.batch = self._fixed_batch(trainer, batch)
        self.summary = self._describe(pl_module)
        if 0 in self.flow_epochs and trainer.global_step == 0:
            self._measure_flow(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Straight to the loggers every log_every_n_steps batches: a self.log call per step costs milliseconds
        # (measured: a few % of an LSTM step on CPU) for values Lightning would only write at that interval.
        if (
            self.grad_norms
            and len(self.norms) > self.logged_upto
            and (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0
        ):
            recent = torch.stack(self.norms[self.logged_upto :]).mean().item()  # updates since the last point
            for logger in trainer.loggers:
                logger.log_metrics({"diagnostics/grad_norm": recent}, step=trainer.global_step)
            self.logged_upto = len(self.norms)

    def _flush_norms(self) -> None:
        if not self.norms:
            return
        norms = torch.stack(self.norms).tolist()  # one device sync per epoch
        clipped = torch.stack(self.clipped).tolist()
        self.norm_rows += [
            {"step": s, "epoch": e, "grad_norm": n, "clipped": int(c)}
            for (s, e), n, c in zip(self.norm_steps, norms, clipped)
        ]
        self.norms, self.clipped, self.norm_steps, self.logged_upto = [], [], [], 0
        write_csv(self.out_dir / "grad_norms.csv", self.norm_rows, NORM_COLUMNS)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if self.norms:
            pl_module.log("diagnostics/clip_rate", torch.stack(self.clipped).float().mean(), rank_zero_only=True)
            pl_module.log("diagnostics/grad_norm_max", torch.stack(self.norms).max(), rank_zero_only=True)
            self._flush_norms()
        if self.batch is not None and trainer.current_epoch + 1 in self.flow_epochs:
            self._measure_flow(trainer, pl_module, trainer.current_epoch + 1)

    # -- the end ------------------------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        # A run that diverged (src.runs.callbacks.FiniteLoss) is the one whose gradients matter most: keep them.
        if trainer.is_global_zero and self.batch is not None:
            try:
                self._flush_norms()
                if self.flow_rows:
                    self._plot(trainer)
            except Exception as e:  # never hide the exception that stopped the run
                log.warning(f"diagnostics: could not write the files after the run failed: {e}")

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.batch is None:
            return
        self._flush_norms()
        if -1 in self.flow_epochs:
            self._measure_flow(trainer, pl_module, trainer.current_epoch)
        if self.flow_rows:
            self._plot(trainer)
        summary = dict(self.summary)
        if self.norm_rows:
            norms = sorted(r["grad_norm"] for r in self.norm_rows)
            summary.update(
                updates=len(norms),
                clipped=sum(r["clipped"] for r in self.norm_rows),
                grad_norm_median=norms[len(norms) // 2],
                grad_norm_max=norms[-1],
            )
        if self.flow_rows:
            summary["flow_decay"] = flow_decay(self.flow_rows)
        if self.state_stats:
            stats, gates = state_statistics(pl_module, self.batch)
            write_csv(
                self.out_dir / "state_stats.csv",
                stats,
                ["layer", "direction", "t", "h_mean", "h_std", "c_mean", "c_std"],
            )
            write_csv(
                self.out_dir / "gates.csv",
                gates,
                ["layer", "direction", "gate", "saturated", "above_0.99", "below_0.01"],
            )
            summary["saturated"] = {
                curve_name(g["layer"], g["direction"]): g["saturated"] for g in gates if g["gate"] == "all"
            }
            summary["h_std"] = _mean_by_layer(stats, "h_std")
        atomic_write_json(self.out_dir / "summary.json", summary)
        metrics = {f"diagnostics/saturated/{k.replace(' ', '_')}": v for k, v in summary.get("saturated", {}).items()}
        for logger in trainer.loggers:
            if metrics:
                logger.log_metrics(metrics, step=trainer.global_step)
