"""Paper Figures 1 (right) and 7: accuracy vs trainable parameters over all recorded runs, with the
Pareto frontier per (backbone, task). ``sweep`` optionally trains methods x budgets first (into
``runs_dir``) so the plot has points; without it the experiment only reads what is recorded."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..runs import list_runs
from . import common

NAME = "tradeoff"
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"runs_dir": None, "sweep": ["surm-circulant", "lora"], "budgets": ["1024", "4096"],
              "backbone": "tiny-bert", "task": "rotten-tomatoes", "max_steps": 2, "max_train": 64, "max_eval": 64},
    "cpu": {"runs_dir": None, "sweep": ["surm-circulant", "surm-kronecker", "surm-ldr", "lora"],
            "budgets": ["9216", "20k", "50k"], "backbone": "minilm-l6", "task": "rotten-tomatoes",
            "max_steps": 150, "max_train": 4800, "max_eval": 1000},
    "paper": {"runs_dir": "runs", "sweep": [], "budgets": [], "backbone": "minilm-l6", "task": "rotten-tomatoes",
              "max_steps": None, "max_train": None, "max_eval": None},
}  # fmt: skip


def frontier(table: pd.DataFrame) -> pd.Series:
    """Whether each run is on the Pareto frontier of its (backbone, task) group."""
    from ..plots import pareto_front

    on = pd.Series(False, index=table.index)
    for _, part in table.groupby(["backbone", "task"]):
        on[pareto_front(part, "trainable_params", "best").index] = True
    return on


def validate(p: dict[str, Any]) -> None:
    p["sweep"], p["budgets"] = common.as_list(p["sweep"]), [str(b) for b in common.as_list(p["budgets"])]
    if not p["sweep"]:
        return
    common.check_backbone(p["backbone"])
    common.check_tasks([p["task"]])
    common.check_methods(p["sweep"])
    if not p["budgets"]:
        raise ValueError("sweep needs at least one budget")
    for budget in p["budgets"]:
        common.check_budgets(p["backbone"], 2, p["sweep"], budget)


def run(profile: str = "smoke", out_dir: str | None = None, **params: Any) -> pd.DataFrame:
    started = common.start()
    p = common.resolve(PROFILES, profile, params)
    validate(p)
    out = common.output_dir(out_dir, NAME)
    runs_dir = p["runs_dir"] or str(out / "runs")
    if p["sweep"]:
        for budget in p["budgets"]:
            for method in p["sweep"]:
                common.train_row(
                    backbone=p["backbone"], task=p["task"], method=method, budget=budget, max_steps=p["max_steps"],
                    max_train=p["max_train"], max_eval=p["max_eval"], runs_dir=runs_dir,
                )  # fmt: skip
    table = list_runs(runs_dir)
    table = table[(table.status == "completed") & table.best.notna()].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no completed runs under {runs_dir!r}: train some, or set sweep")
    table["on_frontier"] = frontier(table)
    common.write_results(table, out, NAME, profile, p, started)
    return table
