"""Classification and tagging data: read labelled lines, split into train/val/test, then the text pipeline
(src/data/text_pipeline.py): tokenize (jieba words, characters or English words), the vocabulary from the
training split, padded ids + true lengths.

Two caches: the tokenized splits (so a second run, or a sweep over min_freq / max_len, skips segmentation) and
the encoded tensors, both keyed by the source's checksum and the settings that shape them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np

from src.common.errors import ConfigError, DataError, encoding_hint, not_there
from src.data.splits import PARTS, carve
from src.data.tensors import Batches, DataSpec, TensorDataModule, cut
from src.data.text_pipeline import (
    SPLITS,
    TOKENIZERS,
    Vocabulary,
    cached,
    clean,
    pack_splits,
    tokenizer,
    tokenizer_version,
    unpack_splits,
)
from src.data.tokens import IGNORE, PAD, UNK, UNK_ID

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextSpec(DataSpec):
    """DataSpec plus where the task finds initial embedding vectors (embedding=word2vec|pretrained)."""

    vectors: str = ""  # an .npz in the cache with `vectors` [vocab_size, dim]; "" for random initialisation


@dataclasses.dataclass
class Records:
    """One split before tokenization: texts, their targets, and where each came from ("file:line")."""

    texts: list
    targets: list
    origins: list

    def take(self, idx: Sequence[int]) -> Records:
        return Records(*([values[i] for i in idx] for values in (self.texts, self.targets, self.origins)))

    def __len__(self) -> int:
        return len(self.texts)


# -- reading ----------------------------------------------------------------------------------------------------
def read_lines(path: Path, data: bytes | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line of a UTF-8 file (CRLF or LF). Blank lines are skipped (and
    counted in the log); undecodable bytes and an empty file are errors that name the file and the line."""
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise DataError(f"{path} {not_there(path)}")
        data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty; it should hold one text per line")
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the newline that ends the last line
    blank = 0
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{number}: byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8; "
                f"{encoding_hint(data, path)}"
            ) from None
        if number == 1:
            line = line.lstrip("\ufeff")  # a byte-order mark
        if line.strip():
            yield number, line
        else:
            blank += 1
    if blank:
        log.info("%s: skipped %d blank lines", path, blank)


def read_labelled(path: Path, data: bytes | None = None) -> Records:
    """`label<TAB>text` lines, the THUCNews/cnews format."""
    texts, labels, origins = [], [], []
    for number, line in read_lines(path, data):
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise DataError(f"{path}:{number}: expected `label<TAB>text`, found no tab after a label: {line[:60]!r}")
        texts.append(text)
        labels.append(label.strip())
        origins.append(f"{path}:{number}")
    return Records(texts, labels, origins)


# -- data modules -----------------------------------------------------------------------------------------------
class TrimmedBatches:
    """Batches cut to their own longest sequence. Text lengths vary a lot (the padded tensors are as long as the
    longest text of all), and the embedding and a tagger's per-step head would otherwise run on all that padding."""

    def __init__(self, batches: Batches):
        self.batches = batches

    def __getattr__(self, name: str):
        return getattr(self.batches, name)  # len, sampler, set_epoch: the wrapped loader's

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield cut(batch, int(batch.lengths.max()))

    def untrimmed(self) -> Batches:
        """The batches before the cut: a stacked job cuts its members' batches to their common longest
        (src/runs/seeds.py ZippedBatches)."""
        return self.batches


class TextDataModule(TensorDataModule):
    """Base for text data sets. Subclasses implement `read()` -> {split: Records} ("train" required; a missing
    val/test split is carved out of train here, before the vocabulary is built, so it never sees them) and
    `source_key()` (checksums of what read() reads). Classification targets are label strings."""

    NAME = "text"
    DEFAULT_TOKENIZER = "word"

    def __init__(
        self,
        tokenizer: str | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        max_len: int = 100,
        embedding: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer or self.DEFAULT_TOKENIZER
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"dataset.tokenizer={self.tokenizer!r} is not one of {sorted(TOKENIZERS)}")
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(f"dataset.max_len={max_len!r} must be a positive integer")
        self.min_freq, self.max_size, self.max_len = min_freq, max_size, max_len
        self.embedding = dict(embedding or {"kind": "random"})
        self.vocab = Vocabulary([PAD, UNK])
        self.labels: list[str] = []
        self.vectors_path = ""
        self.stats: dict = {}
        self._source_checksums: dict | None = None

    # -- to implement ------------------------------------------------------------------------------------------
    def read(self) -> dict[str, Records]:
        raise NotImplementedError

    def source_key(self) -> dict:
        raise NotImplementedError

    def tokenize_records(self, records: Records, tokenize: Callable[[str], list[str]]) -> tuple[list, list]:
        """(token lists, targets) of one split; texts with no token at all are dropped (and counted)."""
        docs = [tokenize(clean(text)) for text in records.texts]
        keep = [i for i, doc in enumerate(docs) if doc]
        if len(keep) < len(docs):
            log.info("%s: dropped %d texts with no tokens", self.NAME, len(docs) - len(keep))
        return [docs[i] for i in keep], [records.targets[i] for i in keep]

    # -- pipeline ----------------------------------------------------------------------------------------------
    def fetch(self) -> None:
        self.source_checksums()

    def source_checksums(self) -> dict:
        """source_key(), computed once per data module: fetch, the tokens' and the ids' cache keys all need it,
        and for a user folder it hashes every file's content."""
        if self._source_checksums is None:
            self._source_checksums = self.source_key()
        return self._source_checksums

    def split_key(self) -> dict:
        return {
            "source": self.source_checksums(),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
        }

    def tokens_key(self) -> dict:
        return {**self.split_key(), "tokenizer": tokenizer_version(self.tokenizer)}

    def carve(self, splits: dict[str, Records]) -> dict[str, Records]:
        """Missing val/test splits out of train, as TensorDataModule carves them (stratified by label)."""
        if "val" in splits and "test" in splits:
            return splits
        train = splits["train"]
        parts = carve(
            len(train),
            0 if "val" in splits else self.val_fraction,
            0 if "test" in splits else self.test_fraction,
            seed=self.split_seed,
            labels=self.split_labels(train),
            what=self.NAME,
        )
        return {name: splits[name] if name in splits and name != "train" else train.take(parts[name]) for name in PARTS}

    def split_labels(self, records: Records) -> np.ndarray | None:
        """A class id per record, to stratify the carving by; None carves at random."""
        classes = {label: i for i, label in enumerate(sorted(set(records.targets)))}
        return np.array([classes[t] for t in records.targets])

    def check_targets(self, splits: dict[str, Records]) -> None:
        """A label that train never has cannot be predicted: an error that names where it occurs."""
        seen = set(splits["train"].targets)
        for name in ("val", "test"):
            for label, origin in zip(splits[name].targets, splits[name].origins):
                if label not in seen:
                    raise DataError(
                        f"{origin}: label {label!r} occurs in the {name} split but never in train "
                        f"(train has {sorted(seen)}); fix the label or add training examples"
                    )

    def tokenized(self) -> dict[str, tuple[list[list[str]], list]]:
        """{split: (token lists, targets)}, from the cache when this source + tokenizer was seen before."""

        def build() -> dict[str, np.ndarray]:
            splits = self.carve(self.read())
            self.check_targets(splits)
            tokenize = tokenizer(self.tokenizer)
            docs = {name: self.tokenize_records(splits[name], tokenize) for name in SPLITS}
            arrays = pack_splits({name: tokens for name, (tokens, _) in docs.items()})
            for name, (_, targets) in docs.items():
                arrays.update(self.pack_targets(name, targets))
            arrays.update({f"stat_{k}": np.array(v) for k, v in self.stats.items()})
            return arrays

        def read(arrays: dict) -> dict[str, tuple[list[list[str]], list]]:
            out = {}
            for name, docs in unpack_splits(arrays).items():
                targets = self.unpack_targets(name, arrays)
                if len(targets) != len(docs):
                    raise ValueError(f"{len(targets)} {name} targets for {len(docs)} texts")
                out[name] = (docs, targets)
            self.stats = {k[5:]: v.item() for k, v in arrays.items() if k.startswith("stat_")}
            return out

        return cached(self.cache_dir, f"{self.NAME}-tokens", self.tokens_key(), build, read)

    def pack_targets(self, split: str, targets: list) -> dict[str, np.ndarray]:
        return {f"{split}_labels": np.array(targets, dtype=str)}

    def unpack_targets(self, split: str, arrays: dict) -> list:
        return arrays[f"{split}_labels"].tolist()

    def encode_targets(self, docs: dict, lengths: dict) -> dict[str, np.ndarray]:
        self.labels = sorted(set(docs["train"][1]))
        index = {label: i for i, label in enumerate(self.labels)}
        return {
            f"{name}_y": np.array([index[t] for t in targets], dtype=np.int64) for name, (_, targets) in docs.items()
        }

    def encoded_key(self) -> dict:
        return {
            "tokens": self.tokens_key(),
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "max_len": self.max_len,
        }

    def load_splits(self) -> dict[str, tuple]:
        def build() -> dict[str, np.ndarray]:
            docs = self.tokenized()
            vocab = Vocabulary.build(docs["train"][0], self.min_freq, self.max_size, where=f"{self.NAME} (train)")
            arrays: dict[str, np.ndarray] = {"vocab": np.array(vocab.tokens, dtype=str)}
            lengths = {}
            for name, (tokens, _) in docs.items():
                arrays[f"{name}_x"], lengths[name] = vocab.encode_padded(tokens, self.max_len)
                arrays[f"{name}_lengths"] = lengths[name]
                cut = sum(max(len(t) - self.max_len, 0) for t in tokens)
                arrays[f"stat_{name}_truncated_tokens"] = np.array(cut)
            arrays.update(self.encode_targets(docs, lengths))
            arrays["labels"] = np.array(self.labels, dtype=str)
            arrays.update({f"stat_{k}": np.array(v) for k, v in self.stats.items()})
            return arrays

        def read(arrays: dict) -> dict[str, tuple]:
            vocab, labels = Vocabulary(arrays["vocab"].tolist()), arrays["labels"].tolist()
            splits = {}
            for name in SPLITS:
                x, lengths, y = arrays[f"{name}_x"], arrays[f"{name}_lengths"], arrays[f"{name}_y"]
                vocab.check_ids(x, f"{name}_x")
                if len(lengths) != len(x) or len(y) != len(x) or (lengths > x.shape[1]).any():
                    raise ValueError(f"the {name} ids, lengths and targets do not match")
                if ((y < 0) & (y != IGNORE)).any() or (y >= len(labels)).any():
                    raise ValueError(f"{name}_y holds targets outside 0..{len(labels) - 1}")
                splits[name] = (x.astype(np.int64), lengths, y)
            self.vocab, self.labels = vocab, labels
            self.stats = {k[5:]: v.item() for k, v in arrays.items() if k.startswith("stat_")}
            return splits

        key = self.encoded_key()
        splits = cached(self.cache_dir, f"{self.NAME}-ids", key, build, read)
        self.vocab_size, self.num_classes = len(self.vocab), len(self.labels)
        self.log_summary(splits)
        if self.embedding.get("kind", "random") != "random":
            from src.data.embeddings import prepare_vectors

            train_x, train_len, _ = splits["train"]
            self.vectors_path = prepare_vectors(
                self.embedding, self.vocab.tokens, train_x, train_len, self.cache_dir, {"ids": key}
            )
        return splits

    def log_summary(self, splits: dict) -> None:
        sizes = ", ".join(f"{name} {len(s[0])}" for name, s in splits.items())
        unk = {name: float((s[0] == UNK_ID).sum() / max(s[1].sum(), 1)) for name, s in splits.items()}
        log.info(
            "%s: %s sequences; vocabulary %d (tokenizer=%s, min_freq=%d); <unk> share val %.1f%% test %.1f%%; "
            "%d classes",
            self.NAME,
            sizes,
            len(self.vocab),
            self.tokenizer,
            self.min_freq,
            100 * unk["val"],
            100 * unk["test"],
            len(self.labels),
        )
        for key, value in self.stats.items():
            if value:
                log.info("%s: %s = %s", self.NAME, key, value)

    def batches(self, split: str, train: bool, trainer: L.Trainer | None) -> TrimmedBatches:
        return TrimmedBatches(super().batches(split, train, trainer))

    @property
    def spec(self) -> TextSpec:
        base = super().spec
        return TextSpec(**dataclasses.asdict(base), vectors=self.vectors_path)
