"""Paper Table 1: a ViT backbone x datasets x methods, with trainable-parameter counts and accuracy.

Each task is a study (``surmlab.study``): every method at every budget and seed, summarised as the
mean over seeds with its 95% interval and the paired difference from LoRA at the same budget. SURM
families run in LoRA mode on the same rows as LoRA (and the Houlsby adapter is matched by its
bottleneck); BitFit, linear probing and full fine-tuning have no size knob. The paper's setting is the
``paper`` profile (ViT-B/16 ImageNet-21k on CIFAR-10/100, SUN397, DTD, STL-10; needs the hub); the
offline ``cpu`` profile is the ViT-S/14 / Fashion-MNIST study of the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import SPECS
from ..study import StudySpec, check_budgets
from ..study import figures as study_figures
from ..study.table import scores
from . import common, words

NAME = "image_classification"
SURM = ("surm-circulant", "surm-toeplitz", "surm-symmetric_toeplitz", "surm-kronecker", "surm-ldr")
ALL_METHODS = (*SURM, "lora", "houlsby", "bitfit", "linear-probe", "full")
# The paper profiles' budget on ViT-B/16: every budgeted method must reach it, and the smallest Houlsby
# adapter there (bottleneck 1, two per block) already has 55,320 parameters, so 55k would be infeasible.
VIT_B_BUDGET = "56k"
# LoRA ranks 1, 2 and 4 on the q and v thirds of ViT-S's 12 fused qkv layers (rank 1 is already 18,432)
VIT_S_BUDGETS = ("18432", "36864", "73728")


@dataclass(frozen=True)
class Grid:
    """A backbone x tasks x methods x budgets x seeds grid, one study per task (shared with
    ``low_resource``)."""

    backbone: str = "tiny-vit"
    tasks: tuple[str, ...] = ("mnist",)
    methods: tuple[str, ...] = ("surm-circulant", "lora", "linear-probe")
    budgets: tuple[str, ...] = ("4096",)
    seeds: tuple[int, ...] = (0, 1)
    max_steps: int | None = 2
    max_eval: int | None = 64
    image_size: int | None = None
    batch_size: int = 16
    epochs: int = 1
    eval_every: int = 0  # steps between evaluations (0: each epoch's end)
    workers: int = 1  # cells trained at once (one per GPU where there are GPUs)

    def study(self, task: str, *setting: Any, **train: Any) -> StudySpec:
        """The study of ``task`` (named by its ``setting``), with further ``train`` options."""
        return StudySpec(
            name=common.study_name(self.backbone, task, *setting),
            backbone=self.backbone,
            task=task,
            methods=self.methods,
            budgets=self.budgets,
            seeds=self.seeds,
            baseline=common.baseline(self.methods),
            train=common.train_options(
                max_steps=self.max_steps,
                max_eval=self.max_eval,
                image_size=self.image_size,
                batch_size=self.batch_size,
                epochs=self.epochs,
                eval_every=self.eval_every or None,
                **train,
            ),
        )


@dataclass(frozen=True)
class Params(Grid):
    max_train: int | None = 64
    shots_per_class: int | None = None
    train_fraction: float | None = None


PROFILES = {
    "smoke": Params(),
    # the ViT-S/14 / Fashion-MNIST study of the README (docs/studies/vit-s14-fashion-mnist.yaml)
    "cpu": Params(backbone="vit-s14", tasks=("fashion-mnist",), methods=("surm-circulant", "surm-toeplitz",
                  "surm-kronecker", "surm-ldr", "lora", "linear-probe"), budgets=VIT_S_BUDGETS, seeds=(0, 1, 2),
                  max_steps=120, max_train=3840, max_eval=1000, image_size=56, batch_size=32, workers=2),
    "paper": Params(backbone="timm:vit_base_patch16_224.augreg_in21k",
                    tasks=("cifar10", "cifar100", "sun397", "dtd", "stl10"), methods=ALL_METHODS,
                    budgets=(VIT_B_BUDGET,), seeds=(0, 1, 2), max_steps=None, max_train=None, max_eval=None,
                    batch_size=64, epochs=10),
}  # fmt: skip


def validate(p: Grid) -> None:
    common.check_grid(p.backbone, p.tasks, p.methods)
    common.check_positive(workers=p.workers)
    for task in p.tasks:
        if task in SPECS and SPECS[task].modality != "image":
            raise ValueError(f"task {task!r} is not an image task")
    check_budgets(p.study(p.tasks[0]))  # seeds, methods and every budget, before any training


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    """One study per task; a row per task, method and budget."""
    few = common.train_options(shots_per_class=p.shots_per_class, train_fraction=p.train_fraction)
    studies = [common.run_study(p.study(task, max_train=p.max_train, **few), out, p.workers, **few) for task in p.tasks]
    return pd.concat(studies, ignore_index=True)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Mean accuracy per method with its interval (per task), accuracy against trainable parameters
    where there are several budgets, and methods x tasks as mean ± interval."""
    shown: list = [study_figures.bars(table, facet="task")]
    if table.budget[table.budget.astype(str) != ""].nunique() > 1:
        shown += [study_figures.tradeoff(part, title=task) for task, part in table.groupby("task")]
    return [*shown, scores(table)]


def summarize(table: pd.DataFrame) -> str:
    """The study summary in words: the best mean per group and the paired differences from the baseline."""
    return words.study_paragraph(table, common.baseline(table.method.unique()), by=["task", "budget"])
