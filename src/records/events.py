"""TensorBoard event files read back (a run's <run dir>/tensorboard/events.out.tfevents.*), without TensorBoard: the
files are TFRecords (a length, its CRC, an Event proto, the proto's CRC), the Event proto is tensorboardX's (a
dependency of the suite). src.compare reads a run's curves from them when the run has no CSV (logger=tensorboard).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENTS_GLOB = "events.out.tfevents.*"


def read_events(path: Path) -> Iterator[Any]:
    """The Event protos of one event file, in order; a record cut short (a run killed mid-write) ends it."""
    from tensorboardX.proto.event_pb2 import Event

    data, at = Path(path).read_bytes(), 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        end = at + 12 + length
        if end + 4 > len(data):
            return
        try:
            yield Event.FromString(data[at + 12 : end])
        except Exception:  # a damaged record: what was read before it stands (protobuf's DecodeError)
            return
        at = end + 4


def event_files(directory: Path) -> list[Path]:
    """A logger dir's event files, in the order they were written (each phase opens its own)."""
    return sorted(Path(directory).glob(EVENTS_GLOB), key=lambda p: (p.stat().st_mtime, p.name))


def scalars(directory: Path, tags: list[str] | None = None) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in a logger dir's event files (the last value at a step wins), only
    `tags` when given; non-finite values are left out."""
    found: dict[str, dict[int, float]] = {t: {} for t in tags or []}
    for path in event_files(directory):
        for event in read_events(path):
            for value in event.summary.value:
                if value.WhichOneof("value") != "simple_value" or (tags is not None and value.tag not in found):
                    continue
                if math.isfinite(value.simple_value):
                    found.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    return found


def hparams(directory: Path) -> dict[str, Any]:
    """What the HParams tab shows of a run: {"hparams": {name: value}, "metrics": {name: value}}, from the
    session-start record (hparams plugin data) and the last scalar of each metric its experiment summary names."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    settings: dict[str, Any] = {}
    metric_names: list[str] = []
    for path in event_files(directory):
        for event in read_events(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    for name, v in data.session_start_info.hparams.items():
                        settings[name] = getattr(v, v.WhichOneof("kind")) if v.WhichOneof("kind") else None
                if data.HasField("experiment"):
                    metric_names += [m.name.tag for m in data.experiment.metric_infos]
    values = scalars(directory, metric_names) if metric_names else {}
    last = {name: steps[max(steps)] for name, steps in values.items() if steps}
    return {"hparams": settings, "metrics": last}
