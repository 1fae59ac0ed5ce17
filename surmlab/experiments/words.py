"""Results in words: the sentences each experiment's ``summarize(table) -> str`` builds from its numbers.

Every experiment module has a ``summarize`` beside ``figures``; its notebook shows the paragraph as
Markdown after the run cell, so an executed report says what it found, not only what it computed. The
helpers here are the phrasing shared by the study-based experiments (means over seeds with 95%
intervals and paired differences from a baseline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd


def num(value: float, digits: int = 3) -> str:
    """``0.7681`` -> ``0.768``; magnitudes that would round to zero, or are huge, in scientific notation."""
    if value != 0 and (abs(value) < 0.5 * 10 ** (-digits) or abs(value) >= 1e6):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def span(low: float, high: float, fmt: str = ".2f", unit: str = "") -> str:
    """``1.01x-1.03x``, or one value where both ends print the same."""
    a, b = f"{low:{fmt}}{unit}", f"{high:{fmt}}{unit}"
    return a if a == b else f"{a}-{b}"


def listing(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _label(row: pd.Series, budgets: bool) -> str:
    budget = str(row.get("budget", "") or "")
    return f"{row.method} at {budget}" if budgets and budget else str(row.method)


def _group_name(keys: Iterable[object]) -> str:
    return "**" + ", ".join(map(str, keys)) + "**"


def study_sentences(part: pd.DataFrame, baseline: str, where: str = "") -> list[str]:
    """Two sentences on one group of a study summary: which method has the highest mean (by how much,
    whether its interval overlaps the runner-up's) and how the others compare with ``baseline`` in paired
    differences over seeds."""
    done = part.dropna(subset=["mean"]).sort_values("mean", ascending=False)
    if done.empty:
        return [f"{where or 'This study'}: no run finished."]
    budgets = done.budget.astype(str).replace("", pd.NA).dropna().nunique() > 1
    metric = str(done.metric.iloc[0] or "score")
    top = done.iloc[0]
    lead = f"{where + ': ' if where else ''}{_label(top, budgets)} has the highest mean {metric}, {num(top['mean'])}"
    if len(done) > 1:
        second = done.iloc[1]
        apart = overlap((top.ci_low, top.ci_high), (second.ci_low, second.ci_high))
        lead += (
            f", {num(top['mean'] - second['mean'])} above {_label(second, budgets)} ({num(second['mean'])}); "
            f"their 95% intervals {'overlap' if apart else 'do not overlap'}"
        )
    sentences = [lead + "."]
    compared = done[done.vs_baseline.notna()] if "vs_baseline" in done else done.iloc[0:0]
    if len(compared):
        real = compared[compared.distinguishable.astype(bool)]
        parts = [
            f"{_label(r, budgets)} {'above' if r.vs_baseline > 0 else 'below'} it by {num(abs(r.vs_baseline))} "
            f"(interval [{signed(r.vs_low)}, {signed(r.vs_high)}], p = {r.p_value:.2f})"
            for _, r in real.iterrows()
        ]
        same = [_label(r, budgets) for _, r in compared.iterrows() if not bool(r.distinguishable)]
        if parts:
            text = f"Paired over seeds with {baseline}: " + "; ".join(parts)
            text += f"; not distinguishable: {listing(same)}" if same else ""
        else:
            text = f"Paired over seeds, none is distinguishable from {baseline} ({listing(same)})"
        sentences.append(text + ".")
    return sentences


def _spread(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows without a value in ``column`` (a method without a budget) repeated under each value it has."""
    key = table[column].fillna("").astype(str)
    empty = key == ""
    values = key[~empty].unique()
    if not empty.any() or not len(values):
        return table.assign(**{column: key})
    spread = [table[~empty].assign(**{column: key[~empty]})]
    spread += [table[empty].assign(**{column: value}) for value in values]
    return pd.concat(spread).sort_index(kind="stable")


def study_paragraph(table: pd.DataFrame, baseline: str, by: Sequence[str] = ()) -> str:
    """The study summary ``table`` in words, one pair of sentences per group of ``by`` columns, after a
    count of the distinguishable differences from ``baseline`` over all groups."""
    keyed = table
    for column in by:
        if column in keyed:
            keyed = _spread(keyed, column)
    by = [c for c in by if c in keyed and keyed[c].nunique() > 1]
    groups = list(keyed.groupby(by, sort=False)) if by else [((), keyed)]
    sentences = []
    if "vs_baseline" in table and table.vs_baseline.notna().any():
        compared = table[table.vs_baseline.notna()]
        real = compared[compared.distinguishable.astype(bool)]
        above = int((real.vs_baseline > 0).sum())
        sentences.append(
            f"Of {len(compared)} paired comparisons with {baseline}, {len(real)} "
            f"{'is' if len(real) == 1 else 'are'} distinguishable ({above} above it, {len(real) - above} below); "
            "the rest are not distinguishable with these seeds."
            if len(compared) > 1
            else ""
        )
    for keys, part in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        sentences += study_sentences(part, baseline, _group_name(keys) if by else "")
    return " ".join(s for s in sentences if s)
