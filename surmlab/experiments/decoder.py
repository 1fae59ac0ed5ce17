"""Fine-tuning a decoder that generates: SURM families and LoRA at one budget on an instruction task,
scored by exact match of greedy replies (and perplexity), with seeds. Each task is a study: the mean
over seeds with its 95% interval and the paired difference from LoRA.

``cpu`` is the offline decoder (SmolLM2-135M-Instruct, dequantised from 4-bit) on the generated
arithmetic task; ``paper`` targets a 0.5B instruct model from the hub on GSM8K (needs the hub and a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..lm.data import is_lm_task
from ..study import check_budgets
from ..study import figures as study_figures
from ..study.table import scores
from . import common, words
from .image_classification import Grid

NAME = "decoder"
FAMILIES = ("surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-monarch")


@dataclass(frozen=True)
class Params(Grid):
    backbone: str = "tiny-llama"
    tasks: tuple[str, ...] = ("arithmetic",)
    methods: tuple[str, ...] = ("surm-circulant", "lora")
    budgets: tuple[str, ...] = ("1k",)
    seeds: tuple[int, ...] = (0, 1)
    max_steps: int | None = 2
    max_train: int | None = 32
    max_eval: int | None = 4
    max_length: int = 256
    batch_size: int = 8


PROFILES = {
    "smoke": Params(),
    # 140k: the smallest Toeplitz update on SmolLM2's q/v layers is 137,880 (LoRA gets rank 2, 115,200).
    # 60 steps of 4 (about 2 s a step on two cores): 12 steps of 4 already teach the reply's format
    "cpu": Params(backbone="smollm2-135m", methods=(*FAMILIES, "lora"), budgets=("140k",), seeds=(0, 1, 2),
                  max_steps=60, max_train=800, max_eval=100, max_length=192, batch_size=4),
    "paper": Params(backbone="lm:Qwen/Qwen2.5-0.5B-Instruct", tasks=("gsm8k",), methods=(*FAMILIES, "lora"),
                    budgets=("600k",), seeds=(0, 1, 2), max_steps=None, max_train=None, max_eval=500,
                    max_length=512, batch_size=16, epochs=1),
}  # fmt: skip


def validate(p: Params) -> None:
    common.check_backbone(p.backbone)
    common.check_methods(p.methods)
    common.check_positive(workers=p.workers)
    unknown = [t for t in p.tasks if not is_lm_task(t)]
    if unknown:
        raise ValueError(f"tasks {unknown} are not instruction tasks; give arithmetic, gsm8k or instruct:<path>")
    check_budgets(p.study(p.tasks[0]))


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    """One study per task; a row per task, method and budget (metric: exact match)."""
    options = {"max_train": p.max_train, "max_length": p.max_length}
    return pd.concat(
        [common.run_study(p.study(task, **options), out, p.workers) for task in p.tasks], ignore_index=True
    )


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Mean exact match per method with its interval, and methods x tasks as mean ± interval."""
    return [study_figures.bars(table, facet="task"), scores(table)]


def summarize(table: pd.DataFrame) -> str:
    """The study summary in words: the best mean per group and the paired differences from the baseline."""
    return words.study_paragraph(table, common.baseline(table.method.unique()), by=["task"])
