"""The suite's commands keep freed memory in the process (src/common/allocator.py): a step that allocates and frees
buffers of a few MiB, as a stacked job's does, faults no page in again once they are the process's."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Ten 4 MiB buffers alive at once (a step's activations), freed, ten times: the page faults of the second round.
STEPS = """
import resource, sys, torch
from src.runs import commands

def faults():
    for _ in range(2):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            buffers = [torch.ones(1024 * 1024) for _ in range(10)]
            del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

if sys.argv[1] == "entry":
    commands.run(lambda: print(faults()))  # what python -m src.train and src.generate run through
else:
    print(faults())
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is set")


def page_faults(how: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, how], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(done.stdout.split()[-1])


@glibc
def test_a_command_faults_no_freed_buffer_in_again():
    assert page_faults("plain") > 10_000  # glibc's defaults hand the buffers back: what the setting is for
    assert page_faults("entry") < 1_000
