"""python -m src.data list | fetch [names...] | dir: the data sets and their cache.

  list    every data set (conf/dataset/): where its bytes come from, whether they are in the cache, their size
  fetch   download and verify (sha256) the pinned artifacts of the named data sets (default: every data set that
          has any), with a progress bar; then what is cached and its size. `make data` runs it.
  dir     print the cache folder

The cache is $RNN_BENCH_CACHE, else $RNN_BENCH_ROOT/.cache, else the repository's .cache/ (any working directory);
--cache-dir chooses another. What a data set needs is found by running its data module's own `fetch` (the step
every training run takes first) while src.data.sources records the artifacts it asks for; `list` runs it with
downloads off, so it only reads and verifies what is there.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from src.common.errors import UserError
from src.common.paths import CONF_DIR
from src.data.sources import default_cache_dir

CONF = CONF_DIR


def dataset_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


@dataclass
class Status:
    """One data set's sources as its fetch found them."""

    name: str
    artifacts: list[tuple[object, Path | None]] = field(default_factory=list)
    missing: bool = False  # an artifact is not cached (list) or could not be fetched (fetch)
    error: str = ""  # why its fetch stopped (a missing artifact, a damaged file, a folder to give)

    @property
    def pinned(self) -> bool:
        return bool(self.artifacts)

    @property
    def cached(self) -> str:
        if not self.pinned:
            return "n/a"
        return "no" if self.missing or self.error else "yes"

    def source(self) -> str:
        if self.pinned:
            return ", ".join(dict.fromkeys(str(a) for a, _ in self.artifacts))
        if self.error:  # its first clause, e.g. "dataset.data_dir=data/mnist does not exist"
            return "your own files: " + re.split(r"[.;:] ", self.error)[0][:100]
        return "nothing to fetch (generated, an installed package, or your own files)"

    def size(self, cache: Path) -> int:
        """Bytes in the cache: each archive and the folder its members were extracted to."""
        total = 0
        for artifact, path in self.artifacts:
            if path is not None and path.is_file():
                total += path.stat().st_size
            name = getattr(artifact, "name", None) or getattr(artifact, "package", None)
            folder = cache / f"{name}-{getattr(artifact, 'version', '')}"
            if name and folder.is_dir():
                total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return total


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def data_module(name: str, cache: Path):
    """The data module conf/dataset/<name>.yaml builds, with its cache in `cache`."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF), job_name="data"):
        cfg = compose("config", overrides=[f"dataset={name}"])
    return instantiate(cfg.dataset, cache_dir=str(cache))


def probe(name: str, cache: Path, downloads: bool) -> Status:
    """Run the data set's fetch, recording the pinned artifacts it uses; downloads=False: only what is cached."""
    from src.common.errors import user_error
    from src.data.sources import NotCached, recording

    status = Status(name)
    with recording(downloads=downloads) as used:
        try:
            data_module(name, cache).fetch()
        except NotCached:
            status.missing = True
        except Exception as e:  # a damaged file, a failed download, a data set that needs the user's files
            bad = user_error(e)
            if bad is None:
                raise
            status.error = str(bad)
    status.artifacts = list({str(a): (a, path) for a, path in used}.values())  # one entry per artifact
    return status


def table(statuses: list[Status], cache: Path) -> str:
    rows = [("data set", "cached", "size", "source")]
    for s in statuses:
        rows.append((s.name, s.cached, human(s.size(cache)) if s.cached == "yes" else "-", s.source()))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(" ".join(r[i].ljust(widths[i]) for i in range(3)) + " " + r[3] for r in rows)


def cache_total(cache: Path) -> str:
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    return f"cache {cache}: {human(size)} in all"


def list_command(cache: Path) -> int:
    statuses = [probe(name, cache, downloads=False) for name in dataset_names()]
    print(table(statuses, cache))
    print(cache_total(cache))
    return 0


def fetch_command(names: list[str], cache: Path) -> int:
    from tqdm import tqdm

    known = dataset_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown data set {', '.join(map(repr, unknown))}; the data sets are {', '.join(known)}")
    if not names:  # every data set with pinned artifacts
        names = [n for n in known if probe(n, cache, downloads=False).pinned]
    statuses = []
    with tqdm(names, desc="fetch", unit="data set", file=sys.stderr) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            statuses.append(probe(name, cache, downloads=True))
    print(table(statuses, cache))
    print(cache_total(cache))
    failed = [s for s in statuses if s.error]
    for s in failed:
        print(f"error: {s.name}: {s.error}", file=sys.stderr)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.data",
        description="The data sets and their cache: list them, fetch and verify the pinned ones.",
    )
    parser.add_argument("--cache-dir", default=None, help="default: $RNN_BENCH_CACHE or the repository's .cache/")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every data set: source, cached yes/no, size")
    fetch = commands.add_parser("fetch", help="download and verify (sha256) the pinned data sets")
    fetch.add_argument("names", nargs="*", help="data sets (conf/dataset/); default: every one with pinned files")
    commands.add_parser("dir", help="print the cache folder")
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir).expanduser().absolute() if args.cache_dir else default_cache_dir()
    try:
        if args.command == "dir":
            print(cache)
            return 0
        if args.command == "list":
            return list_command(cache)
        return fetch_command(args.names, cache)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
