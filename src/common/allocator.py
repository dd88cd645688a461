"""The process's memory: keep what is freed (glibc's malloc), and leave what is left to the OS at exit.

keep_freed_memory: glibc serves an allocation over its mmap threshold (128 KiB at first, adapting up to 32 MiB)
with a fresh mmap and unmaps it when freed, and it trims the heap's free top back to the OS. A stacked job's step
(S members' activations alive until the backward) allocates and frees many buffers of a few MiB per step; each
then costs page faults on every step (kernel time, not compute). Pinning the mmap threshold at its maximum and
raising the trim threshold keeps those pages with the process for reuse, as PyTorch's CUDA caching allocator does
on a GPU. The price: the process keeps its peak heap until it exits. Measured in docs/speed.md ("The allocator").
Only glibc (Linux) has mallopt; elsewhere it does nothing.

exit_without_collecting, start_up_without_collecting: their own docstrings. set_up_command: all three, at a
command's entry; start_up_done when a run's build starts.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import gc
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def set_up_command() -> None:
    """What every suite command's process runs with, called at its entry (src/runs/commands.py run, src.bench)
    before the first step allocates."""
    keep_freed_memory()
    exit_without_collecting()
    start_up_without_collecting()


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docstring); True where they were set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def exit_without_collecting() -> None:
    """At the process's exit, leave the objects alive then to the OS instead of collecting them.

    Python's finalization runs the cycle collector over every object a run leaves (Lightning's, torch's and
    Hydra's modules: hundreds of thousands), a second or so of a short run's wall time after its work is done.
    gc.freeze, called by an atexit hook registered at the command's start (so it runs after the hooks registered
    later: W&B's, logging's flush), moves them out of the collector's reach; the memory goes back to the OS with
    the process as it would anyway. Files are closed by their own `with` blocks and loggers' finalize, not by a
    collection at exit. Measured in docs/speed.md ("The exit")."""
    atexit.register(gc.freeze)


def start_up_without_collecting() -> None:
    """Start-up (imports, composing the config, building the run) without the cyclic garbage collector, until
    start_up_done.

    Start-up creates hundreds of thousands of objects that live as long as the process (torch's, Lightning's and
    Hydra's modules, classes, functions) and little garbage. Each full pass of the collector walks every object
    alive, and start-up triggers several of them: a visible share of a short run's wall time, spent finding
    almost nothing (docs/speed.md, "Start-up without the collector")."""
    gc.disable()


def start_up_done() -> None:
    """A run's build starts: what is alive now is moved out of the collector's reach for good (gc.freeze; with it the
    few garbage cycles start-up left, which are then kept), and the collector is on again for what the run
    allocates, walking only that. Nothing where the collector is on already (a test's process, a multirun's
    later jobs)."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()
