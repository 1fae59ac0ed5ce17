"""Paper Table 8: how far fine-tuning moves the weights, and how alike the fine-tuned models represent
the data. One backbone and task are fine-tuned with ``full`` (the reference) and with each method in
``methods`` (SURM families and LoRA, all at ``budget``).

Per adapted layer (the preset's targets, e.g. query and value of every attention block):
``one_minus_cos`` is ``1 - cos(W_ft, W_0)`` between the fine-tuned weight and the pretrained one,
flattened; for SURM and LoRA ``W_ft`` is the merged ``W_0 + delta`` (``surmlab.merge``; PEFT's
``merge_and_unload`` for PEFT methods), for ``full`` the trained weight. ``rel_change`` is ``||W_ft - W_0|| / ||W_0||``.
``cka_vs_full`` is linear CKA between the pooled encoder representations (masked mean, or the
[CLS] token with ``pooling="cls"``) of the eval set under the fully fine-tuned model and under the
row's model (1 for ``full`` itself); ``cka_vs_pretrained`` compares each model with the untrained one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed

from .. import plots
from ..data import load_task, make_collate
from ..methods import method_info, preset_targets
from ..models import Backbone, load_backbone, mean_pool
from ..predict import load_run
from . import common, words

NAME = "weight_analysis"
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class Params:
    backbone: str = "tiny-bert"
    task: str = "rotten-tomatoes"
    methods: tuple[str, ...] = ("surm-circulant", "lora")  # compared with full fine-tuning
    budget: str = "4096"
    seed: int = 0
    pooling: str = "mean"  # mean | cls
    max_steps: int | None = 3
    max_train: int | None = 64
    max_eval: int | None = 64
    epochs: int = 1
    batch_size: int = 16
    data_dir: str | None = None


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="minilm-l6", methods=("surm-circulant", "surm-toeplitz", "lora"), budget="50k",
                  max_steps=150, max_train=4800, max_eval=1000, batch_size=32),
    "paper": Params(backbone="minilm-l6", methods=("surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-ldr",
                    "lora"), budget="50k", max_steps=None, max_train=None, max_eval=None, epochs=3, batch_size=32),
}  # fmt: skip


# -- measures ----------------------------------------------------------------------------------------


def cosine_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """``1 - cos`` of the angle between two weights, flattened (0: same direction)."""
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    denom = x.norm() * y.norm()
    if denom == 0:
        raise ValueError("cosine similarity is undefined for a zero weight")
    return float(1.0 - (x @ y) / denom)


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same ``n`` examples
    (``(n, d1)`` and ``(n, d2)``): ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred
    ``Xc, Yc`` (Kornblith et al., 2019). In [0, 1]; invariant to orthogonal maps and isotropic scaling."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
        raise ValueError(f"CKA needs (n, d) matrices over the same n examples, got {shapes}")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        raise ValueError("CKA is undefined for a constant representation")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denom)


# -- models --------------------------------------------------------------------------------------------


def validate(p: Params) -> None:
    common.check_backbone(p.backbone)
    common.check_tasks([p.task])
    common.check_methods(p.methods)
    bad = [m for m in p.methods if not (method_info(m).takes_mode or m == "lora")]
    if bad:
        raise ValueError(f"weight_analysis compares surm-* and lora against full fine-tuning; not {', '.join(bad)}")
    if not p.methods:
        raise ValueError("list at least one surm-* or lora method to compare with full fine-tuning")
    common.check_choice("pooling", [p.pooling], POOLINGS)
    common.check_positive(epochs=p.epochs, batch_size=p.batch_size)
    if load_backbone(p.backbone, 2, pretrained=False).modality != "text":
        raise ValueError(f"weight_analysis compares text encoders; {p.backbone!r} is an image backbone")
    common.check_budgets(p.backbone, 2, p.methods, p.budget)


@torch.no_grad()
def representations(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], pooling: str) -> torch.Tensor:
    """Pooled last hidden states of the encoder (``model.model`` of a ``TextClassifier``: a bare
    encoder, or a transformers ``*ForSequenceClassification`` whose hidden states are asked for)."""
    model.eval()
    encoder = model.model
    out = []
    for batch in batches:
        result = encoder(**batch, output_hidden_states=True)
        hidden = result.hidden_states[-1]
        out.append(hidden[:, 0] if pooling == "cls" else mean_pool(hidden, batch["attention_mask"]))
    return torch.cat(out).double()


def eval_batches(p: Params, backbone: Backbone, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    task = load_task(p.task, p.data_dir, seed=p.seed, max_train=p.max_train, max_eval=p.max_eval)
    collate = make_collate(task, backbone)
    rows = list(task.eval)
    batches = []
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i : i + batch_size])
        batch.pop("labels")
        batches.append(batch)
    return batches


def target_names(model: torch.nn.Module) -> list[str]:
    """The layers SURM and LoRA adapt by default (the model family's preset, LoRA mode)."""
    return [name for name, _ in preset_targets(model, "lora", None)]


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    trained = {}
    for method in ["full", *p.methods]:
        trained[method] = common.train_row(
            backbone=p.backbone, task=p.task, method=method, seed=p.seed,
            budget=None if method == "full" else p.budget, max_steps=p.max_steps, max_train=p.max_train,
            max_eval=p.max_eval, epochs=p.epochs, batch_size=p.batch_size,
            data_dir=p.data_dir, runs_dir=str(out / "runs"),
        )  # fmt: skip
    # The pretrained reference, built as training built it (seeded: random-init backbones match too).
    set_seed(p.seed)
    pretrained = load_backbone(p.backbone, 2)
    names = target_names(pretrained.model)
    batches = eval_batches(p, pretrained)
    reference = {n: pretrained.model.get_submodule(n).weight.detach().clone() for n in names}
    feats = {"pretrained": representations(pretrained.model, batches, p.pooling)}
    weights = {}
    for method, row in trained.items():
        set_seed(p.seed)  # load_run rebuilds the frozen backbone: same init as training
        _, prepared, _ = load_run(row["run_dir"])
        model = common.merged(prepared.model)
        weights[method] = {n: model.get_submodule(n).weight.detach() for n in names}
        feats[method] = representations(model, batches, p.pooling)
    rows = []
    for method, row in trained.items():
        cka_full = linear_cka(feats["full"], feats[method])
        cka_pre = linear_cka(feats["pretrained"], feats[method])
        for name in names:
            w, w0 = weights[method][name], reference[name]
            rows.append({
                "backbone": p.backbone, "task": p.task, "method": method, "layer": name,
                "one_minus_cos": cosine_distance(w, w0),
                "rel_change": float((w.double() - w0.double()).norm() / w0.double().norm()),
                "cka_vs_full": cka_full, "cka_vs_pretrained": cka_pre,
                "method_params": row["method_params"], "trainable_params": row["trainable_params"],
                "metric": row["metric"], "final": row["final"], "run_dir": row["run_dir"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean (and max) ``1 - cos`` over adapted layers, the CKAs and the score."""
    agg = table.groupby("method").agg(
        one_minus_cos_mean=("one_minus_cos", "mean"), one_minus_cos_max=("one_minus_cos", "max"),
        rel_change_mean=("rel_change", "mean"), cka_vs_full=("cka_vs_full", "first"),
        cka_vs_pretrained=("cka_vs_pretrained", "first"), method_params=("method_params", "first"),
        final=("final", "first"),
    )  # fmt: skip
    return agg.sort_values("one_minus_cos_mean")


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """How far each adapted layer moved, how alike the representations are, and the paper's table."""
    return [
        plots.bars(table, "layer", "one_minus_cos", "method", title="1 - cos(W_ft, W_0) per adapted layer"),
        plots.bars(table, "method", "cka_vs_full", "method", title="Linear CKA with the fully fine-tuned model"),
        paper_table(table),
    ]


def summarize(table: pd.DataFrame) -> str:
    """How far each method moved the weights, how alike its representations are, and its score."""
    t = paper_table(table)
    budgeted = t.drop(index="full", errors="ignore")
    far, near = budgeted.one_minus_cos_mean.idxmax(), budgeted.one_minus_cos_mean.idxmin()
    close = budgeted.cka_vs_full.idxmax()
    best = budgeted.final.idxmax()
    metric = table.metric.iloc[0]
    text = (
        f"{far} moves the adapted weights furthest (mean 1 - cos {words.num(budgeted.one_minus_cos_mean[far], 4)}) "
        f"and {near} least ({words.num(budgeted.one_minus_cos_mean[near], 4)}); {close} represents the eval set "
        f"most like full fine-tuning (linear CKA {words.num(budgeted.cka_vs_full[close])}). "
        f"The highest {metric} of the budgeted methods is {best}'s, {words.num(budgeted.final[best])}"
    )
    if "full" in t.index:
        text += f" (full fine-tuning: {words.num(t.final['full'])})"
    return text + "; one seed each, so score differences of a point or two are noise."
