"""Gradient diagnostics: vanishing and exploding gradients made visible, per cell. Opt in with
`python -m src.train diagnostics=gradients` (conf/diagnostics/gradients.yaml); files go to <run dir>/diagnostics/.

1. Gradient flow through time: on a fixed batch (the first `samples` validation sequences), the norm of
   d loss / d h_t for every time step t, per layer and direction, before training and at the end (`flow_epochs`)
   -> gradient_flow.csv, gradient_flow.png, a W&B line plot. The norm is taken over the batch and the hidden
   units (the Frobenius norm of the [B, H] gradient at step t), through both paths out of h_t (the output
   and the recurrence); `grad_c` is the part carried back through LSTM's cell state alone (into c_t+1).
   With truncation=tbptt the curve is that of the batch's last update: the gradient of its window's loss,
   which reaches back only `truncation.steps` steps; earlier steps get no gradient and have no rows.
2. Gradient norm per optimizer step, before clipping, and whether clipping fired -> grad_norms.csv and the
   logged `diagnostics/grad_norm`, `diagnostics/clip_rate` (per epoch: the fraction of updates clipped).
3. State statistics at the end of training, on the same batch over the whole sequence: mean/std of h (and c)
   per step -> state_stats.csv; the fraction of saturated sigmoid gates (> 0.99 or < 0.01) per layer and
   gate -> gates.csv; and summary.json.

`plot_gradient_flow(run_dirs, out_png)` overlays the curves of several runs (one line per run, e.g. per cell);
`python -m src.diagnostics RUN_DIR... -o out.png` does the same from the command line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from src.common.errors import DataError, UserError
from src.common.files import atomic_write, atomic_write_text
from src.records.record import RecordError, read_record

# The measuring half (the callback, torch and Lightning) is src/diagnostics/measure.py, which imports this module:
# plotting finished runs and this module's command line start without torch.

SATURATED = 0.01  # a sigmoid gate above 1 - SATURATED or below SATURATED is saturated
FLOW_COLUMNS = ["epochs_done", "step", "layer", "direction", "t", "grad_h", "grad_c"]
NORM_COLUMNS = ["step", "epoch", "grad_norm", "clipped"]


# -- files --------------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


FLOW_INTS, FLOW_FLOATS = ("epochs_done", "step", "layer", "direction", "t"), ("grad_h", "grad_c")


def read_csv(path: Path, ints: Sequence[str] = (), floats: Sequence[str] = ()) -> list[dict]:
    """The rows of a CSV this module wrote, with the named columns as numbers (an empty float cell is None); a
    row that is not what this module writes is a DataError naming the file and line."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    typed = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            typed.append(
                {
                    **row,
                    **{k: int(row[k]) for k in ints},
                    **{k: float(row[k]) if row[k] not in (None, "") else None for k in floats},
                }
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{path}:{number}: not a row of the diagnostics ({type(e).__name__}: {e}); the file "
                f"was edited or damaged, run the diagnostics again"
            ) from None
    return typed


def _float(value: Any) -> float:
    return float(value) if value not in (None, "") else math.nan


def curve_name(layer: int, direction: int, bidirectional: bool = True) -> str:
    return f"layer {layer}" + (" bwd" if direction else " fwd" if bidirectional else "")


def plot_run(rows: Sequence[dict], out_png: Path, title: str) -> Path:
    """One run's curves: a colour per layer/direction, the earliest measurement dashed, the last solid."""
    steps = sorted({int(r["step"]) for r in rows})
    keys = sorted({(int(r["layer"]), int(r["direction"])) for r in rows})
    bidirectional = any(d for _, d in keys)
    fig, ax = _figure()
    for i, (layer, direction) in enumerate(keys):
        for step in steps:
            pts = [
                (int(r["t"]), _float(r["grad_h"]))
                for r in rows
                if int(r["step"]) == step and (int(r["layer"]), int(r["direction"])) == (layer, direction)
            ]
            epoch = next(int(r["epochs_done"]) for r in rows if int(r["step"]) == step)
            last = step == steps[-1]
            ax.plot(
                *zip(*pts),
                color=f"C{i}",
                linestyle="-" if last else "--",
                alpha=1.0 if last else 0.5,
                label=f"{curve_name(layer, direction, bidirectional=bidirectional)}, "
                + ("before training" if step == 0 else f"after epoch {epoch} (step {step})"),
            )
    _finish(ax, fig, title, out_png)
    return out_png


def _figure():
    # matplotlib's object API without pyplot: no GUI backend, no global figure registry, quicker to import.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), dpi=100)
    # Fixed margins, the legend outside on the right: tight_layout and legend(loc="best") cost seconds.
    fig.subplots_adjust(left=0.1, right=0.66, bottom=0.14, top=0.9)
    return fig, fig.add_subplot()


def _finish(ax, fig, title: str, out_png: Path) -> None:
    ax.set_yscale("log")  # zeros (a gradient that underflowed float32) are left out of a log axis
    ax.set_xlabel("time step t")
    ax.set_ylabel("||d loss / d h_t||")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png"))


# -- 4. several runs on one picture ---------------------------------------------------------------------------
def _run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run dirs with a gradient_flow.csv; a sweep dir stands for its job dirs."""
    found = []
    for path in map(Path, paths):
        if (path / "diagnostics" / "gradient_flow.csv").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(
                (p.parents[1] for p in path.glob("*/diagnostics/gradient_flow.csv")),
                key=lambda p: (len(p.name), p.name),
            )
    return found


def run_label(run_dir: Path) -> str:
    """The run's cell as chosen in the config (metrics.json), else as the diagnostics saw it."""
    metrics, summary = run_dir / "metrics.json", run_dir / "diagnostics" / "summary.json"
    if metrics.is_file():
        try:
            cell = read_record(metrics).get("cell")
        except RecordError as e:
            print(f"warning: {e}; labelled by its folder", file=sys.stderr)
            cell = None
        if cell:
            return str(cell)
    if summary.is_file():
        try:
            found = json.loads(summary.read_text())
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict) and isinstance(found.get("cell"), str):
            return found["cell"]
    return run_dir.name


def plot_gradient_flow(
    run_dirs: Iterable[str | Path],
    out_png: str | Path,
    at: str = "last",
    layer: int = 0,
    direction: int = 0,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """Overlay ||d loss / d h_t|| of several runs of one task, a colour per run (labelled by its cell).
    at: "last" (each run's last measurement), "init" (its first: before training) or "both" (first dashed,
    last solid). `run_dirs` may include sweep dirs (their jobs are taken). Runs without diagnostics are
    skipped; returns the PNG's path, or None when no run had any."""
    if at not in ("last", "init", "both"):
        raise ValueError(f"at={at!r} must be 'last', 'init' or 'both'")
    dirs = _run_dirs(run_dirs)
    if not dirs:
        return None
    fig, ax = _figure()
    for i, run in enumerate(dirs):
        rows = [
            r
            for r in read_csv(run / "diagnostics" / "gradient_flow.csv", FLOW_INTS, FLOW_FLOATS)
            if r["layer"] == layer and r["direction"] == direction
        ]
        if not rows:
            continue
        steps = sorted({r["step"] for r in rows})
        chosen = {"last": steps[-1:], "init": steps[:1], "both": sorted({steps[0], steps[-1]})}[at]
        label = labels[i] if labels else run_label(run)
        for step in chosen:
            pts = [(r["t"], _float(r["grad_h"])) for r in rows if r["step"] == step]
            final = step == steps[-1] and at != "init"
            when = "before training" if step == 0 else f"step {step}"
            ax.plot(
                *zip(*pts),
                color=f"C{i % 10}",
                linestyle="-" if final else "--",
                label=label if at != "both" else f"{label}, {when}",
            )
    default = (
        f"gradient flow, {curve_name(layer, direction)}"
        + {"init": ", before training", "last": ", end of training", "both": ""}[at]
    )
    _finish(ax, fig, title or default, Path(out_png))
    return Path(out_png)


def flow_decay(rows: Sequence[dict]) -> dict[str, float | None]:
    """Per layer/direction at the last measurement: grad_h where the gradient enters the sequence last (its
    earliest step for the forward direction) over grad_h where it enters first; < 1 means it shrank."""
    last = max(int(r["step"]) for r in rows)
    out = {}
    for key in sorted({(int(r["layer"]), int(r["direction"])) for r in rows}):
        curve = sorted(
            (int(r["t"]), _float(r["grad_h"]))
            for r in rows
            if int(r["step"]) == last and (int(r["layer"]), int(r["direction"])) == key
        )
        near, far = (curve[-1][1], curve[0][1]) if key[1] == 0 else (curve[0][1], curve[-1][1])
        out[curve_name(*key)] = far / near if near > 0 else None
    return out


def _mean_by_layer(rows: Sequence[dict], column: str) -> dict[str, float | None]:
    out = {}
    for key in sorted({(r["layer"], r["direction"]) for r in rows}):
        values = [r[column] for r in rows if (r["layer"], r["direction"]) == key and r[column] is not None]
        out[curve_name(*key)] = sum(values) / len(values) if values else None
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.diagnostics",
        description="Overlay the gradient-flow curves of several runs (one line per "
        "run) from their diagnostics/gradient_flow.csv.",
    )
    parser.add_argument("runs", nargs="+", help="run dirs, or sweep dirs (their job dirs are taken)")
    parser.add_argument("-o", "--out", required=True, help="the PNG to write")
    parser.add_argument(
        "--at",
        choices=["last", "init", "both"],
        default="last",
        help="each run's last measurement, its first (before training), or both",
    )
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--direction", type=int, choices=[0, 1], default=0)
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        path = plot_gradient_flow(
            args.runs, args.out, at=args.at, layer=args.layer, direction=args.direction, title=args.title
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {args.out} ({e.strerror or e}); choose another with -o <file.png>", file=sys.stderr)
        return 2
    if path is None:
        print("error: no run dir with diagnostics/gradient_flow.csv among " + " ".join(args.runs), file=sys.stderr)
        return 2
    print(path)
    return 0
