"""Paper Table 1: a ViT backbone x datasets x methods, with trainable-parameter counts and accuracy.

SURM families run in LoRA mode at the same budget as LoRA (and the Houlsby adapter, matched by its
bottleneck); BitFit, linear probing and full fine-tuning have no size knob. The paper's setting is the
``paper`` profile (ViT-B/16 ImageNet-21k on CIFAR-10/100, SUN397, DTD, STL-10; needs the hub); the
offline default is ``vit-s14`` on Fashion-MNIST and MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import plots
from ..data import SPECS
from ..methods import method_info
from . import common

NAME = "image_classification"
SURM = ("surm-circulant", "surm-toeplitz", "surm-symmetric_toeplitz", "surm-kronecker", "surm-ldr")
ALL_METHODS = (*SURM, "lora", "adapter", "bitfit", "linear-probe", "full")
# The paper profiles' budget on ViT-B/16: every budgeted method must reach it, and the smallest Houlsby
# adapter there (bottleneck 1, two per block) already has 55,320 parameters, so 55k would be infeasible.
VIT_B_BUDGET = "56k"


@dataclass(frozen=True)
class Grid:
    """A backbone x tasks x methods x seeds training grid (shared with ``low_resource``)."""

    backbone: str = "tiny-vit"
    tasks: tuple[str, ...] = ("mnist",)
    methods: tuple[str, ...] = ("surm-circulant", "lora", "linear-probe")
    budget: str = "4096"
    seeds: tuple[int, ...] = (0,)
    max_steps: int | None = 2
    max_eval: int | None = 64
    image_size: int | None = None
    batch_size: int = 16
    epochs: int = 1


@dataclass(frozen=True)
class Params(Grid):
    max_train: int | None = 64
    shots_per_class: int | None = None
    train_fraction: float | None = None


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="vit-s14", tasks=("fashion-mnist", "mnist"), methods=ALL_METHODS, budget="55k",
                  max_steps=150, max_train=4800, max_eval=1000, image_size=56, batch_size=32),
    "paper": Params(backbone="timm:vit_base_patch16_224.augreg_in21k",
                    tasks=("cifar10", "cifar100", "sun397", "dtd", "stl10"), methods=ALL_METHODS, budget=VIT_B_BUDGET,
                    seeds=(0, 1, 2), max_steps=None, max_train=None, max_eval=None, batch_size=64, epochs=10),
}  # fmt: skip


def validate(p: Grid) -> None:
    common.check_grid(p.backbone, p.tasks, p.methods)
    for task in p.tasks:
        if task in SPECS and SPECS[task].modality != "image":
            raise ValueError(f"task {task!r} is not an image task")
    common.check_budgets(p.backbone, common.num_labels(p.tasks[0], 10), p.methods, p.budget)


def grid(
    p: Grid, out_dir: Path, *, max_train: int | None, shots_per_class: int | None = None,
    train_fraction: float | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One training run per (task, method, seed), budget on the methods that take one."""
    rows = []
    for task in p.tasks:
        for method in p.methods:
            for seed in p.seeds:
                row = common.train_row(
                    backbone=p.backbone, task=task, method=method, seed=seed,
                    budget=p.budget if method_info(method).budgeted else None,
                    max_steps=p.max_steps, max_train=max_train, max_eval=p.max_eval, image_size=p.image_size,
                    batch_size=p.batch_size, epochs=p.epochs, shots_per_class=shots_per_class,
                    train_fraction=train_fraction, runs_dir=str(out_dir / "runs"),
                )  # fmt: skip
                rows.append({**row, "shots_per_class": shots_per_class, "train_fraction": train_fraction})
    return rows


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    rows = grid(p, out, max_train=p.max_train, shots_per_class=p.shots_per_class, train_fraction=p.train_fraction)
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Best accuracy per method and task, and the runs (``pivot`` gives the paper's layout)."""
    return [plots.bars(table, "method", "best", "method", facet="task"), table]


def pivot(table: pd.DataFrame, value: str = "best") -> pd.DataFrame:
    """Methods x tasks (mean over seeds), with the method's trainable-parameter count."""
    wide = table.pivot_table(index="method", columns="task", values=value, aggfunc="mean")
    wide.insert(0, "method_params", table.groupby("method")["method_params"].first())
    if "targets" in table:  # records written before targets were recorded lack the column
        wide.insert(1, "targets", table.groupby("method")["targets"].first())
    return wide.sort_values("method_params")
