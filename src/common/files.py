"""Writes that never leave a half-written file behind, never follow a symbolic link out of the folder they belong
to (a run dir, the cache), and checksums."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from src.common.errors import ConfigError


class LinkError(ConfigError):
    """A symbolic link where a run dir or the cache has a file or folder of its own."""


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def link_error(path: str | Path) -> LinkError:
    path = Path(path)
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return LinkError(
        f"{path} is a symbolic link (-> {target}); rnn-bench never writes through a link in a run dir or the "
        f"cache (it could overwrite a file elsewhere): remove the link (rm {_quoted(path)}) and run again"
    )


def refuse_links(path: str | Path, root: str | Path) -> None:
    """LinkError if `path` or any folder between `root` and it is a symbolic link. `root` itself may be one (a
    run dir or cache on another disk is the user's choice); what lies inside it must not lead out of it."""
    path, root = Path(path), Path(root)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)  # not below root: at least the file itself
        root = path.parent
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise link_error(current)


def open_nofollow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """os.open(path, flags) that refuses a symbolic link at `path` (O_NOFOLLOW) with a LinkError."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or Path(path).is_symlink():
            raise link_error(path) from None
        raise


def probe_writable(folder: str | Path) -> None:
    """Create and remove a file in `folder` (OSError if it cannot be written). mkstemp creates a new file of a
    fresh name (O_EXCL), so a link planted under a fixed probe name is never followed."""
    fd, name = tempfile.mkstemp(prefix=".write_test.", dir=folder)
    os.close(fd)
    os.unlink(name)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> str:
    """One sha256 over many files: each one's path relative to `root` and its content, in sorted order, so an
    edit, a rename, an added or a removed file all change it."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(Path(path).relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None], within: str | Path | None = None) -> Path:
    """Call write(tmp) on a temporary file next to `path`, then rename it over `path` (atomic on POSIX). The
    file gets the permissions of the umask, as a plain open() would give (mkstemp creates it 0600). `within`:
    the folder `path` belongs to (a run dir, the cache): a link on the way from it to `path`, or `path` itself
    being one, is refused (LinkError)."""
    path = Path(path)
    if within is not None:
        refuse_links(path, within)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, within: str | Path | None = None) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), within)


def atomic_write_json(path: str | Path, obj: Any, within: str | Path | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", within)


def atomic_save_npz(path: str | Path, within: str | Path | None = None, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
            np.savez(f, **arrays)

    return atomic_write(path, write, within)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load arrays saved by atomic_save_npz; never unpickles (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
