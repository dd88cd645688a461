"""Benchmarks: `python -m src.bench <name> [args]` runs src/bench/<name>.py's main(argv).

Each benchmark writes benchmarks/<name>.json and benchmarks/<name>.md (via `report.write`), stamped with the
device, library versions and date, and ends by printing one JSON object on its last line.
"""
