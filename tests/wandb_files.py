"""A W&B run's offline files read back: what `wandb sync` would upload. The .wandb file is a log of wandb's own
protobuf records (wandb.proto.wandb_internal_pb2.Record) in LevelDB's log format (32 KiB blocks of chunks, each
with a 7-byte header: CRC-32, length, type), after a 7-byte file header (":W&B", 0xBEE1, version). wandb (0.20 on)
has no Python reader of its own any more; its Go core writes the file."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version
CHUNK = struct.Struct("<IHB")  # CRC-32, length, type: 1 full, 2 first, 3 middle, 4 last
FULL, LAST = 1, 4


@dataclass
class OfflineRun:
    """One offline run's files: what wandb.init was given, what was logged, how it ended."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    finished: bool = False


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # the block's tail: padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(items) -> dict[str, Any]:
    return {".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in items}


def read_run(folder: Path) -> OfflineRun:
    """The run in `folder` (<run dir>/wandb/offline-run-<time>-<id>/)."""
    (path,) = folder.glob("run-*.wandb")
    run = OfflineRun(path)
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags, run.resumed = list(r.tags), r.resumed
            run.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "exit":
            run.finished = True
    return run


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline W&B run a run dir holds (one per attempt: a resumed run adds one with the same id)."""
    return [read_run(folder) for folder in sorted((run_dir / "wandb").glob("offline-run-*"))]
