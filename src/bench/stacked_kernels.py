"""python -m src.bench stacked_kernels [--sizes 32,128] [--members 8] [--batch 128] [--repeats 5] [--threads N]

How S LSTM members (each its own weights, as a stacked job's members are) run fastest on this machine: forward
and backward of S one-layer LSTMs (28 steps of 28 features, as smnist5k), interleaved `--repeats` times, medians
with min and max:

    per member fused       torch's fused LSTM once per member (what src/models/stacking.py runs for fused cells)
    batched loop           the input projection of all members as one batched product (the cheap part to stack),
                           then a Python time loop of batched matrix products over the members (what vmap of the
                           step-by-step LSTM amounts to)
    batched loop, scripted the same loop compiled by TorchScript

Members cannot be folded into the batch dimension here: that needs shared weights, and members differ in theirs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from src.bench import report

STEPS, FEATURES = 28, 28


def lstm_loop(pre: torch.Tensor, w_hh: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """pre [S, B, T, 4H] (input projections), w_hh [S, 4H, H], h and c [S, B, H] -> the last h."""
    for t in range(pre.shape[2]):
        gates = pre[:, :, t] + torch.bmm(h, w_hh.transpose(1, 2))
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def candidates(members: int, batch: int, hidden: int) -> dict:
    x = torch.randn(members, batch, STEPS, FEATURES)
    lstms = [nn.LSTM(FEATURES, hidden, batch_first=True) for _ in range(members)]
    w_ih = torch.stack([m.weight_ih_l0.detach() for m in lstms]).requires_grad_()
    w_hh = torch.stack([m.weight_hh_l0.detach() for m in lstms]).requires_grad_()
    bias = torch.stack([(m.bias_ih_l0 + m.bias_hh_l0).detach() for m in lstms]).requires_grad_()
    scripted = torch.jit.script(lstm_loop)

    def per_member() -> None:
        sum(m(x[s])[0][:, -1].sum() for s, m in enumerate(lstms)).backward()

    def batched(loop):
        def run() -> None:
            pre = torch.einsum("sbtf,sgf->sbtg", x, w_ih) + bias[:, None, None]
            zeros = x.new_zeros(members, batch, hidden)
            loop(pre, w_hh, zeros, zeros).sum().backward()

        return run

    return {
        "per member fused": per_member,
        "batched loop": batched(lstm_loop),
        "batched loop, scripted": batched(scripted),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench stacked_kernels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[32, 128], help="hidden sizes, comma-separated")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, summary = [], {}
    for hidden in args.sizes:
        runs = candidates(args.members, args.batch, hidden)
        for run in runs.values():  # warm-up (TorchScript profiles its first calls)
            run()
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved: the machine's load hits every candidate alike
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
        base = statistics.median(times["per member fused"])
        for name, ms in times.items():
            median = statistics.median(ms)
            rows.append(
                {
                    "hidden": hidden,
                    "S": args.members,
                    "candidate": name,
                    "ms (median)": round(median, 1),
                    "ms (min-max)": f"{min(ms):.1f}-{max(ms):.1f}",
                    "per member fused / this": round(base / median, 2),
                }
            )
            summary[f"hidden={hidden},{name}"] = round(base / median, 2)
    report.publish("stacked-kernels-cpu", rows, "python -m src.bench stacked_kernels " + " ".join(argv), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
