# SPDX-License-Identifier: GPL-2.0-or-later
"""Per-precinct request counts, rates per registered voter, empirical-Bayes smoothing and quintiles."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np


def slugify(text: str, max_len: int = 40) -> str:
    """ASCII, lowercase, underscores: 'Pothole in Street' -> 'pothole_in_street'."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    return (slug or "other")[:max_len].rstrip("_")


def category_field_names(categories: list[str]) -> list[str]:
    """Unique ``cat_<slug>`` names for categories (suffix _2, _3 where slugs collide)."""
    names: list[str] = []
    for cat in categories:
        base = "cat_" + slugify(cat)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def empirical_bayes_rates(events: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Global empirical-Bayes smoothed rates (Marshall 1991), as rates per person.

    b = sum(O) / sum(n); s2 = sum(n_i (r_i - b)^2) / sum(n); a = max(s2 - b / mean(n), 0);
    EB_i = b + a / (a + b / n_i) * (r_i - b). Rows with missing or non-positive population get NaN and do not
    enter the estimates.
    """
    o = np.asarray(events, dtype=float)
    n = np.asarray(population, dtype=float)
    ok = np.isfinite(n) & (n > 0) & np.isfinite(o)
    out = np.full(len(o), np.nan)
    if not ok.any():
        return out
    oi, ni = o[ok], n[ok]
    r = oi / ni
    b = oi.sum() / ni.sum()
    s2 = (ni * (r - b) ** 2).sum() / ni.sum()
    a = max(s2 - b / ni.mean(), 0.0)
    if a == 0.0 and b == 0.0:
        out[ok] = 0.0
        return out
    shrink = a / (a + b / ni)
    out[ok] = b + shrink * (r - b)
    return out


def quintiles(values: np.ndarray) -> np.ndarray:
    """1..5 (5 = highest) by rank; ties share the lower class; NaN stays NaN (returned as 0)."""
    v = np.asarray(values, dtype=float)
    out = np.zeros(len(v), dtype=np.int64)
    ok = np.isfinite(v)
    m = int(ok.sum())
    if m == 0:
        return out
    ranks = np.searchsorted(np.sort(v[ok]), v[ok], side="left") + 1  # rank "min": 1 + how many are smaller
    out[ok] = np.minimum(np.floor(5 * (ranks - 1) / m).astype(np.int64) + 1, 5)
    return out


@dataclass
class PrecinctSummary:
    requests: np.ndarray
    rate_1k: np.ndarray
    rate_eb: np.ndarray
    quintile: np.ndarray
    turnout: np.ndarray
    top_category: np.ndarray  # object array, None where no requests
    category_names: list[str]  # city-wide top categories, most frequent first
    category_fields: list[str]
    category_counts: np.ndarray  # (n_precincts, n_categories) float, NaN where suppressed
    matched: int
    unmatched: int
    warnings: list[str] = field(default_factory=list)


def suppress_counts(counts: np.ndarray, requests: np.ndarray, threshold: int) -> np.ndarray:
    """Cells to hide (True) in a precincts x categories table of counts published beside each precinct's total.
    Primary: every count from 1 to below ``threshold`` (a zero discloses nobody, and hiding zeros would hide
    large counts by complement). Complementary: a row whose only hidden cell could be recovered by
    subtraction (its total minus the shown counts leaves nothing for the unlisted categories) also hides its
    smallest shown cell, so no hidden count follows from the others."""
    hidden = (counts > 0) & (counts < threshold)
    shown = np.where(hidden, 0.0, counts)
    unlisted = np.asarray(requests, dtype=float) - counts.sum(axis=1)
    lonely = (hidden.sum(axis=1) == 1) & (unlisted == 0) & (~hidden).any(axis=1)
    if lonely.any():
        candidates = np.where(hidden, np.inf, shown)
        smallest = candidates.argmin(axis=1)
        rows = np.flatnonzero(lonely)
        hidden[rows, smallest[rows]] = True
    return hidden


def category_codes(categories) -> tuple[np.ndarray, list[str]]:
    """(code per row, -1 where missing; the label of each code) of a category column. A pandas Categorical is
    read through its few categories, with no Python object per row; labels are the values as text."""
    import pandas as pd

    if isinstance(categories, pd.Categorical):
        return categories.codes, [str(c) for c in categories.categories]
    codes, uniques = pd.factorize(np.asarray(categories, dtype=object))  # None and NaN: -1
    return codes, [str(u) for u in uniques]


class Tally:
    """Requests counted by precinct, and by precinct and category code, a block of points at a time: a whole
    city's history is summarised without holding its points. Codes are -1 (no category) or index a label list
    that may grow from block to block."""

    def __init__(self, n_precincts: int):
        self.n = n_precincts
        self.uncoded = np.zeros(n_precincts, dtype=np.int64)  # requests of blocks counted without codes
        self.by_code = np.zeros((n_precincts, 1), dtype=np.int64)  # column 0: no category; code c: column c + 1
        self.matched = 0
        self.unmatched = 0

    @property
    def requests(self) -> np.ndarray:
        """Requests per precinct."""
        return self.uncoded + self.by_code.sum(axis=1)

    def add(self, assignment: np.ndarray, codes: np.ndarray | None = None) -> None:
        """One block: the precinct of each point (-1: outside every precinct) and its category code."""
        assignment = np.asarray(assignment)
        inside = assignment >= 0
        matched = int(np.count_nonzero(inside))
        self.matched += matched
        self.unmatched += len(assignment) - matched
        if not matched:
            return
        if codes is None:
            self.uncoded += np.bincount(assignment[inside] if matched < len(assignment) else assignment,
                                        minlength=self.n)
            return
        codes = np.asarray(codes)
        width = max(self.by_code.shape[1], int(codes.max()) + 2)
        if width > self.by_code.shape[1]:
            self.by_code = np.pad(self.by_code, ((0, 0), (0, width - self.by_code.shape[1])))
        cell = np.multiply(assignment, width, dtype=np.int64)  # one bincount over (precinct, code + 1)
        cell += codes
        cell += 1
        self.by_code += np.bincount(cell[inside] if matched < len(cell) else cell,
                                    minlength=self.n * width).reshape(self.n, width)

    def category_table(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(precinct x label counts, labels sorted as text) over the labels that occur among matched requests;
        a missing category is "(none)" and labels of the same text are merged."""
        names = np.array(["(none)", *[str(v) for v in labels[:self.by_code.shape[1] - 1]]], dtype=object)
        used = np.flatnonzero(self.by_code.sum(axis=0) > 0)
        sorted_labels, which = np.unique(names[used], return_inverse=True)
        table = np.zeros((self.n, len(sorted_labels)), dtype=np.int64)
        for column, label in zip(used, which):  # a few columns: one per category
            table[:, label] += self.by_code[:, column]
        return table, sorted_labels


def summarise(assignment: np.ndarray, categories: np.ndarray | None, n_precincts: int,
              voters: np.ndarray | None = None, ballots: np.ndarray | None = None,
              top_n: int = 5, suppress_below: int = 0, located: np.ndarray | None = None) -> PrecinctSummary:
    """Counts by precinct from a point->precinct assignment (-1 = outside every precinct); see summarise_tally."""
    tally = Tally(n_precincts)
    labels: list[str] = []
    if categories is None:
        tally.add(assignment)
    else:
        codes, labels = category_codes(categories)
        tally.add(assignment, codes)
    return summarise_tally(tally, labels if categories is not None else None, voters, ballots, top_n,
                           suppress_below, located)


def summarise_tally(tally: Tally, labels: list[str] | None, voters: np.ndarray | None = None,
                    ballots: np.ndarray | None = None, top_n: int = 5, suppress_below: int = 0,
                    located: np.ndarray | None = None) -> PrecinctSummary:
    """Rates, quintiles and top categories from the counts of a Tally (``labels``: of its category codes, None
    without categories). Precincts not ``located`` (no geometry) are left out of every statistic: NULL counts,
    rates and quintile, and no part in the empirical-Bayes estimate."""
    n_precincts = tally.n
    if located is not None and not np.all(located):
        missing = ~np.asarray(located, dtype=bool)
        summary = summarise_tally(tally, labels,
                                  None if voters is None else np.where(missing, np.nan,
                                                                       np.asarray(voters, dtype=float)),
                                  ballots, top_n, suppress_below)
        if voters is None:  # quintiles on the located precincts' counts only
            summary.quintile = quintiles(np.where(missing, np.nan, summary.requests.astype(float)))
        else:
            summary.quintile[missing] = 0
            v = np.asarray(voters, dtype=float)
            no_voters = int((~(np.isfinite(v) & (v > 0)) & ~missing).sum())  # among the located precincts
            summary.warnings = [w for w in summary.warnings if "no positive registered-voter" not in w]
            if no_voters:
                summary.warnings.append(f"{no_voters} precinct(s) have no positive registered-voter count: their "
                                        "rates are NULL and they are left out of the empirical-Bayes estimate "
                                        "and the quintiles.")
        summary.requests = np.where(missing, np.nan, summary.requests.astype(float))
        for name in ("rate_1k", "rate_eb", "turnout"):
            getattr(summary, name)[missing] = np.nan
        summary.top_category[missing] = None
        if summary.category_counts.size:
            summary.category_counts[missing] = np.nan
        return summary

    requests = tally.requests.copy()
    matched = tally.matched
    warns: list[str] = []
    nan = np.full(n_precincts, np.nan)
    rate_1k, rate_eb, turnout = nan.copy(), nan.copy(), nan.copy()
    if voters is not None:
        v = np.asarray(voters, dtype=float)
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            warns.append(f"{int(bad.sum())} precinct(s) have no positive registered-voter count: their rates "
                         "are NULL and they are left out of the empirical-Bayes estimate and the quintiles.")
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_1k = np.where(bad, np.nan, requests / v * 1000.0)
        rate_eb = empirical_bayes_rates(requests, v) * 1000.0
        quint = quintiles(rate_eb)
        if ballots is not None:
            bl = np.asarray(ballots, dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                turnout = np.where(bad | ~np.isfinite(bl), np.nan, bl / v)
            if np.nanmax(turnout, initial=0) > 1:
                warns.append("Some precincts have more ballots than registered voters (turnout > 1): check the "
                             "ballots and voters fields.")
    else:
        quint = quintiles(requests.astype(float))

    top_category = np.full(n_precincts, None, dtype=object)
    names: list[str] = []
    counts = np.zeros((n_precincts, 0))
    if labels is not None and matched:
        table, sorted_labels = tally.category_table(labels)  # sorted: ties go to the alphabetically first
        city = table.sum(axis=0)
        ranked = np.argsort(-city, kind="stable")[:max(int(top_n), 0)]
        names = [str(sorted_labels[j]) for j in ranked]
        has = table.sum(axis=1) > 0
        top_category[has] = np.asarray(sorted_labels, dtype=object)[table.argmax(axis=1)][has]
        counts = table[:, ranked].astype(float)
        if suppress_below > 0:
            hidden = suppress_counts(counts, requests, suppress_below)
            counts[hidden] = np.nan
            # the top category is not named where its count is small or hidden
            top = table.argmax(axis=1)
            position = {int(j): c for c, j in enumerate(ranked)}
            column = np.array([position.get(int(j), -1) for j in top])
            rows = np.arange(n_precincts)
            in_hidden = (column >= 0) & (hidden[rows, np.maximum(column, 0)] if hidden.shape[1] else False)
            top_category[(table.max(axis=1) < suppress_below) | in_hidden] = None
    return PrecinctSummary(requests, rate_1k, rate_eb, quint, turnout, top_category, names,
                           category_field_names(names), counts, matched, tally.unmatched, warns)
