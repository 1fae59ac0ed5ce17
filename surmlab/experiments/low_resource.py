"""Low-resource image classification: the Table 1 comparison with few labelled examples per class
(``shots`` sweep; ``fractions`` sweeps a stratified fraction of the training set instead)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import plots
from . import common, image_classification
from .image_classification import SURM, VIT_B_BUDGET, Grid, grid

NAME = "low_resource"


@dataclass(frozen=True)
class Params(Grid):
    methods: tuple[str, ...] = ("surm-circulant", "lora")
    shots: tuple[int, ...] = (2,)  # labelled examples per class, one setting each
    fractions: tuple[float, ...] = ()  # stratified fractions of the training set, one setting each


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="vit-s14", tasks=("fashion-mnist",), methods=("surm-circulant", "surm-toeplitz", "lora",
                  "linear-probe"), budget="20k", shots=(1, 5, 10), max_steps=60, max_eval=1000, image_size=56,
                  epochs=20),
    "paper": Params(backbone="timm:vit_base_patch16_224.augreg_in21k", tasks=("cifar10", "cifar100", "dtd"),
                    methods=(*SURM, "lora", "adapter", "linear-probe"), budget=VIT_B_BUDGET, seeds=(0, 1, 2),
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
    """The image grid once per shot count, then once per fraction, on the whole training set."""
    rows = []
    for shots in p.shots:
        rows += grid(p, out, max_train=None, shots_per_class=shots)
    for fraction in p.fractions:
        rows += grid(p, out, max_train=None, train_fraction=fraction)
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Best accuracy per method and task, and the runs."""
    return [plots.bars(table, "method", "best", "method", facet="task"), table]
