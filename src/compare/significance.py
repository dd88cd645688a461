"""Which differences between rows are real: every row of a task against a reference row across seeds (Welch's
t-test or the Mann-Whitney U test from scipy), Holm-corrected over the task's comparisons (`python -m src.compare
--significance REF`).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from src.common.markdown import Markdown, md_text
from src.compare.leaderboard import Row, Section, _num, better, label, markdown_table, value_text

TESTS = ("welch", "mannwhitney")
CORRECTIONS = ("holm", "none")


@dataclass
class SignificanceOptions:
    reference: str  # `key=value` among a row's overrides (cell.variant=V), or a cell name (lstm)
    test: str = "welch"
    alpha: float = 0.05
    correction: str = "holm"


@dataclass
class Comparison:
    row: Row
    n: int
    diff: float | None  # row mean - reference mean
    p: float | None  # None: too few seeds, or both samples constant (no test possible)
    p_adjusted: float | None
    verdict: str


def is_reference(row: Row, reference: str) -> bool:
    """The row's runs all have the override `reference` (key=value; read from the runs, as a setting that does not
    vary within a task is not in the row's setting), or the row's cell is `reference`."""
    if "=" in reference:
        key, _, value = reference.partition("=")
        return bool(row.runs) and all(run.overrides.get(key) == value for run in row.runs)
    return str(row.arch[0]) == reference


def p_value(a: Sequence[float], b: Sequence[float], test: str) -> float | None:
    """Two-sided p of `a` against `b`; None when it is undefined (fewer than 2 values in a sample, or for Welch's
    t both samples constant: no variance to test against)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if test == "welch" and statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None
    with warnings.catch_warnings():
        # One constant sample (every seed solved the task) is valid for Welch; scipy warns of "precision loss".
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "welch":
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        else:
            p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count as a comparison)."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    adjusted: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p))
        adjusted[i] = running
    return adjusted


def significance(section: Section, options: SignificanceOptions) -> tuple[Row | None, list[Comparison], str]:
    """(the reference row, each other row against it, a note): the reference is the one row of the task that
    `options.reference` names; the verdict is better / worse (in the task's direction) when the adjusted p is below
    alpha, else no significant difference."""
    rows = section.ranked_rows()
    refs = [row for row in rows if is_reference(row, options.reference)]
    if len(refs) != 1:
        why = "no row" if not refs else f"{len(refs)} rows ({', '.join(label(r) for r in refs)})"
        return None, [], f"{why} match {options.reference}: no test"
    ref = refs[0]
    others = [row for row in rows if row is not ref]
    ps = [p_value(row.values, ref.values, options.test) for row in others]
    adjusted = holm(ps) if options.correction == "holm" else list(ps)
    found = []
    for row, p, q in zip(others, ps, adjusted):
        diff = row.mean - ref.mean if row.mean is not None and ref.mean is not None else None
        if p is None:
            constant = len(row.values) > 1 and len(ref.values) > 1
            verdict = (
                "identical values: no test"
                if constant and sorted(row.values) == sorted(ref.values)
                else ("constant samples: no test" if constant else "fewer than 2 seeds: no test")
            )
        elif q is not None and q < options.alpha:
            verdict = Markdown("**better**" if better(row.mean, ref.mean, section.higher_is_better) else "**worse**")
        else:
            verdict = "no significant difference"
        found.append(Comparison(row, len(row.values), diff, p, q, verdict))
    return ref, found, ""


def significance_markdown(sections: Sequence[Section], options: SignificanceOptions) -> list[str]:
    test = "Welch's t-test" if options.test == "welch" else "Mann-Whitney U test"
    corrected = " Holm-corrected over the task's comparisons;" if options.correction == "holm" else ""
    md = [
        f"## Significance against {options.reference}",
        "",
        f"Per task, each row's test metric over its seeds against the reference row's, {test} (two-sided, "
        f"scipy);{corrected} better / worse when the {'adjusted ' if corrected else ''}p < {options.alpha:g}.",
        "",
    ]
    for section in sections:
        if section.absent:
            continue
        ref, found, note = significance(section, options)
        md += [f"### {md_text(section.dataset)}: {md_text(section.metric)}", ""]
        if ref is None:
            md += [note + ".", ""]
            continue
        lines = [
            {
                "row": label(c.row),
                "seeds": c.n,
                "mean": _num(c.row.mean),
                "minus reference": _num(c.diff, "+.3g"),
                "p": _num(c.p, ".3g"),
                **({"p (Holm)": _num(c.p_adjusted, ".3g")} if options.correction == "holm" else {}),
                "verdict": c.verdict,
            }
            for c in found
        ]
        md += [
            f"Reference: {md_text(label(ref))}, {value_text(ref)} over {len(ref.values)} seeds.",
            "",
            markdown_table(lines, escape=True) if lines else "(no other row)",
            "",
        ]
    return md
