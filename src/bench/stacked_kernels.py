"""python -m src.bench stacked_kernels [--sizes 32,128] [--members 8] [--batch 128] [--repeats 5] [--threads N]
                                     [--device cpu|cuda] [--name NAME]

How S LSTM members (each its own weights, as a stacked job's members are) run fastest on this device: forward
and backward of S one-layer LSTMs (28 steps of 28 features, as smnist5k), interleaved `--repeats` times, medians
with min and max, and each candidate's largest difference from the first in the members' last hidden states and
in their weights' gradients, relative to the largest value of each (what says whether it computes the same):

    per member fused       torch's fused LSTM once per member (what src/models/stacking.py runs for fused cells)
    per member fused, one CUDA stream each
                           the same calls, each member's forward (and so its backward) on its own CUDA stream, so
                           that small members may run side by side on the GPU (--device cuda only)
    block-diagonal fused   one fused call of an S*H-wide LSTM whose weights hold each member's in its own block
                           (zeros elsewhere; inputs side by side): S^2 the arithmetic, one kernel for all
    batched loop           the input projection of all members as one batched product (the cheap part to stack),
                           then a Python time loop of batched matrix products over the members (what vmap of the
                           step-by-step LSTM amounts to)
    batched loop, scripted the same loop compiled by TorchScript
    batched loop, backward written out
                           the same loop run without autograd, its backward through time written by hand (what a
                           stacked LSTM kernel of the suite's own would do: no graph recorded per step, the
                           recurrent weights' gradient as one batched product over all steps)

Members cannot be folded into the batch dimension here: that needs shared weights, and members differ in theirs.
The record: benchmarks/stacked-kernels-<device>.md.
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


class WrittenOut(torch.autograd.Function):
    """The batched loop with its backward through time written by hand: pre [S, T, B, 4H] (input projections,
    biases in), w_hh [S, 4H, H] -> every step's h [S, T, B, H]. Gates in torch's order (i, f, g, o); the
    forward keeps the activated gates, cell states and tanh of the cell states that the backward reads."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
        members, steps, batch, width = pre.shape
        hidden = width // 4
        gates = pre.new_empty(members, steps, batch, width)
        cells = pre.new_zeros(members, steps + 1, batch, hidden)  # [:, 0]: the zero initial state
        tanh_cells = pre.new_empty(members, steps, batch, hidden)
        hs = pre.new_zeros(members, steps + 1, batch, hidden)
        for t in range(steps):
            z = torch.baddbmm(pre[:, t], hs[:, t], w_hh.transpose(1, 2))
            a = gates[:, t]
            torch.sigmoid(z, out=a)
            torch.tanh(z[..., 2 * hidden : 3 * hidden], out=a[..., 2 * hidden : 3 * hidden])
            i, f, g, o = a.chunk(4, -1)
            torch.mul(f, cells[:, t], out=cells[:, t + 1])
            cells[:, t + 1].addcmul_(i, g)
            torch.tanh(cells[:, t + 1], out=tanh_cells[:, t])
            torch.mul(o, tanh_cells[:, t], out=hs[:, t + 1])
        ctx.save_for_backward(gates, cells, tanh_cells, hs, w_hh)
        return hs[:, 1:]

    @staticmethod
    def backward(ctx, d_hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates, cells, tanh_cells, hs, w_hh = ctx.saved_tensors
        members, steps, batch, width = gates.shape
        hidden = width // 4
        d_pre = gates.new_empty(members, steps, batch, width)
        dh, dc = hs.new_zeros(members, batch, hidden), hs.new_zeros(members, batch, hidden)
        for t in reversed(range(steps)):
            dh = dh + d_hs[:, t]
            a, tc = gates[:, t], tanh_cells[:, t]
            i, f, g, o = a.chunk(4, -1)
            dc = dc + dh * o * (1 - tc * tc)
            d = d_pre[:, t]
            d_i, d_f, d_g, d_o = d.chunk(4, -1)
            torch.mul(dc, g, out=d_i)
            torch.mul(dc, cells[:, t], out=d_f)
            torch.mul(dc, i, out=d_g)
            torch.mul(dh, tc, out=d_o)
            slope = a * (1 - a)  # sigmoid's, then tanh's for the g gate
            torch.mul(g, g, out=slope[..., 2 * hidden : 3 * hidden]).neg_().add_(1)
            d.mul_(slope)
            dc = dc * f
            dh = torch.bmm(d, w_hh)
        steps_batch = steps * batch
        d_w_hh = torch.bmm(
            d_pre.view(members, steps_batch, width).transpose(1, 2), hs[:, :-1].reshape(members, steps_batch, hidden)
        )
        return d_pre, d_w_hh


def candidates(members: int, batch: int, hidden: int, device: torch.device) -> dict:
    """{name: a function running forward and backward once, returning (the members' last h [S, B, H], the
    gradients of w_ih, w_hh [S, ...] and of the summed biases [S, 4H])}."""
    x = torch.randn(members, batch, STEPS, FEATURES, device=device)
    lstms = [nn.LSTM(FEATURES, hidden, batch_first=True).to(device) for _ in range(members)]
    w_ih = torch.stack([m.weight_ih_l0.detach() for m in lstms]).requires_grad_()
    w_hh = torch.stack([m.weight_hh_l0.detach() for m in lstms]).requires_grad_()
    bias = torch.stack([(m.bias_ih_l0 + m.bias_hh_l0).detach() for m in lstms]).requires_grad_()
    scripted = torch.jit.script(lstm_loop)

    def stacked_grads() -> tuple[torch.Tensor, ...]:
        grads = tuple(w.grad for w in (w_ih, w_hh, bias))
        for w in (w_ih, w_hh, bias):
            w.grad = None
        return grads

    def member_grads() -> tuple[torch.Tensor, ...]:
        grads = (
            torch.stack([m.weight_ih_l0.grad for m in lstms]),
            torch.stack([m.weight_hh_l0.grad for m in lstms]),
            torch.stack([m.bias_ih_l0.grad for m in lstms]),  # the summed bias's gradient: either bias's
        )
        for m in lstms:
            m.zero_grad(set_to_none=True)
        return grads

    def per_member():
        last = torch.stack([m(x[s])[0][:, -1] for s, m in enumerate(lstms)])
        last.sum().backward()
        return last.detach(), member_grads()

    streams = [torch.cuda.Stream(device) for _ in lstms] if device.type == "cuda" else []

    def per_member_streams():
        main, outs = torch.cuda.current_stream(device), []
        for s, (m, stream) in enumerate(zip(lstms, streams)):
            stream.wait_stream(main)  # x and the weights are ready
            with torch.cuda.stream(stream):
                outs.append(m(x[s])[0][:, -1])
        for stream, out in zip(streams, outs):
            main.wait_stream(stream)
            out.record_stream(main)  # made on its stream, used on main: not reused before main is done with it
        last = torch.stack(outs)
        last.sum().backward()  # each member's backward runs on the stream of its forward
        return last.detach(), member_grads()

    big = nn.LSTM(members * FEATURES, members * hidden, batch_first=True).to(device)
    eye = torch.eye(members, device=device)

    def block_diagonal():
        # gate-major as torch lays out an LSTM's weights: row (gate k, member s, unit h), column (member t, input i)
        rows = 4 * members * hidden
        w_ih_big = torch.einsum("skhi,st->kshti", w_ih.view(members, 4, hidden, FEATURES), eye)
        w_hh_big = torch.einsum("skhj,st->kshtj", w_hh.view(members, 4, hidden, hidden), eye)
        weights = {
            "weight_ih_l0": w_ih_big.reshape(rows, members * FEATURES),
            "weight_hh_l0": w_hh_big.reshape(rows, members * hidden),
            "bias_ih_l0": bias.view(members, 4, hidden).transpose(0, 1).reshape(rows),
            "bias_hh_l0": bias.new_zeros(rows),
        }
        side_by_side = x.permute(1, 2, 0, 3).reshape(batch, STEPS, members * FEATURES)
        out = torch.func.functional_call(big, weights, (side_by_side,))[0][:, -1]
        last = out.view(batch, members, hidden).transpose(0, 1)
        last.sum().backward()
        return last.detach(), stacked_grads()

    def batched(loop):
        def run():
            pre = torch.einsum("sbtf,sgf->sbtg", x, w_ih) + bias[:, None, None]
            zeros = x.new_zeros(members, batch, hidden)
            last = loop(pre, w_hh, zeros, zeros)
            last.sum().backward()
            return last.detach(), stacked_grads()

        return run

    def written_out():
        pre = torch.einsum("sbtf,sgf->stbg", x, w_ih) + bias[:, None, None]
        last = WrittenOut.apply(pre, w_hh)[:, -1]
        last.sum().backward()
        return last.detach(), stacked_grads()

    found = {"per member fused": per_member}
    if streams:
        found["per member fused, one CUDA stream each"] = per_member_streams
    found |= {
        "block-diagonal fused": block_diagonal,
        "batched loop": batched(lstm_loop),
        "batched loop, scripted": batched(scripted),
        "batched loop, backward written out": written_out,
    }
    return found


def difference(result, reference) -> float:
    """The largest difference of a candidate's last states and gradients from the reference's, relative to the
    reference tensor's largest magnitude (a gradient summed over a batch's steps is large: its float32 rounding
    too)."""
    pairs = [(result[0], reference[0]), *zip(result[1], reference[1])]
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in pairs)


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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--name", default=None, help="output name under benchmarks/ (default stacked-kernels-<device>)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: torch sees no CUDA GPU here; run it where one is (or --device cpu)")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, summary = [], {}
    for hidden in args.sizes:
        runs = candidates(args.members, args.batch, hidden, device)
        results = {}
        for name, run in runs.items():  # warm-up (TorchScript profiles its first calls), and what each computes
            run()
            results[name] = run()
        reference = results["per member fused"]
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved: the machine's load hits every candidate alike
                sync()
                start = time.perf_counter()
                run()
                sync()
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
                    "largest relative difference": float(f"{difference(results[name], reference):.1e}"),
                }
            )
            summary[f"hidden={hidden},{name}"] = round(base / median, 2)
    report.publish(
        args.name or f"stacked-kernels-{device.type}",
        rows,
        "python -m src.bench stacked_kernels " + " ".join(argv),
        summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
