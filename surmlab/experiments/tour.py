"""A tour of structured unrestricted-rank matrices, for someone who knows LoRA.

LoRA learns ``W + B A`` with rank at most ``r``. SURM keeps the idea (a small trainable update added to
a frozen weight) but uses structured matrices whose parameter count is small while their rank is not:
a circulant ``n x n`` matrix has ``n`` parameters and is generically full rank. This notebook shows
(1) what each structure looks like, (2) its singular-value spectrum next to low rank at a similar
parameter count, (3) how the budget solver spreads a parameter budget over the layers of a real
backbone, (4) that the fast FFT/reshape product equals multiplying by the dense matrix, and (5) a short
fine-tune of a real text backbone with one SURM family against LoRA at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed

from .. import plots
from ..config import SurmConfig
from ..models import load_backbone
from ..structures import FAMILIES, make
from ..tuner import plan_for
from . import common, words

NAME = "tour"
SHOWN = {
    "lowrank (LoRA), rank 2": ("lowrank", {"rank": 2}),
    "circulant": ("circulant", {}),
    "toeplitz": ("toeplitz", {}),
    "symmetric_toeplitz": ("symmetric_toeplitz", {}),
    "kronecker 4x4 (x) 4x4": ("kronecker", {"factors": [4, 4]}),
    "ldr, rank 1": ("ldr", {"rank": 1}),
}


@dataclass(frozen=True)
class Params:
    backbone: str = "tiny-bert"
    task: str = "rotten-tomatoes"
    family: str = "circulant"  # fine-tuned as surm-<family> against LoRA
    budget: str = "2048"
    max_steps: int = 3
    max_train: int | None = 64
    max_eval: int | None = 64
    seed: int = 0


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="minilm-l6", budget="9216", max_steps=150, max_train=4800, max_eval=1000),
    "paper": Params(backbone="minilm-l6", budget="9216", max_steps=600, max_train=None, max_eval=None),
}


def _random(family: str, n: int, seed: int, **hyper: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    s = make(family, n, n, **hyper).double()
    with torch.no_grad():
        for p in s.parameters():
            p.normal_()
    return s


def example_matrices(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """``dense()`` of a random instance of every family (``n`` must be divisible by 4)."""
    return {label: _random(f, n, seed, **h).dense().detach().numpy() for label, (f, h) in SHOWN.items()}


def example_spectra(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Singular values of random instances with about ``2n`` parameters each."""
    shown = {
        f"lowrank r=1 ({2 * n} params)": ("lowrank", {"rank": 1}),
        f"circulant ({n} params)": ("circulant", {}),
        f"toeplitz ({2 * n - 1} params)": ("toeplitz", {}),
        f"ldr r=1 ({2 * n} params)": ("ldr", {"rank": 1}),
        f"kronecker 8x8 (x) {n // 8}x{n // 8} ({64 + (n // 8) ** 2} params)": ("kronecker", {"factors": [8, 8]}),
    }
    return {
        label: np.linalg.svd(_random(f, n, seed, **h).dense().detach().numpy(), compute_uv=False)
        for label, (f, h) in shown.items()
    }


def fft_checks(n: int = 96, tokens: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """``forward(x)`` (FFT / reshapes) against ``x @ dense().T`` on a rectangular ``n x 2n`` layer."""
    rows = []
    for family in FAMILIES:
        torch.manual_seed(seed)
        s = make(family, 2 * n, n).double()
        with torch.no_grad():
            for p in s.parameters():
                p.normal_()
        x = torch.randn(tokens, 2 * n, dtype=torch.float64)
        diff = (s(x) - x @ s.dense().T).abs().max().item()
        dense = s.dense().detach().numpy()
        rows.append({
            "section": "fft_check", "item": family, "params": sum(p.numel() for p in s.parameters()),
            "value": diff, "note": f"max |forward(x) - x dense().T| on a {n}x{2 * n} layer; "
            f"rank {np.linalg.matrix_rank(dense)} of {n}",
        })  # fmt: skip
    return rows


def budget_rows(backbone: str, family: str, budget: str) -> list[dict[str, Any]]:
    model = load_backbone(backbone, 2, pretrained=False).model
    plan = plan_for(model, SurmConfig(family=family, budget=budget))
    return [
        {"section": "budget", "item": row["layer"], "params": row["params"], "value": None,
         "note": f"{row['shape']} {family} {', '.join(f'{k}={v}' for k, v in row.items() if k not in ('layer', 'shape', 'params'))}"}  # noqa: E501
        for row in plan.rows()
    ]  # fmt: skip


def validate(p: Params) -> None:
    common.check_backbone(p.backbone)
    common.check_tasks([p.task])
    common.check_choice("family", [p.family], FAMILIES)
    common.check_positive(max_steps=p.max_steps)
    common.check_budgets(p.backbone, common.num_labels(p.task), [f"surm-{p.family}", "lora"], p.budget)


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    set_seed(p.seed)
    rows = fft_checks() + budget_rows(p.backbone, p.family, p.budget)
    for method in (f"surm-{p.family}", "lora"):
        r = common.train_row(
            backbone=p.backbone, task=p.task, method=method, budget=p.budget, max_steps=p.max_steps,
            max_train=p.max_train, max_eval=p.max_eval, seed=p.seed, runs_dir=str(out / "runs"),
        )  # fmt: skip
        rows.append({
            "section": "finetune", "item": method, "params": r["method_params"], "value": r["final"],
            "note": f"{r['metric']} after {p.max_steps} steps on {p.task} ({r['hyper']}, {r['wall_time_s']:.0f} s)",
        })  # fmt: skip
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Each structure's dense matrix and the singular-value spectra (the table is the run cell's output)."""
    return [
        plots.heatmap_grid(example_matrices(16), title="dense() of each structure (16 x 16)"),
        plots.spectra(example_spectra(64)),
    ]


def summarize(table: pd.DataFrame) -> str:
    """The fast-product check and the fine-tune in words."""
    checks = table[table.section == "fft_check"]
    worst = checks.loc[checks.value.idxmax()]
    ranks = checks.note.str.extract(r"on a (?P<shape>\S+) layer; rank (?P<rank>\d+) of (?P<full>\d+)")
    full = checks.item[ranks["rank"] == ranks["full"]].tolist()
    exact = worst.value < 1e-6
    tuned = table[table.section == "finetune"].set_index("item")
    surm, lora = tuned.iloc[0], tuned.loc["lora"]
    gap = surm.value - lora.value
    lead = "matches" if gap == 0 else ("beats" if gap > 0 else "trails")
    metric = surm.note.split(" after ")[0]
    return (
        f"{'Every' if exact else 'Not every'} family's fast product equals multiplying by its dense matrix: the "
        f"largest difference is {worst.value:.0e} ({worst['item']}){', rounding' if exact else ''}. "
        f"{len(full)} of {len(checks)} families are full rank on the {ranks['shape'].iloc[0]} layer "
        f"({words.listing(full)}). Fine-tuned at the same budget, {tuned.index[0]} ({surm.params:,} parameters) "
        f"{lead} LoRA ({lora.params:,}) in {metric}: {words.num(surm.value)} against {words.num(lora.value)} "
        f"({words.signed(gap)}); one seed, so a difference of a point or two is noise, not a ranking (the studies "
        "and lesson 3 rank methods over seeds)."
    )
