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
    reference: str  # settings that pick one row: `key=value` terms (cell=lstm model.params=100000), or a cell name
    test: str = "welch"
    alpha: float = 0.05
    correction: str = "holm"

    def described(self) -> str:
        """The test as the output names it."""
        test = "Welch's t-test" if self.test == "welch" else "the Mann-Whitney U test"
        corrected = ", Holm-corrected over the task's comparisons" if self.correction == "holm" else ""
        return f"{test} (two-sided, scipy){corrected}, p < {self.alpha:g}"


@dataclass
class Comparison:
    row: Row
    n: int
    diff: float | None  # row mean - reference mean
    p: float | None  # None: too few seeds, or both samples constant (no test possible)
    p_adjusted: float | None
    verdict: str


def is_reference(row: Row, reference: str) -> bool:
    """The row's runs all match every term of `reference` (whitespace-separated): `key=value`, read from the runs'
    overrides (a setting that does not vary within a task is not in the row's setting) or, for what metrics.json
    records (cell, depth, direction, truncation, ...), from their records; a bare word is a cell name."""
    terms = reference.split()
    return bool(row.runs and terms) and all(all(_matches(run, term) for term in terms) for run in row.runs)


def _matches(run, term: str) -> bool:
    if "=" not in term:
        return str(run.record.get("cell")) == term
    key, _, value = term.partition("=")
    if key in run.overrides:
        return run.overrides[key] == value
    recorded = run.record.get(key)
    return recorded is not None and str(recorded) == value


def mark_winners(section: Section, options: SignificanceOptions) -> None:
    """★ (row.best) on the task's winning group: the best row that beats the baseline (or of a task without one)
    and every row not significantly different from it by `options` (each against the best across seeds, corrected
    over those comparisons). A row with fewer than 2 values cannot be tested: it joins only with the best's mean.
    A row at or below the baseline (beats_baseline False) is never marked."""
    rows = [row for row in section.ranked_rows() if row.beats_baseline is not False and row.tuned != "not picked"]
    for row in section.rows:
        row.best = False
    if not rows:
        return
    top, others = rows[0], rows[1:]
    top.best = True
    ps = [p_value(row.values, top.values, options.test) for row in others]
    adjusted = holm(ps) if options.correction == "holm" else list(ps)
    for row, q in zip(others, adjusted):
        row.best = row.mean == top.mean if q is None else q >= options.alpha


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
    md = [
        f"## Significance against {options.reference}",
        "",
        f"Per task, each row's test metric over its seeds against the reference row's: {options.described()} "
        f"reads as better / worse.",
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
