"""python -m src.bench stacked [--sizes 32,128] [--members 1,2,4,8] [--steps 20] [--repeats 3] [overrides...]

S seeds of one config trained stacked (src/models/stacking.py: one call for all members, vmapped or once per member
as the cell allows; each member's own Adam, stepped together; the divergence guard of src/updates/stacked.py)
against the same S seeds trained one after another in the same process, at each hidden size and S, interleaved
`--repeats` times; medians. The training step only
(forward, backward, optimizer step on batches already in memory): Lightning's per-step cost, which one after
another pays S times and stacked once, is left out, so the speedup through `python -m src.train` is at least
this. Reported per S and size:

    member samples/s        training samples of all members per second
    fused                   one after another with the cell as configured (torch's fused LSTM)
    speedup                 stacked over one after another with the fused cell
    MB per member           parameters, gradients, Adam's two moments and the tensors saved for backward (each
                            storage once), stacked divided by S, and of a single model

The default recipe: cell=lstm on smnist5k (28 steps of 28 features, batch 128, Adam).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import tempfile
import time

import torch

from src.bench import report
from src.common.paths import CONF_DIR
from src.data.tensors import Batch
from src.models.stacking import Members
from src.updates.stacked import member_optimizers

WARMUP = 3  # updates before the clock starts (allocator, threads)


def compose(overrides: list[str], out_dir: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("config", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = out_dir
    HydraConfig.instance().set_config(cfg)
    return cfg


def members_and_batches(overrides: list[str], seeds: list[int], steps: int, out: str):
    """The task of each seed (built as src.train builds it) and WARMUP + steps training batches."""
    from src.runs.build import make

    cfg = compose(overrides, out)
    datamodule = make(cfg.dataset, "dataset")
    datamodule.prepare_data()
    datamodule.setup()
    tasks = []
    for seed in seeds:
        torch.manual_seed(seed)
        tasks.append(make(cfg.task, "task", spec=datamodule.spec, _convert_="object").train())
    batches = []
    while len(batches) < WARMUP + steps:
        batches += list(datamodule.train_dataloader())
    return tasks, batches[: WARMUP + steps]


def one_after_another(tasks: list, batches: list[Batch]) -> float:
    """Member samples/s of each task trained alone, one after another."""
    seconds = 0.0
    for task in tasks:
        optimizer = task.optimizer_factory(params=task.parameters())
        for i, batch in enumerate(batches):
            if i == WARMUP:
                start = time.perf_counter()
            loss = task.batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds += time.perf_counter() - start
    return len(tasks) * (len(batches) - WARMUP) * len(batches[0].x) / seconds


def stacked(tasks: list, batches: list[Batch]) -> float:
    """Member samples/s of the tasks stacked: the step src/updates/stacked.py runs (without clipping)."""
    members = Members(tasks)
    optimizer = member_optimizers(tasks)
    params = [list(t.parameters()) for t in tasks]
    alive = torch.ones(len(tasks), dtype=torch.bool)
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        stack = Batch(*(None if t is None else t.expand(len(tasks), *t.shape) for t in batch))
        losses = members.call("batch_loss", stack)
        alive = alive & torch.isfinite(losses.detach())
        optimizer.zero_grad(set_to_none=True)
        torch.where(alive, losses, 0).sum().backward()
        before = [[p.detach().clone() for p in member] for member in params]
        optimizer.step()
        with torch.no_grad():
            for s, (member, olds) in enumerate(zip(params, before)):
                for p, old in zip(member, olds):
                    p.copy_(torch.where(alive[s], p, old))
    return len(tasks) * (len(batches) - WARMUP) * len(batches[0].x) / (time.perf_counter() - start)


def megabytes(run, params: list[torch.Tensor], count: int) -> float:
    """(tensors saved for backward by `run()`, each storage once, + parameters x 4) / count, in MB."""
    from src.bench.cells import saved_mb

    size = sum(p.numel() * p.element_size() for p in params)
    return (saved_mb(run) + 4 * size / 2**20) / count


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench stacked", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[32, 128], help="hidden sizes, comma-separated")
    parser.add_argument("--members", type=ints, default=[1, 2, 4, 8], help="S values, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed updates per member (after the warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--name", default=None, help="output name under benchmarks/ (default stacked-cpu)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe (default: cell=lstm smnist5k)")
    args = parser.parse_args(argv)
    recipe = ["dataset=smnist5k", "cell=lstm", "scheduler=none", f"dataset.batch_size={args.batch}", *args.overrides]

    results: dict[tuple[int, int], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for hidden in args.sizes:
                for s in args.members:
                    overrides = [*recipe, f"cell.hidden_size={hidden}"]
                    tasks, batches = members_and_batches(overrides, list(range(1, s + 1)), args.steps, tmp)
                    entry = results.setdefault((hidden, s), {k: [] for k in ("fused", "stacked")})
                    fresh = [copy.deepcopy(t) for t in tasks]
                    entry["fused"].append(one_after_another(tasks, batches))
                    entry["stacked"].append(stacked(fresh, batches))
                    progress = {k: round(v[-1], 2) for k, v in entry.items()}
                    print(f"hidden={hidden} S={s}: {progress}", file=sys.stderr, flush=True)
                    if "mb" not in entry:
                        copies = [copy.deepcopy(t) for t in tasks]
                        members = Members(copies)
                        stack = Batch(*(None if t is None else t.expand(s, *t.shape) for t in batches[0]))
                        run = functools.partial(members.call, "batch_loss", stack)
                        entry["mb"] = [megabytes(run, [p for t in copies for p in t.parameters()], s)]
                        run = functools.partial(tasks[0].batch_loss, batches[0])
                        entry["mb single"] = [megabytes(run, list(tasks[0].parameters()), 1)]
    rows = []
    for (hidden, s), entry in results.items():
        fused, stk = (statistics.median(entry[k]) for k in ("fused", "stacked"))
        rows.append(
            {
                "hidden": hidden,
                "S": s,
                "one after another (fused), samples/s": round(fused),
                "stacked, samples/s": round(stk),
                "speedup": round(stk / fused, 2),
                "MB per member stacked": round(entry["mb"][0], 2),
                "MB single": round(entry["mb single"][0], 2),
            }
        )
    summary = {
        "recipe": recipe,
        "timed_updates": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "speedup": {f"hidden={r['hidden']},S={r['S']}": r["speedup"] for r in rows},
    }
    report.publish(args.name or "stacked-cpu", rows, "python -m src.bench stacked " + " ".join(argv), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
