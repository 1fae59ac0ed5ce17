"""A study's tables: one row per cell, and per method and budget the mean over seeds with its interval
and the paired comparison against the baseline at the same budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs import RunDir, RunStatus, RunSummary
from .runner import CellOutcome
from .spec import StudySpec
from .stats import estimate, paired

GROUP = ["method", "budget", "lr"]


def cell_rows(spec: StudySpec, folder: Path, outcomes: list[CellOutcome]) -> pd.DataFrame:
    """One row per cell: its grid position, status, counts, and final metric."""
    by_key = {o.key: o for o in outcomes}
    rows: list[dict[str, Any]] = []
    for cell in spec.cells():
        outcome = by_key.get(cell.key, CellOutcome(cell.key, RunStatus.PENDING))
        summary = RunDir(folder / outcome.run).summary() if outcome.run else RunSummary()
        final = summary.final if outcome.status is RunStatus.COMPLETED else None
        rows.append(
            {
                "method": cell.method,
                "budget": cell.budget or "",
                "lr": "" if cell.lr is None else cell.lr,
                "seed": cell.seed,
                "status": outcome.status,
                "metric": summary.metric,
                "final": final,
                "method_params": summary.method_params,
                "trainable_params": summary.trainable_params,
                "targets": summary.targets,
                "hyper": str(summary.hyper or ""),
                "wall_time_s": summary.wall_time_s,
                "reason": outcome.reason,
                "run": outcome.run,
            }
        )
    return pd.DataFrame(rows)


def summarize(spec: StudySpec, cells: pd.DataFrame) -> pd.DataFrame:
    """Per method, budget and learning rate: mean, std and 95% interval over seeds, and the paired
    difference from ``spec.baseline`` at the same budget (and lr), with its interval and p-value. A
    method without a budget (no size knob, or fixed hyper-parameters) is compared with the baseline
    when the baseline ran at a single budget."""
    done = cells[cells.status == RunStatus.COMPLETED].dropna(subset=["final"])
    baseline = {
        (budget, lr): dict(zip(part.seed, part.final, strict=True))
        for (method, budget, lr), part in done.groupby(GROUP, sort=False)
        if method == spec.baseline
    }
    rows = []
    for (method, budget, lr), part in cells.groupby(GROUP, sort=False):
        finished = part[(part.status == RunStatus.COMPLETED) & part.final.notna()]
        row: dict[str, Any] = {
            "method": method,
            "budget": budget,
            "lr": lr,
            "method_params": _one(finished.method_params),
            "trainable_params": _one(finished.trainable_params),
            "targets": _one(finished.targets),
            "seeds": len(finished),
            "failed": int((part.status == RunStatus.FAILED).sum()),
            "metric": _one(finished.metric),
        }
        if len(finished):
            est = estimate(finished.final.tolist())
            row.update(mean=est.mean, std=est.std, ci_low=est.low, ci_high=est.high)
        reference = baseline.get((budget, lr))
        if reference is None and budget == "":
            only = [seeds for (_, at), seeds in baseline.items() if at == lr]
            reference = only[0] if len(only) == 1 else None
        if method != spec.baseline and reference and len(finished):
            comparison = paired(dict(zip(finished.seed, finished.final, strict=True)), reference)
            d = comparison.difference
            row.update(
                vs_baseline=d.mean,
                vs_low=d.low,
                vs_high=d.high,
                p_value=comparison.p_value,
                distinguishable=comparison.distinguishable,
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _one(values: pd.Series) -> Any:
    """The single value a column holds across seeds (None when empty)."""
    distinct = values.dropna().unique()
    return distinct[0] if len(distinct) else None


def verdict(row: pd.Series, baseline: str) -> str:
    """The comparison with the baseline in words."""
    if math.isnan(row.get("vs_baseline", math.nan)):
        return ""
    if not row.get("distinguishable"):
        return f"not distinguishable from {baseline}"
    return f"{'above' if row.vs_baseline > 0 else 'below'} {baseline}"


def scores(
    table: pd.DataFrame, columns: str | list[str] = "task", rows: list[str] | None = None, digits: int = 3
) -> pd.DataFrame:
    """``rows`` (default: method, and budget where there are budgets) x ``columns`` of study summaries:
    "mean ± half-width of the 95% interval over seeds"."""
    half = (table.ci_high - table.ci_low) / 2
    text = [
        "" if pd.isna(m) else f"{m:.{digits}f} ± {0.0 if pd.isna(h) else h:.{digits}f}"
        for m, h in zip(table["mean"], half, strict=True)
    ]
    if rows is None:
        rows = ["method", "budget"] if (table.budget.astype(str) != "").any() else ["method"]
    wide = table.assign(score=text)
    return wide.pivot_table(index=rows, columns=columns, values="score", aggfunc="first", sort=False)


def markdown(summary: pd.DataFrame, digits: int = 3) -> str:
    """A study summary as a Markdown table: count, seeds, mean ± 95% interval, and the paired difference
    from the baseline with its interval and p-value ("n.d.": not distinguishable from zero)."""
    lines = [
        "| method | budget | trainable (method) | seeds | mean ± 95% CI | vs baseline: mean diff [95% CI], p |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        half = (row.ci_high - row.ci_low) / 2 if pd.notna(row.ci_high) else 0.0
        score = f"{row.mean:.{digits}f} ± {half:.{digits}f}" if pd.notna(row.mean) else "no result"
        versus = ""
        if pd.notna(getattr(row, "vs_baseline", math.nan)):
            versus = (
                f"{row.vs_baseline:+.{digits}f} [{row.vs_low:+.{digits}f}, {row.vs_high:+.{digits}f}], "
                f"p={row.p_value:.2f}{'' if row.distinguishable else ' (n.d.)'}"
            )
        count = "" if pd.isna(row.method_params) else f"{int(row.method_params):,}"
        lines.append(f"| {row.method} | {row.budget} | {count} | {row.seeds} | {score} | {versus} |")
    return "\n".join(lines)
