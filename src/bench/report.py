"""Benchmark results as JSON + a markdown table under benchmarks/, stamped with where and when they ran."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from src.common.files import atomic_write_json, atomic_write_text
from src.common.markdown import markdown_table

OUT_DIR = Path(os.environ.get("RNN_BENCH_BENCHMARKS", "benchmarks"))


def environment() -> dict[str, Any]:
    import torch  # here, not at the top: src.compare.report writes its tables with this module and needs no torch

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": gpu or f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "lightning": ver("lightning"),
        "torchmetrics": ver("torchmetrics"),
    }


def recipe_device(overrides: Sequence[str]) -> str:
    """ "cuda" where the benchmark's runs train on a GPU (trainer=gpu, or trainer.accelerator=gpu/cuda), else "cpu":
    the end of its record's default name."""
    gpu = {"trainer=gpu", "trainer.accelerator=gpu", "trainer.accelerator=cuda"}
    return "cuda" if any(o.strip() in gpu for o in overrides) else "cpu"


def write(
    name: str,
    rows: Sequence[dict],
    command: str,
    summary: dict | None = None,
    columns: Sequence[str] | None = None,
    out_dir: Path = OUT_DIR,
) -> dict:
    """Write benchmarks/<name>.json and .md; return the JSON document. Device-specific names are the caller's
    choice (e.g. name="cells-cpu") so CPU and GPU results live side by side."""
    doc = {
        "benchmark": name,
        "command": command,
        "environment": environment(),
        "summary": summary or {},
        "rows": list(rows),
    }
    atomic_write_json(out_dir / f"{name}.json", doc)
    env = doc["environment"]
    md = [
        f"# {name}",
        "",
        f"`{command}`",
        "",
        f"{env['date']} on {env['device']}; torch {env['torch']}, lightning {env['lightning']}"
        + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if env["cuda"] else ""),
        "",
    ]
    if summary:
        md += ["```json", json.dumps(summary, indent=2), "```", ""]
    md.append(markdown_table(rows, columns))
    atomic_write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    return doc


def publish(name: str, rows: Sequence[dict], command: str, summary: dict) -> None:
    """write() the results, then print the summary as the command's last line (the JSON object scripts read)."""
    write(name, rows, command, summary)
    print(json.dumps(summary))
