"""What the page's header says of where it ran: the commit (and whether the tree had changes), the machine (CPU
model, cores, torch version, GPU or not), the date and the command."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit(cwd: Path) -> str:
    """`<sha> (clean)` or `<sha> (dirty: N files changed)`; `not a git checkout` outside one."""
    sha = git(["rev-parse", "HEAD"], cwd)
    if sha is None:
        return "not a git checkout"
    changed = git(["status", "--porcelain", "--untracked-files=no"], cwd)
    n = len(changed.splitlines()) if changed else 0
    return f"{sha} ({'clean' if not n else f'dirty: {n} tracked file(s) changed'})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model and cores, torch's version, and the GPU (or none)."""
    import torch

    gpu = (
        ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        if torch.cuda.is_available()
        else "none"
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()}, {cores} cores; torch {torch.__version__}; GPU: {gpu}; {platform.system()} {platform.release()}"
    )


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
