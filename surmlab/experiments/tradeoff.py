"""Paper Figures 1 (right) and 7: accuracy vs trainable parameters over all recorded runs, with the
Pareto frontier per (backbone, task). ``sweep`` optionally trains methods x budgets first (into
``runs_dir``) so the plot has points; without it the experiment only reads what is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import plots
from ..runs import list_runs
from . import common

NAME = "tradeoff"


@dataclass(frozen=True)
class Params:
    runs_dir: str | None = None  # None: <out_dir>/runs
    sweep: tuple[str, ...] = ("surm-circulant", "lora")  # methods to train first (empty: only read runs_dir)
    budgets: tuple[str, ...] = ("1024", "4096")
    backbone: str = "tiny-bert"
    task: str = "rotten-tomatoes"
    max_steps: int | None = 2
    max_train: int | None = 64
    max_eval: int | None = 64


PROFILES = {
    "smoke": Params(),
    "cpu": Params(sweep=("surm-circulant", "surm-kronecker", "surm-ldr", "lora"), budgets=("9216", "20k", "50k"),
                  backbone="minilm-l6", max_steps=150, max_train=4800, max_eval=1000),
    "paper": Params(runs_dir="runs", sweep=(), budgets=(), backbone="minilm-l6", max_steps=None, max_train=None,
                    max_eval=None),
}  # fmt: skip


def frontier(table: pd.DataFrame) -> pd.Series:
    """Whether each run is on the Pareto frontier of its (backbone, task) group."""
    on = pd.Series(False, index=table.index)
    for _, part in table.groupby(["backbone", "task"]):
        on[plots.pareto_front(part, "trainable_params", "best").index] = True
    return on


def validate(p: Params) -> None:
    if not p.sweep:
        return
    common.check_grid(p.backbone, [p.task], p.sweep)
    if not p.budgets:
        raise ValueError("sweep needs at least one budget")
    for budget in p.budgets:
        common.check_budgets(p.backbone, 2, p.sweep, budget)


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    runs_dir = p.runs_dir or str(out / "runs")
    for budget in p.budgets if p.sweep else ():
        for method in p.sweep:
            common.train_row(
                backbone=p.backbone, task=p.task, method=method, budget=budget, max_steps=p.max_steps,
                max_train=p.max_train, max_eval=p.max_eval, runs_dir=runs_dir,
            )  # fmt: skip
    table = list_runs(runs_dir)
    table = table[(table.status == "completed") & table.best.notna()].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no completed runs under {runs_dir!r}: train some, or set sweep")
    table["on_frontier"] = frontier(table)
    return table


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Accuracy vs trainable parameters with the Pareto frontier per (backbone, task), and the table."""
    return [plots.tradeoff(table, group=["backbone", "task"]), table]
