"""python -m src.data list | fetch [names...] | dir: the data sets and their cache.

  list    every data set (conf/dataset/): where its bytes come from, whether they are in the cache, their size
  fetch   download and verify (sha256) the pinned artifacts of the named data sets (default: every data set that
          has any), with a progress bar; then what is cached and its size. `make data` runs it.
  dir     print the cache folder

The cache is $RNN_BENCH_CACHE, else $RNN_BENCH_ROOT/.cache, else the repository's .cache/ (any working directory);
--cache-dir chooses another. What a data set needs is found by running its data module's own `fetch` (the step
every training run takes first) while src.data.sources records the artifacts it asks for. `fetch` writes what it
found and verified to <cache>/listing.json, with each file's size and modification time; `list` reads that
record and only looks at the files' sizes and times, so it hashes nothing (verification is fetch's). A data set
that is not in the record, whose files changed since, or whose code changed, is probed again with downloads off
(read and verified, never deleted) and recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from src.common.errors import UserError
from src.common.files import atomic_write_json
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


LISTING = "listing.json"  # in the cache: what fetch (or a list that had to probe) found, per data set


def code_hash() -> str:
    """One sha256 over the data modules' code and the data sets' configs: a record made by other code (another
    pin, another member) is not trusted."""
    digest = hashlib.sha256()
    for path in sorted([*Path(__file__).parent.glob("*.py"), *(CONF / "dataset").glob("*.yaml")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stamp(path: Path) -> dict | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def entry(status: Status, cache: Path) -> dict:
    """A data set's row of the record: what its probe found, with the size and time of each file it verified."""
    folders = []
    for artifact, _ in status.artifacts:
        name = getattr(artifact, "name", None) or getattr(artifact, "package", None)
        if name:
            folders.append(f"{name}-{getattr(artifact, 'version', '')}")
    members = [p for name in set(folders) if (cache / name).is_dir() for p in sorted((cache / name).rglob("*"))]
    return {
        "cached": status.cached,
        "source": status.source(),
        "error": status.error,
        "pinned": status.pinned,
        "files": [stamp(path) for _, path in status.artifacts if path is not None],
        "folders": sorted(set(folders)),
        "members": [stamp(p) for p in members if p.is_file()],  # extracted: a changed one is checked again
        "archives": stamp(cache / "archives"),  # a download adds a file there: a "no" is probed again
        "cwd": os.getcwd() if status.error and not status.pinned else None,  # dataset.data_dir is relative
    }


def still_true(row: dict, cache: Path) -> bool:
    """Whether a recorded row still describes the cache: every file it verified has the same size and
    modification time (a changed file is verified again), and a data set that lacked files has no new download."""
    if any(f is None or stamp(Path(f["path"])) != f for f in [*row.get("files", []), *row.get("members", [])]):
        return False
    if row.get("cached") == "no" and row.get("archives") != stamp(cache / "archives"):
        return False
    return row.get("cwd") in (None, os.getcwd())


def read_listing(cache: Path) -> dict:
    try:
        record = json.loads((cache / LISTING).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("code") != code_hash() or not isinstance(record.get("rows"), dict):
        return {}
    return {k: v for k, v in record["rows"].items() if isinstance(v, dict)}


def write_listing(cache: Path, rows: dict[str, dict]) -> None:
    """Best effort for list (a read-only cache is still listed); fetch has written to the cache already."""
    try:
        atomic_write_json(cache / LISTING, {"code": code_hash(), "rows": rows})
    except OSError:
        pass


def size(row: dict, cache: Path) -> int:
    """Bytes in the cache: each archive and the folders its members were extracted to."""
    total = sum(f["size"] for f in row.get("files", []) if f)
    for name in row.get("folders", []):
        folder = cache / name
        if folder.is_dir():
            total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


def table(rows: dict[str, dict], cache: Path) -> str:
    lines = [("data set", "cached", "size", "source")]
    for name, row in rows.items():
        lines.append((name, row["cached"], human(size(row, cache)) if row["cached"] == "yes" else "-", row["source"]))
    widths = [max(len(r[i]) for r in lines) for i in range(3)]
    return "\n".join(" ".join(r[i].ljust(widths[i]) for i in range(3)) + " " + r[3] for r in lines)


def cache_total(cache: Path) -> str:
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    return f"cache {cache}: {human(size)} in all"


def warn_damaged(rows: dict[str, dict]) -> None:
    """A pinned data set whose files are there but fail their check: said, never silently shown as missing."""
    for name, row in rows.items():
        if row["pinned"] and row["error"]:
            print(f"warning: {name}: {row['error']}", file=sys.stderr)


def list_command(cache: Path) -> int:
    recorded = read_listing(cache)
    rows: dict[str, dict] = {}
    for name in dataset_names():
        row = recorded.get(name)
        rows[name] = row if row is not None and still_true(row, cache) else entry(probe(name, cache, False), cache)
    if rows != recorded and cache.is_dir():
        write_listing(cache, rows)
    print(table(rows, cache))
    print(cache_total(cache))
    warn_damaged(rows)
    return 0


def fetch_command(names: list[str], cache: Path) -> int:
    from tqdm import tqdm

    known = dataset_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown data set {', '.join(map(repr, unknown))}; the data sets are {', '.join(known)}")
    cache.mkdir(parents=True, exist_ok=True)  # a cache that cannot be written is said before anything is fetched
    recorded = read_listing(cache)
    if not names:  # every data set with pinned artifacts
        for name in known:
            recorded[name] = entry(probe(name, cache, downloads=False), cache)
        names = [n for n in known if recorded[n]["pinned"]]
    rows = {}
    with tqdm(names, desc="fetch", unit="data set", file=sys.stderr) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            rows[name] = recorded[name] = entry(probe(name, cache, downloads=True), cache)
    atomic_write_json(cache / LISTING, {"code": code_hash(), "rows": recorded})
    print(table(rows, cache))
    print(cache_total(cache))
    failed = [(n, r) for n, r in rows.items() if r["error"]]
    for name, row in failed:
        print(f"error: {name}: {row['error']}", file=sys.stderr)
    return 2 if failed else 0


def check_cache(cache: Path) -> None:
    """A cache path that is not a folder is said as such (listed, it would look like an empty cache)."""
    for parent in (cache, *cache.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file, not a folder" if parent == cache else f"cannot be a folder: {parent} is a file"
                raise UserError(
                    f"the cache {cache} {what}; choose a folder with --cache-dir <dir> or RNN_BENCH_CACHE=<dir>"
                )
            return


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
        check_cache(cache)
        if args.command == "list":
            return list_command(cache)
        return fetch_command(args.names, cache)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the cache (or a folder in it) cannot be created or written
        where = "" if e.filename in (None, str(cache)) else f"{e.filename}: "
        print(
            f"error: cannot write the cache {cache}: {where}{e.strerror or e}; choose a writable folder with "
            f"--cache-dir <dir> or RNN_BENCH_CACHE=<dir>",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
