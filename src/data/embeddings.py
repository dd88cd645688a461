"""Initial embedding vectors for a vocabulary: gensim Word2Vec trained on the training split, or vectors read
from a word2vec/GloVe file with gensim KeyedVectors. The matrix is cached by the text pipeline (keyed by the
vocabulary's cache key and the embedding settings) and handed to the task by path (TextSpec.vectors), so a
second run skips both the training and the reading of a large file.

Row 0 (<pad>) is zero; vocabulary entries that a file lacks get small random vectors (so they still train).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.common.errors import ConfigError, DataError, encoding_hint, not_there
from src.common.files import sha256_file
from src.data.text_pipeline import cache_file, cached

log = logging.getLogger(__name__)

KINDS = ("random", "word2vec", "pretrained")
WORD2VEC_KEYS = ("window", "epochs", "sg", "negative", "min_count", "seed")


def prepare_vectors(
    cfg: dict, vocab: Sequence[str], train_x: np.ndarray, train_lengths: np.ndarray, cache_dir: Path, key: dict
) -> str:
    """Compute (or find in the cache) the [len(vocab), cfg['dim']] matrix; returns the path of its .npz."""
    kind, dim = cfg.get("kind"), cfg.get("dim")
    if kind not in KINDS:
        raise ConfigError(f"embedding.kind={kind!r} is not one of {KINDS}")
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"embedding.dim={dim!r} must be a positive integer")
    if kind == "word2vec":
        settings = {k: cfg.get(k) for k in WORD2VEC_KEYS}
        key = {**key, "kind": kind, "dim": dim, **settings}

        def build() -> dict[str, np.ndarray]:
            vectors = word2vec_vectors(vocab, train_x, train_lengths, dim, settings)
            return {"vectors": vectors, "found": np.abs(vectors).sum(1) > 0}
    else:
        path = Path(str(cfg.get("path") or "")).expanduser()
        if not cfg.get("path"):
            raise ConfigError("embedding=pretrained needs embedding.path=<word2vec or GloVe vectors file>")
        if path.is_dir():
            raise ConfigError(
                f"embedding.path={path} is a directory; give the vectors file itself (word2vec or "
                f"GloVe text, or word2vec binary)"
            )
        if not path.is_file():
            raise ConfigError(f"embedding.path={path} {not_there(path)}; give the vectors file itself")
        # The content, not size + mtime: an edited file of the same size must not reuse the old vectors.
        key = {
            **key,
            "kind": kind,
            "dim": dim,
            "sha256": sha256_file(path),
            "binary": cfg.get("binary"),
            "limit": cfg.get("limit"),
        }

        def build() -> dict[str, np.ndarray]:
            vectors, found = pretrained_vectors(path, vocab, dim, cfg.get("binary"), cfg.get("limit"))
            return {"vectors": vectors, "found": found}

    def read(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
        vectors, found = arrays["vectors"], arrays["found"]
        if vectors.shape != (len(vocab), dim) or found.shape != (len(vocab),) or not np.isfinite(vectors).all():
            raise ValueError(f"vectors {vectors.shape} for a vocabulary of {len(vocab)} x embedding.dim={dim}")
        return vectors, found.astype(bool)

    _, found = cached(cache_dir, "vectors", key, build, read)
    counts = np.bincount(train_x[train_x > 0], minlength=len(vocab))
    log.info(
        "embedding=%s: vectors for %.1f%% of the vocabulary (%d of %d entries), %.1f%% of training tokens",
        kind,
        100 * found[2:].mean(),
        found[2:].sum(),
        len(vocab) - 2,
        100 * counts[found].sum() / max(counts.sum(), 1),
    )
    return str(cache_file(cache_dir, "vectors", key))


def word2vec_vectors(
    vocab: Sequence[str], train_x: np.ndarray, train_lengths: np.ndarray, dim: int, settings: dict
) -> np.ndarray:
    """Word2Vec on the training split as the model sees it (rare tokens already <unk>), one worker so the
    vectors are the same on every run."""
    from gensim.models import Word2Vec

    sentences = [[vocab[i] for i in row[:n]] for row, n in zip(train_x, train_lengths)]
    model = Word2Vec(
        sentences,
        vector_size=dim,
        window=settings["window"] or 5,
        min_count=1,
        workers=1,
        sg=int(settings["sg"] or 0),
        negative=settings["negative"] or 5,
        epochs=settings["epochs"] or 5,
        seed=settings["seed"] or 0,
    )
    vectors = np.zeros((len(vocab), dim), dtype=np.float32)
    for i, token in enumerate(vocab[1:], start=1):
        if token in model.wv.key_to_index:
            vectors[i] = model.wv[token]
    return vectors


def read_keyed_vectors(path: Path, binary, limit):
    """gensim KeyedVectors from word2vec text (with a `count dim` header), GloVe text (no header) or word2vec
    binary (by suffix .bin, or embedding.binary=true). Words must be UTF-8: a line in another encoding is an
    error naming it, never a word silently turned into replacement characters."""
    from gensim.models import KeyedVectors

    if binary is None:
        binary = path.name.endswith((".bin", ".bin.gz"))
    no_header = False
    if not binary:
        import gzip

        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                first = f.readline().split()
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: unreadable ({e})") from None
        if not first:
            raise DataError(f"{path}:1: empty; expected `<count> <dim>` (word2vec) or `<word> <values...>` (GloVe)")
        no_header = not (len(first) == 2 and all(v.isdigit() for v in first))
        # gensim fills a GloVe line that is cut short with values of its own: checked here, line by line
        if (short := _short_line(path, no_header)) is not None:
            raise short
    try:
        return KeyedVectors.load_word2vec_format(
            str(path), binary=bool(binary), no_header=no_header, limit=limit, unicode_errors="strict"
        )
    except UnicodeDecodeError:
        raise (
            DataError(f"{path}: a word is not UTF-8; convert the file to UTF-8") if binary else _not_utf8(path)
        ) from None
    except (ValueError, EOFError, OSError) as e:
        short = None if binary else _short_line(path, no_header)
        if short is not None:
            raise short from None
        advice = (
            "check the file is word2vec binary, or set embedding.binary=false for a text file"
            if binary
            else "set embedding.binary=true for binary word2vec files"
        )
        raise DataError(f"{path}: not a word2vec/GloVe vectors file ({e}); {advice}") from None


def _short_line(path: Path, no_header: bool) -> DataError | None:
    """The error for a text vectors file's first line whose number of values differs from the file's dimension
    (the header's, else the first line's): a line cut short is named, not answered with advice for binary files."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    dim = None
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").rstrip("\r").split(" ")
            fields = [v for v in fields if v]
            if number == 1 and not no_header:
                dim = int(fields[1])
                continue
            if not fields:
                continue
            if dim is None:
                dim = len(fields) - 1
            if len(fields) - 1 != dim:
                return DataError(
                    f"{path}:{number}: the word {fields[0]!r} has {len(fields) - 1} values where the file's vectors "
                    f"have {dim}; the line is cut short or damaged: fix or delete it"
                )
    return None


def _not_utf8(path: Path) -> DataError:
    """The error for a text vectors file with a line that is not UTF-8, naming the first such line."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return DataError(f"{path}:{number}: byte {raw[e.start]:#04x} is not UTF-8; {encoding_hint(data, path)}")
    return DataError(f"{path}: not UTF-8; convert the file to UTF-8")


def pretrained_vectors(path: Path, vocab: Sequence[str], dim: int, binary, limit) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and which rows the file had a vector for."""
    kv = read_keyed_vectors(path, binary, limit)
    if kv.vector_size != dim:
        raise ConfigError(
            f"{path}:1: the vectors have {kv.vector_size} dimensions but embedding.dim={dim}; "
            f"set embedding.dim={kv.vector_size}"
        )
    rows = np.full(len(vocab), -1)
    for i, token in enumerate(vocab[2:], start=2):
        for candidate in (token, token.lower()):  # GloVe is lower-case; word2vec files often are not
            if candidate in kv.key_to_index:
                rows[i] = kv.key_to_index[candidate]
                break
    found = rows >= 0
    if not found.any():
        raise DataError(
            f"{path}: none of the {len(vocab) - 2} vocabulary tokens has a vector in this file; "
            f"is it for another language or tokenizer?"
        )
    # Missing tokens (and <unk>) start random at the file's own scale, so they train like the others.
    rng = np.random.default_rng(0)
    vectors = rng.normal(0.0, float(kv.vectors[rows[found]].std()), (len(vocab), dim)).astype(np.float32)
    vectors[found] = kv.vectors[rows[found]]
    vectors[0] = 0.0
    return vectors, found
