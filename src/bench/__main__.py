"""python -m src.bench <name> [args...]: run one benchmark (a module in src/bench with a main(argv))."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from src.common import allocator

NOT_BENCHMARKS = {"report"}


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS
    )


def main(argv: list[str]) -> int:
    names = available()
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m src.bench <{'|'.join(names)}> [args]; python -m src.bench <name> --help: its options")
        return 0
    if not argv or argv[0] not in names:
        given = f"unknown benchmark {argv[0]!r}; " if argv else ""
        print(f"error: {given}usage: python -m src.bench <{'|'.join(names)}> [args]", file=sys.stderr)
        return 2
    allocator.set_up_command()  # what the suite's commands run with (src/runs/commands.py)
    try:
        benchmark = importlib.import_module(f"src.bench.{argv[0]}")
        allocator.start_up_done()  # start-up is its imports: a benchmark's runs are built with the collector on
        return benchmark.main(argv[1:]) or 0
    except Exception as e:  # bad overrides or settings: the one message, as `python -m src.train` prints it
        from src.common.errors import user_error

        bad = user_error(e)
        if bad is None:
            raise
        print(f"error: {bad}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
