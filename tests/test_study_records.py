"""The study records committed in docs/results/cpu/studies, which the README's tables quote: each summary
row is recomputed from the cells it summarises with scipy (mean, 95% t interval, and the paired t-test
against the baseline on the same seeds), so a table cannot drift from the runs behind it."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

RECORDS = sorted((Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu" / "studies").iterdir())


def read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype={"budget": str}, keep_default_na=False)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_the_committed_study_records_are_found():
    assert len(RECORDS) >= 13
    assert all((folder / "spec.json").exists() for folder in RECORDS)


@pytest.mark.parametrize("folder", RECORDS, ids=lambda p: p.name)
def test_each_summary_row_follows_from_its_cells(folder):
    spec = pd.read_json(folder / "spec.json", typ="series")
    cells = read(folder, "cells.csv")
    cells = cells[cells.status == "completed"]
    summary = read(folder, "summary.csv")
    baseline = cells[cells.method == spec["baseline"]]
    for row in summary.itertuples():
        mine = cells[(cells.method == row.method) & (cells.budget == row.budget) & (cells.lr == row.lr)]
        values = mine.sort_values("seed").final.to_numpy(float)
        assert len(values) == row.seeds, (row.method, row.budget)
        assert row.mean == pytest.approx(values.mean(), abs=1e-9), (row.method, row.budget)
        if len(values) > 1 and values.std() > 0:
            assert (row.ci_low, row.ci_high) == pytest.approx(t_interval(values), abs=1e-9)
        if row.vs_baseline == "":
            continue
        # the baseline at the same budget, or at its only budget for a method run at fixed settings
        theirs = baseline[baseline.budget == row.budget] if row.budget else baseline
        assert theirs.budget.nunique() == 1, (row.method, row.budget)
        paired = mine.merge(theirs, on="seed", suffixes=("", "_base"))
        diff = (paired.final - paired.final_base).to_numpy(float)
        assert float(row.vs_baseline) == pytest.approx(diff.mean(), abs=1e-9), (row.method, row.budget)
        if diff.std() > 0:
            p = stats.ttest_rel(paired.final, paired.final_base).pvalue
            assert float(row.p_value) == pytest.approx(p, abs=1e-9), (row.method, row.budget)
            low, high = t_interval(diff)
            assert (float(row.vs_low), float(row.vs_high)) == pytest.approx((low, high), abs=1e-9)
            assert row.distinguishable == str(not low <= 0 <= high), (row.method, row.budget)
