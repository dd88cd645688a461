"""python -m src.bench cells [--quick] [--threads N] [--device cpu|cuda] [--reps N] [--jit-both] [--long-t T ...]

Forward + backward time per iteration (median) of every cell in conf/cell/ (each Greff variant separately),
built as training builds it (its config -> RecurrentStack, one layer, one direction, input gradients included),
against torch's fused LSTM in the same run, at two sizes:
    fastrnns: T=100, B=64, input = hidden = 512   (the standard fastrnns size)
    tutorial: T=50,  B=100, input 16, hidden 32   (the tutorials' text classifier)
and the scan cells (minGRU, minLSTM, or those --long-cells names, e.g. lru rglru mamba mlstm; parallel form and
sequential loop) against the fused GRU on long sequences (B=64, input = hidden = 256).

Implementations are timed in interleaved rounds (one iteration of each, then the next round), so a machine
that is busy for a while slows them all alike. Cells with a `jit` setting run as configured (auto: TorchScript
on GPU, eager on CPU), and so do the scan cells (scan=auto: parallel on GPU, sequential on CPU) at the two
sizes; `--jit-both` times each jit cell both ways, which is what tells whether TorchScript helps; on long
sequences the scan cells are timed both ways. Writes benchmarks/cells-<cpu|cuda>.json and .md
(cells-cpu-quick.json etc. for partial runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from src.bench import report
from src.common.paths import CONF_DIR

# torch and the models are imported in the functions that use them: `--help` answers without them.
if TYPE_CHECKING:
    import torch

    from src.models.stack import RecurrentStack

CELL_CONF = CONF_DIR / "cell"
SIZES = {"fastrnns": dict(T=100, B=64, I=512, H=512), "tutorial": dict(T=50, B=100, I=16, H=32)}
LONG = dict(B=64, I=256, H=256)
FUSED = {"rnn", "rnn_relu", "lstm", "gru"}  # torch's own (cuDNN on GPU, oneDNN/ATen on CPU)


def cell_factories(
    hidden: int, only: set[str] | None, jit_both: bool = False, scan_both: bool = False
) -> dict[str, Callable]:
    """name -> cell factory (what Hydra gives the stack) for every config in conf/cell, at this hidden size."""
    from hydra.utils import instantiate

    from src.models.cells.greff import VARIANTS

    out = {}
    for path in sorted(CELL_CONF.glob("*.yaml")):
        name = path.stem
        cfg = OmegaConf.load(path)
        cfg.hidden_size = hidden
        if "proj_size" in cfg:
            cfg.proj_size = hidden // 2
        variants = [{"variant": v} for v in VARIANTS] if name == "lstm_variant" else [{}]
        for extra in variants:
            label = f"{name}:{extra['variant']}" if extra else name
            if only and name not in only and label not in only:
                continue
            if scan_both and "scan" in cfg:
                for scan in ("parallel", "sequential"):
                    out[f"{label} ({scan})"] = instantiate(OmegaConf.merge(cfg, extra, {"scan": scan}))
                continue
            if jit_both and "jit" in cfg:
                for jit, how in ((True, "TorchScript"), (False, "eager")):
                    out[f"{label} ({how})"] = instantiate(OmegaConf.merge(cfg, extra, {"jit": jit}))
                continue
            out[label] = instantiate(OmegaConf.merge(cfg, extra))
    return out


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ms(fns: dict[str, Callable], device: torch.device, warmup: int, reps: int) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):  # TorchScript's profiling executor optimises on the 2nd call
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(stack: RecurrentStack, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        stack.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = stack(x)
        out.float().sum().backward()

    return run


def kind(name: str, device: torch.device) -> str:
    base = name.split(":")[0].split(" ")[0]
    if base in FUSED:
        return "fused (torch)"
    if name.endswith("(no graphs)"):
        return kind(name[: -len(" (no graphs)")], device).replace(" in CUDA graphs", "")
    explicit = {
        "(parallel)": "parallel scan",
        "(sequential)": "sequential loop",
        "(TorchScript)": "TorchScript loop",
        "(eager)": "eager loop",
    }
    for suffix, what in explicit.items():
        if name.endswith(suffix):
            return what
    if base in ("mingru", "minlstm"):  # scan=auto, compile=auto
        return "parallel scan, torch.compile" if device.type == "cuda" else "sequential loop"
    if base in ("lru", "mamba", "rglru"):  # scan=auto
        return "chunked parallel scan" if device.type == "cuda" else "sequential loop"
    modern = {"mlstm": "chunkwise parallel form", "slstm": "eager loop", "attention": "attention (no time loop)"}
    if base in modern:
        return modern[base]
    return "TorchScript loop in CUDA graphs" if device.type == "cuda" else "eager loop"  # jit=auto


def bench_sizes(args, device: torch.device) -> list[dict]:
    import torch

    from src.models.stack import RecurrentStack

    rows = []
    sizes = ["tutorial"] if args.quick else list(SIZES)
    for size in sizes:
        T, B, I, H = (SIZES[size][k] for k in "TBIH")
        torch.manual_seed(0)
        x = torch.randn(B, T, I, device=device, requires_grad=True)
        cells = cell_factories(H, set(args.cells) if args.cells else None, jit_both=args.jit_both)
        cells.setdefault("lstm", cell_factories(H, {"lstm"})["lstm"])  # the yardstick is always timed
        fns = {name: fwd_bwd(RecurrentStack(c, input_size=I).to(device), x) for name, c in cells.items()}
        if device.type == "cuda" and not args.no_graphs_too:  # what the CUDA graphs of loop cells buy
            fns.update(
                {
                    f"{name} (no graphs)": fwd_bwd(RecurrentStack(c, input_size=I, cuda_graphs=False).to(device), x)
                    for name, c in cells.items()
                    if name.split(":")[0].split(" ")[0] not in FUSED
                }
            )
        print(f"# {size}: T={T} B={B} I={I} H={H}, {len(fns)} cells", flush=True)
        ms = interleaved_ms(fns, device, args.warmup, args.reps)
        for name, t in ms.items():
            rows.append(
                {
                    "size": size,
                    "T": T,
                    "B": B,
                    "input": I,
                    "hidden": H,
                    "cell": name,
                    "impl": kind(name, device),
                    "ms": round(t, 3),
                    "vs_fused_lstm": round(t / ms["lstm"], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def saved_mb(fn: Callable[[], None]) -> float:
    """What one forward keeps for the backward, in MB: the activation memory that grows with T (each storage
    counted once). A device-independent measure, also on CPU, where no allocator reports a peak per run."""
    import torch

    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def bench_long(args, device: torch.device) -> list[dict]:
    import torch

    from src.models.stack import RecurrentStack

    rows = []
    B, I, H = args.long_batch, LONG["I"], LONG["H"]
    for T in args.long_t:
        torch.manual_seed(0)
        x = torch.randn(B, T, I, device=device, requires_grad=True)
        cells = cell_factories(H, {"gru", *args.long_cells}, scan_both=True)
        fns = {name: fwd_bwd(RecurrentStack(c, input_size=I).to(device), x) for name, c in cells.items()}
        print(f"# long: T={T} B={B} I={I} H={H}", flush=True)
        ms = interleaved_ms(fns, device, args.warmup, args.reps)
        memory = {name: saved_mb(fn) for name, fn in fns.items()} if args.memory else {}
        for name, t in ms.items():
            rows.append(
                {
                    "size": f"long T={T}",
                    "T": T,
                    "B": B,
                    "input": I,
                    "hidden": H,
                    "cell": name,
                    "impl": kind(name, device),
                    "ms": round(t, 3),
                    "vs_fused_gru": round(t / ms["gru"], 3),
                    **({"saved_for_backward_mb": round(memory[name], 1)} if memory else {}),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per size: the fused LSTM's time and the range of the custom cells' ratios to it; per long T: minGRU's
    speed-up over the fused GRU (> 1: faster)."""
    summary: dict = {}
    for r in rows:
        base = r["cell"].split(":")[0].split(" ")[0]
        if "vs_fused_lstm" in r:
            size = summary.setdefault(r["size"], {})
            if r["cell"] == "lstm":
                size["fused_lstm_ms"] = r["ms"]
            elif base not in FUSED:
                key = "custom_cells" + ("_no_graphs" if r["cell"].endswith("(no graphs)") else "") + "_vs_fused_lstm"
                low, high = size.get(key, (r["vs_fused_lstm"], r["vs_fused_lstm"]))
                size[key] = (min(low, r["vs_fused_lstm"]), max(high, r["vs_fused_lstm"]))
            if base == "lstm_ref":
                size[r["cell"].replace(" (", "_").rstrip(")").lower() + "_vs_fused_lstm"] = r["vs_fused_lstm"]
        if base == "mingru" and "vs_fused_gru" in r:
            how = r["cell"].split("(")[1].rstrip(")")
            summary[f"mingru_{how}_speedup_over_fused_gru_T{r['T']}"] = round(1 / r["vs_fused_gru"], 2)
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.bench cells", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="the tutorial size and T=512 only")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when torch sees a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 20 on GPU, 3 on CPU)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed iterations first (default 2: TorchScript optimises on the 2nd call; on CPU, "
        "where cells run eagerly, 0: the median of the rounds absorbs a slow first one)",
    )
    parser.add_argument(
        "--no-graphs-too",
        action="store_true",
        help="on GPU, skip timing each loop cell also without CUDA graphs (stack.cuda_graphs=false)",
    )
    parser.add_argument("--jit-both", action="store_true", help="time each cell with a jit setting both ways")
    parser.add_argument("--cells", nargs="*", help="only these (config names, or lstm_variant:NFG); lstm always")
    parser.add_argument(
        "--long-t",
        type=int,
        nargs="*",
        default=None,
        help="sequence lengths for the scan cells vs fused GRU (default 512 4096 on GPU; 512 on "
        "CPU, where one T=4096 iteration takes about a minute)",
    )
    parser.add_argument(
        "--long-cells",
        nargs="*",
        default=["mingru", "minlstm"],
        help="the cells timed on long sequences against the fused GRU, each scan both ways "
        "(e.g. lru rglru mamba mlstm)",
    )
    parser.add_argument("--long-batch", type=int, default=LONG["B"], help="batch size of the long-sequence table")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also the memory one forward keeps for the backward, per cell in the long-sequence table",
    )
    args = parser.parse_args(argv)
    import torch  # after parsing: `--help` answers without it

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reps is None:
        args.reps = 20 if on_gpu else 3
    if args.warmup is None:
        args.warmup = 2 if on_gpu or args.jit_both else 0
    if args.long_t is None:
        args.long_t = [512, 4096] if on_gpu and not args.quick else [512]
    rows = bench_sizes(args, device) + bench_long(args, device)
    summary = {"device": device.type, "threads": torch.get_num_threads(), **summarise(rows)}
    # A partial run gets a name of its own, so that it never overwrites the full table.
    partial = {
        "quick": args.quick,
        "jit-both": args.jit_both,
        "subset": bool(args.cells),
        # a long table at another batch size: its B and T in the name, so that runs at several T sit side by side
        f"long-b{args.long_batch}-t" + "-".join(map(str, args.long_t)): args.long_batch != LONG["B"],
    }
    name = f"cells-{device.type}" + "".join(f"-{tag}" for tag, on in partial.items() if on)
    report.publish(name, rows, " ".join(["python -m src.bench cells", *argv]), summary)
    return 0
