"""Markdown tables, as the leaderboards, the benchmarks and the command-line reports write them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Markdown(str):
    """Text the suite formats itself (`**best** ★`, `*baseline*`): written as it is where other strings are
    escaped."""


# What lets a string from a file make markup of its own in a table cell or a heading: a cell break, a line
# break, HTML, a link or an image, code; a backslash first, so an escape cannot be undone.
_ESCAPES = {"\\": "\\\\", "|": "\\|", "[": "\\[", "]": "\\]", "`": "\\`", "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def md_text(value: Any) -> str:
    """`value` as plain text in markdown: nothing in it becomes markup (a hostile metrics.json's strings)."""
    if isinstance(value, Markdown):
        return str(value)
    text = " ".join(str(value).split()) if "\n" in str(value) or "\r" in str(value) else str(value)
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, escape: bool = False) -> str:
    """escape: every string but a Markdown one is written as plain text (md_text): the leaderboards, whose
    strings come from run records on disk."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    text = md_text if escape else str

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else text(v))

    lines = ["| " + " | ".join(text(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
