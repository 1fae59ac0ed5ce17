"""A study's tables: one row per cell, and per method and budget the mean over seeds with its interval
and the paired comparison against the baseline at the same budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs import RunDir, RunSummary
from .runner import CellOutcome
from .spec import StudySpec
from .stats import estimate, paired

GROUP = ["method", "budget", "lr"]


def cell_rows(spec: StudySpec, folder: Path, outcomes: list[CellOutcome]) -> pd.DataFrame:
    """One row per cell: its grid position, status, counts, and final metric."""
    by_key = {o.key: o for o in outcomes}
    rows: list[dict[str, Any]] = []
    for cell in spec.cells():
        outcome = by_key.get(cell.key, CellOutcome(cell.key, "pending"))
        summary = RunDir(folder / outcome.run).summary() if outcome.run else RunSummary()
        final = summary.final if outcome.status == "completed" else None
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
    difference from ``spec.baseline`` at the same budget (and lr), with its interval and p-value."""
    done = cells[cells.status == "completed"].dropna(subset=["final"])
    baseline = {
        (budget, lr): dict(zip(part.seed, part.final, strict=True))
        for (method, budget, lr), part in done.groupby(GROUP, sort=False)
        if method == spec.baseline
    }
    rows = []
    for (method, budget, lr), part in cells.groupby(GROUP, sort=False):
        finished = part[(part.status == "completed") & part.final.notna()]
        row: dict[str, Any] = {
            "method": method,
            "budget": budget,
            "lr": lr,
            "method_params": _one(finished.method_params),
            "targets": _one(finished.targets),
            "seeds": len(finished),
            "failed": int((part.status == "failed").sum()),
            "metric": _one(finished.metric),
        }
        if len(finished):
            est = estimate(finished.final.tolist())
            row.update(mean=est.mean, std=est.std, ci_low=est.low, ci_high=est.high)
        reference = baseline.get((budget, lr))
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
