"""Low-resource image classification: the Table 1 comparison with few labelled examples per class
(``shots`` sweep; ``fractions`` sweeps a stratified fraction of the training set instead). Each task
and setting is a study: means over seeds with intervals, and the paired difference from LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..study import figures as study_figures
from ..study.table import scores
from . import common, image_classification, words
from .image_classification import SURM, VIT_B_BUDGET, Grid

NAME = "low_resource"


@dataclass(frozen=True)
class Params(Grid):
    methods: tuple[str, ...] = ("surm-circulant", "lora", "linear-probe")
    shots: tuple[int, ...] = (2,)  # labelled examples per class, one study each
    fractions: tuple[float, ...] = ()  # stratified fractions of the training set, one study each


PROFILES = {
    "smoke": Params(),
    # epochs enough that every shot count gets its 60 steps (one shot of 10 classes is one batch, one
    # step an epoch), evaluated at steps 30 and 60 rather than at each of those short epochs
    "cpu": Params(backbone="vit-s14", tasks=("fashion-mnist",), methods=("surm-circulant", "surm-toeplitz", "lora",
                  "linear-probe"), budgets=("18432",), seeds=(0, 1, 2), shots=(1, 5, 10), max_steps=60,
                  max_eval=1000, image_size=56, epochs=100, eval_every=30, workers=2),
    "paper": Params(backbone="timm:vit_base_patch16_224.augreg_in21k", tasks=("cifar10", "cifar100", "dtd"),
                    methods=(*SURM, "lora", "houlsby", "linear-probe"), budgets=(VIT_B_BUDGET,), seeds=(0, 1, 2),
                    shots=(1, 2, 5, 10), fractions=(0.01, 0.05), max_steps=None, max_eval=None, batch_size=32,
                    epochs=20),
}  # fmt: skip


def validate(p: Params) -> None:
    if not p.shots and not p.fractions:
        raise ValueError("give at least one value in shots or fractions")
    if any(s < 1 for s in p.shots) or any(not 0 < f <= 1 for f in p.fractions):
        raise ValueError("shots must be >= 1 and fractions in (0, 1]")
    image_classification.validate(p)


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    """A study per task and shot count, then per task and fraction, drawn from the whole training set."""
    settings = [(f"{s}shot", {"shots_per_class": s}) for s in p.shots]
    settings += [(f"fraction{f:g}", {"train_fraction": f}) for f in p.fractions]
    studies = [
        common.run_study(p.study(task, label, **setting), out, p.workers, setting=label, **setting)
        for task in p.tasks
        for label, setting in settings
    ]
    return pd.concat(studies, ignore_index=True)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Mean accuracy per method with its interval, one panel per setting, and methods x settings."""
    return [study_figures.bars(table, facet="setting"), scores(table, columns=["task", "setting"])]


def summarize(table: pd.DataFrame) -> str:
    """The study summary in words: the best mean per group and the paired differences from the baseline."""
    return words.study_paragraph(table, common.baseline(table.method.unique()), by=["task", "setting"])
