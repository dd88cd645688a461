"""Keep freed memory in the process (glibc's malloc), so that a training step does not fault its buffers in anew.

glibc serves an allocation over its mmap threshold (128 KiB at first, adapting up to 32 MiB) with a fresh mmap and
unmaps it when freed, and it trims the heap's free top back to the OS. A stacked job's step (S members' activations
alive until the backward) allocates and frees many buffers of a few MiB per step; each then costs page faults on
every step (kernel time, not compute). Pinning the mmap threshold at its maximum and raising the trim threshold
keeps those pages with the process for reuse, as PyTorch's CUDA caching allocator does on a GPU. The price: the
process keeps its peak heap until it exits. Measured in docs/speed.md ("The allocator").

Only glibc (Linux) has mallopt; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docstring); True where they were set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
