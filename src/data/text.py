"""Text as token ids: read labelled lines, split into train/val/test, tokenize (jieba words, characters or
English words), build the vocabulary from the training split with gensim, encode as padded ids + true lengths.

Two caches, both .npz keyed by the source's checksum and the settings that shape them: the tokenized splits
(so a second run, or a sweep over min_freq / max_len, skips segmentation) and the encoded tensors.
Id 0 is `<pad>` (never a real token: the model masks it) and id 1 is `<unk>` (tokens outside the vocabulary).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from src.data.sources import cached_arrays
from src.data.splits import PARTS, carve
from src.data.tensors import Batch, Batches, DataSpec, TensorDataModule
from src.data.tokens import PAD, UNK, UNK_ID
from src.errors import ConfigError, DataError

log = logging.getLogger(__name__)
logging.getLogger("gensim").setLevel(logging.WARNING)  # its INFO lines per call would drown the run's log

TOKENIZERS = ("word", "char", "english")
# Separators of the tokenized-text cache; control characters are removed from texts before tokenizing.
_TOK, _DOC = "\x1f", "\x1e"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ENGLISH = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


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
            raise DataError(f"{path} does not exist")
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
                f"convert the file, e.g. `iconv -f GBK -t UTF-8 {path.name} > fixed.txt`"
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


# -- tokenizing -------------------------------------------------------------------------------------------------
def tokenizer(kind: str) -> Callable[[str], list[str]]:
    """word: jieba's segmentation (Chinese); char: one token per character; english: lower-case words and
    punctuation marks. Whitespace never becomes a token."""
    if kind == "word":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return lambda text: [w for w in jieba.lcut(text) if not w.isspace()]
    if kind == "char":
        return lambda text: [c for c in text if not c.isspace()]
    if kind == "english":
        return lambda text: _ENGLISH.findall(text.lower())
    raise ConfigError(f"dataset.tokenizer={kind!r} is not one of {TOKENIZERS}")


def tokenizer_version(kind: str) -> str:
    """Part of the cache key: a new jieba may segment differently."""
    if kind == "word":
        import jieba

        return f"jieba-{jieba.__version__}"
    return kind + "-1"


def clean(text: str) -> str:
    return _CONTROL.sub(" ", text)


def pack(docs: Sequence[Sequence[str]]) -> np.ndarray:
    """Token lists -> one UTF-8 byte array (no pickle in caches)."""
    return np.frombuffer(_DOC.join(_TOK.join(d) for d in docs).encode("utf-8"), dtype=np.uint8)


def unpack(blob: np.ndarray, n: int) -> list[list[str]]:
    if n == 0:
        return []
    return [doc.split(_TOK) if doc else [] for doc in blob.tobytes().decode("utf-8").split(_DOC)]


# -- vocabulary and encoding ------------------------------------------------------------------------------------
def build_vocab(docs: Sequence[Sequence[str]], min_freq: int, max_size: int | None, where: str):
    """gensim Dictionary over the training docs, filtered to tokens in at least `min_freq` docs (gensim's
    document frequency, as in the tutorial), the `max_size` most frequent kept. Returns the Dictionary."""
    from gensim.corpora import Dictionary

    if not isinstance(min_freq, int) or min_freq < 1:
        raise ConfigError(f"dataset.min_freq={min_freq!r} must be a positive integer")
    if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
        raise ConfigError(f"dataset.max_size={max_size!r} must be a positive integer or null (no limit)")
    dictionary = Dictionary(docs)
    most = max(dictionary.dfs.values(), default=0)
    dictionary.filter_extremes(no_below=min_freq, no_above=1.0, keep_n=max_size)
    if len(dictionary) == 0:
        raise ConfigError(
            f"dataset.min_freq={min_freq} leaves an empty vocabulary: no token of {where} "
            f"appears in that many training texts (the most common appears in {most}); "
            f"lower dataset.min_freq"
        )
    return dictionary


def vocab_tokens(dictionary) -> list[str]:
    return [PAD, UNK] + [dictionary[i] for i in range(len(dictionary))]


def encode(docs: Sequence[Sequence[str]], dictionary, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids [N, T] (T = the longest kept length) and true lengths [N]; tokens past max_len are cut."""
    lengths = np.array([min(len(d), max_len) for d in docs], dtype=np.int64)
    x = np.zeros((len(docs), int(lengths.max(initial=1))), dtype=np.int32)
    for i, doc in enumerate(docs):
        # doc2idx gives -1 for tokens outside the vocabulary; +2 makes that <unk> (1) and leaves 0 for padding
        x[i, : lengths[i]] = np.asarray(dictionary.doc2idx(doc[:max_len], unknown_word_index=-1)) + 2
    return x, lengths


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
            steps = int(batch.lengths.max())
            y = batch.y[:, :steps] if batch.y.dim() > 1 else batch.y
            yield Batch(batch.x[:, :steps], batch.lengths, y)


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
            raise ConfigError(f"dataset.tokenizer={self.tokenizer!r} is not one of {TOKENIZERS}")
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(f"dataset.max_len={max_len!r} must be a positive integer")
        self.min_freq, self.max_size, self.max_len = min_freq, max_size, max_len
        self.embedding = dict(embedding or {"kind": "random"})
        self.vocab: list[str] = []
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
        return {**self.split_key(), "tokenizer": tokenizer_version(self.tokenizer), "format": 1}

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
            arrays = {}
            for name in ("train", "val", "test"):
                docs, targets = self.tokenize_records(splits[name], tokenize)
                arrays[f"{name}_tokens"], arrays[f"{name}_n"] = pack(docs), np.array(len(docs))
                arrays.update(self.pack_targets(name, targets))
            arrays.update({f"stat_{k}": np.array(v) for k, v in self.stats.items()})
            return arrays

        arrays = cached_arrays(self.cache_dir, f"{self.NAME}-tokens", self.tokens_key(), build)
        self.stats = {k[5:]: v.item() for k, v in arrays.items() if k.startswith("stat_")}
        return {
            name: (unpack(arrays[f"{name}_tokens"], int(arrays[f"{name}_n"])), self.unpack_targets(name, arrays))
            for name in ("train", "val", "test")
        }

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
            "format": 1,
        }

    def load_splits(self) -> dict[str, tuple]:
        def build() -> dict[str, np.ndarray]:
            docs = self.tokenized()
            dictionary = build_vocab(docs["train"][0], self.min_freq, self.max_size, f"{self.NAME} (train)")
            arrays: dict[str, np.ndarray] = {"vocab": np.array(vocab_tokens(dictionary), dtype=str)}
            lengths = {}
            for name, (tokens, _) in docs.items():
                arrays[f"{name}_x"], lengths[name] = encode(tokens, dictionary, self.max_len)
                arrays[f"{name}_lengths"] = lengths[name]
                cut = sum(max(len(t) - self.max_len, 0) for t in tokens)
                arrays[f"stat_{name}_truncated_tokens"] = np.array(cut)
            arrays.update(self.encode_targets(docs, lengths))
            arrays["labels"] = np.array(self.labels, dtype=str)
            arrays.update({f"stat_{k}": np.array(v) for k, v in self.stats.items()})
            return arrays

        key = self.encoded_key()
        arrays = cached_arrays(self.cache_dir, f"{self.NAME}-ids", key, build)
        self.vocab, self.labels = arrays["vocab"].tolist(), arrays["labels"].tolist()
        self.stats = {k[5:]: v.item() for k, v in arrays.items() if k.startswith("stat_")}
        self.vocab_size, self.num_classes = len(self.vocab), len(self.labels)
        splits = {
            name: (arrays[f"{name}_x"].astype(np.int64), arrays[f"{name}_lengths"], arrays[f"{name}_y"])
            for name in ("train", "val", "test")
        }
        self.log_summary(splits)
        if self.embedding.get("kind", "random") != "random":
            from src.data.embeddings import prepare_vectors

            train_x, train_len, _ = splits["train"]
            self.vectors_path = prepare_vectors(
                self.embedding, self.vocab, train_x, train_len, self.cache_dir, {"ids": key}
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

    def _batches(self, split: str, train: bool) -> TrimmedBatches:
        return TrimmedBatches(super()._batches(split, train))

    @property
    def spec(self) -> TextSpec:
        base = super().spec
        return TextSpec(**dataclasses.asdict(base), vectors=self.vectors_path)
