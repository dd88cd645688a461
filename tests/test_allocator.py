"""The suite's commands keep freed memory in the process (src/common/allocator.py): a step that allocates and frees
buffers of a few MiB, as a stacked job's does, hands none of them back to the OS, so the next step faults no page in.

Measured with glibc's own books (mallinfo2: heap arena + mmapped bytes), not the kernel's page-fault count: a
sandboxed kernel (as on CI) may report no minor faults at all, while glibc's accounting is the same everywhere."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Ten 4 MiB buffers alive at once (a step's activations), freed, three times: the bytes malloc handed back to the OS.
STEPS = """
import ctypes, sys, torch
from src.runs import commands

libc = ctypes.CDLL("libc.so.6")
fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
if hasattr(libc, "mallinfo2"):  # glibc >= 2.33; mallinfo's int fields suffice below 2 GiB
    info, size = libc.mallinfo2, ctypes.c_size_t
else:
    info, size = libc.mallinfo, ctypes.c_int
info.restype = type("Info", (ctypes.Structure,), {"_fields_": [(name, size) for name in fields]})

def held():
    books = info()
    return books.arena + books.hblkhd  # the heap's bytes and those of chunks served by their own mmap

def handed_back():
    back = 0
    for _ in range(3):
        buffers = [torch.ones(1024 * 1024) for _ in range(10)]
        during = held()
        del buffers
        back += during - held()
    return back

if sys.argv[1] == "entry":
    commands.run(lambda: print(handed_back()))  # what python -m src.train and src.generate run through
else:
    print(handed_back())
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is set")
MiB = 1024 * 1024


def printed(code: str, how: str) -> int:
    """The last number `code` prints, run in a fresh process: plain, or through the command entry ("entry")."""
    done = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(done.stdout.split()[-1])


def bytes_handed_back(how: str) -> int:
    return printed(STEPS, how)


@glibc
def test_a_command_hands_no_freed_buffer_back_to_the_os():
    assert bytes_handed_back("plain") >= 40 * MiB  # glibc's defaults unmap or trim them: what the setting is for
    assert bytes_handed_back("entry") < 4 * MiB  # not one buffer


# An atexit hook registered before the command's runs after the command's own (they run last in, first out).
EXIT = """
import atexit, gc, sys
from src.runs import commands

atexit.register(lambda: print(gc.get_freeze_count()))
if sys.argv[1] == "entry":
    commands.run(lambda: None)
"""


def frozen_at_exit(how: str) -> int:
    return printed(EXIT, how)


def test_a_command_leaves_its_objects_to_the_os_at_exit_instead_of_collecting_them():
    assert frozen_at_exit("plain") == 0  # Python's finalization would collect every object
    assert frozen_at_exit("entry") > 10_000  # moved out of the collector's reach (gc.freeze)


# Full passes of the cyclic collector in a whole `python -m src.train` run (digits, two epochs), counted by a hook set
# before the command starts; and whether the collector is on when the command ends.
FULL_PASSES = """
import gc, runpy, sys

passes = []
gc.callbacks.append(lambda phase, info: passes.append(1) if phase == "stop" and info["generation"] == 2 else None)
sys.argv = ["src.train", *sys.argv[1:]]
try:
    runpy.run_module("src.train", run_name="__main__")
except SystemExit:
    pass
print(gc.isenabled(), len(passes))
"""


def test_a_run_starts_up_without_the_collectors_full_passes_and_trains_with_the_collector_on(tmp_path):
    args = ["dataset=digits", "trainer.max_epochs=2", "logger=csv", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run([sys.executable, "-c", FULL_PASSES, *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    enabled, passes = done.stdout.split()[-2:]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    assert enabled == "True"  # on again for what the run allocates
    assert int(passes) <= 1, f"{passes} full passes of the collector (without the set-up: several)"


def test_start_up_done_freezes_what_start_up_left_once_and_turns_the_collector_on():
    code = """
import gc
from src.common import allocator
allocator.start_up_without_collecting()
off = gc.isenabled()
allocator.start_up_done()
first = gc.get_freeze_count()
objects = [[] for _ in range(1000)]
allocator.start_up_done()  # the collector on: nothing more is frozen
print(off, gc.isenabled(), first > 10_000, gc.get_freeze_count() == first)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["False", "True", "True", "True"]
