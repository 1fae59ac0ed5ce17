"""Paper Figures 1 (right) and 7: accuracy vs trainable parameters, with the Pareto frontier.

With ``sweep``, the methods are trained at every budget and seed as a study (``surmlab.study``): each
row is one method at one budget with its mean over seeds, 95% interval and the paired difference from
the ``lora`` baseline at that budget; the frontier is drawn through the means. Without ``sweep``, the
experiment reads the runs already recorded in ``runs_dir`` (one point per run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import plots
from ..runs import RunStatus, list_runs
from ..study import StudySpec, check_budgets
from ..study import figures as study_figures
from . import common, words

NAME = "tradeoff"


@dataclass(frozen=True)
class Params:
    runs_dir: str | None = None  # without sweep: the recorded runs to read
    sweep: tuple[str, ...] = ("surm-circulant", "lora", "linear-probe")  # methods to train (empty: read runs_dir)
    budgets: tuple[str, ...] = ("1024", "4096")
    seeds: tuple[int, ...] = (0, 1)
    backbone: str = "tiny-bert"
    task: str = "rotten-tomatoes"
    max_steps: int | None = 2
    max_train: int | None = 64
    max_eval: int | None = 64
    max_length: int = 32
    workers: int = 1  # cells trained at once


PROFILES = {
    "smoke": Params(),
    # the MiniLM / Rotten Tomatoes study of the README (docs/studies/minilm-rotten-tomatoes.yaml)
    "cpu": Params(sweep=("surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-ldr", "lora", "linear-probe"),
                  budgets=("9216", "18432", "36864"), seeds=(0, 1, 2), backbone="minilm-l6", max_steps=120,
                  max_train=3840, max_eval=1000, max_length=64, workers=2),
    "paper": Params(runs_dir="runs", sweep=(), budgets=(), seeds=(), backbone="minilm-l6", max_steps=None,
                    max_train=None, max_eval=None),
}  # fmt: skip


def spec(p: Params) -> StudySpec:
    """The study a sweep runs (``lora`` is the baseline when it is swept, else the first method)."""
    return StudySpec(
        name=common.study_name(p.backbone, p.task),
        backbone=p.backbone,
        task=p.task,
        methods=p.sweep,
        budgets=p.budgets,
        seeds=p.seeds,
        baseline=common.baseline(p.sweep),
        train={"max_steps": p.max_steps, "max_train": p.max_train, "max_eval": p.max_eval, "max_length": p.max_length},
    )


def validate(p: Params) -> None:
    if not p.sweep:
        return
    common.check_grid(p.backbone, [p.task], p.sweep)
    if not p.budgets:
        raise ValueError("sweep needs at least one budget")
    common.check_positive(workers=p.workers)
    check_budgets(spec(p))  # the study's own checks: methods, seeds, training options, every budget


def frontier(table: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Whether each row is on the Pareto frontier of its (backbone, task) group."""
    on = pd.Series(False, index=table.index)
    for _, part in table.groupby(["backbone", "task"]):
        on[plots.pareto_front(part, x, y).index] = True
    return on


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    if p.sweep:
        table = common.run_study(spec(p), out, p.workers)
        table["on_frontier"] = frontier(table, "method_params", "mean")
        return table
    runs_dir = p.runs_dir or str(out / "runs")
    table = list_runs(runs_dir)
    table = table[(table.status == RunStatus.COMPLETED) & table.best.notna()].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no completed runs under {runs_dir!r}: train some, or set sweep")
    table["on_frontier"] = frontier(table, "trainable_params", "best")
    return table


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Metric vs trainable parameters with the Pareto frontier (with intervals over seeds after a sweep)."""
    if "mean" in table:
        return [study_figures.tradeoff(table), table]
    return [plots.tradeoff(table, group=["backbone", "task"]), table]


def summarize(table: pd.DataFrame) -> str:
    """A sweep: the best mean per budget, the paired differences from the baseline and the frontier.
    Read runs: the best score per backbone and task, and the frontier."""
    if "mean" in table:
        on = table[table.on_frontier].sort_values("method_params")
        frontier = words.listing([f"{r.method} ({r.method_params:,})" for r in on.itertuples()])
        baseline = common.baseline(table.method.unique())
        paragraph = words.study_paragraph(table, baseline, by=["task", "budget"])
        return f"{paragraph} The frontier through the means: {frontier}."
    sentences = []
    for (backbone, task), part in table.groupby(["backbone", "task"], sort=False):
        top = part.loc[part.best.idxmax()]
        on = part[part.on_frontier].sort_values("trainable_params")
        sentences.append(
            f"On {backbone} / {task} the best of {len(part)} runs is {top.method} ({words.num(top.best)} with "
            f"{top.trainable_params:,} trainable); the frontier runs through "
            f"{words.listing([f'{r.method} ({r.trainable_params:,})' for r in on.itertuples()])}."
        )
    return " ".join(sentences) + " One run per point: a point's height is one draw, not a mean."
