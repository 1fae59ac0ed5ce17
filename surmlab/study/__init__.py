"""Studies: a grid of methods x budgets x seeds (x learning rates) on one backbone and task, run as
ordinary runs, summarised with intervals over seeds and paired comparisons against a baseline.

``study(spec, root="studies", workers=2)`` runs (or continues) the study in ``root/<spec.name>`` and
returns its tables; re-running skips finished cells and resumes interrupted ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..fileio import atomic_write
from .runner import CellOutcome, check_budgets, run_cells
from .spec import Cell, StudySpec
from .stats import Estimate, Paired, estimate, paired
from .table import cell_rows, markdown, scores, summarize, verdict


@dataclass
class StudyResult:
    folder: Path
    spec: StudySpec
    cells: pd.DataFrame  # one row per run
    summary: pd.DataFrame  # one row per method, budget and lr


def study(
    spec: StudySpec, root: str | Path = "studies", workers: int = 1, progress: bool = True, ray: str | None = None
) -> StudyResult:
    """Check everything, then run every unfinished cell and write ``cells.csv`` and ``summary.csv``.
    ``ray``: ``local`` (a Ray instance on this machine), ``auto`` or an address (a running cluster)."""
    folder = Path(root) / spec.name
    check_budgets(spec)  # before any folder is claimed or any step trained
    spec.claim(folder)
    outcomes = run_cells(spec, folder, workers=workers, progress=progress, ray=ray)
    return tables(spec, folder, outcomes)


def tables(spec: StudySpec, folder: Path, outcomes: list[CellOutcome]) -> StudyResult:
    cells = cell_rows(spec, folder, outcomes)
    summary = summarize(spec, cells)
    summary["verdict"] = [verdict(row, spec.baseline) for _, row in summary.iterrows()]
    atomic_write(folder / "cells.csv", lambda tmp: cells.to_csv(tmp, index=False))
    atomic_write(folder / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    return StudyResult(folder, spec, cells, summary)


__all__ = [
    "Cell",
    "CellOutcome",
    "Estimate",
    "Paired",
    "StudyResult",
    "StudySpec",
    "check_budgets",
    "estimate",
    "markdown",
    "paired",
    "scores",
    "study",
]
