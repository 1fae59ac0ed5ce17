"""The synthetic 5-arm pinwheel task: adapting one layer of a small MLP with LoRA, circulant,
Toeplitz and symmetric Toeplitz updates at (nearly) equal parameter counts.

Network: ``x (2-d) -> bottom Linear(2, d) -> ReLU -> [W0 + S] (d x d) -> ReLU -> head Linear(d, 5)``.
``W0`` is a frozen random layer and ``S`` the structured update (zero at step 0); the head always
trains, the bottom layer is frozen or trainable. Parameter counts are matched by the budget solver
(``nearest=True``); the table reports the exact count of each. Data as in Johnson et al. (2016).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import plots
from ..budget import BudgetError, Target, solve
from ..fileio import atomic_write
from ..structures import FAMILIES, make
from . import common, words

NAME = "pinwheel"
# The paper's families in its order, then any other registered family.
PAPER_ORDER = ("lowrank", "circulant", "toeplitz", "symmetric_toeplitz", "kronecker", "ldr")
METHODS = PAPER_ORDER + tuple(f for f in FAMILIES if f not in PAPER_ORDER)
BOTTOMS = ("frozen", "trainable")


def families_within(width: int, budget: int) -> tuple[str, ...]:
    """The families (the paper's first) that can be sized to ``budget`` on a ``width x width`` layer: a new
    family whose smallest setting is larger (block low rank at 128 on 64 x 64) is left out, not clamped."""
    fits = []
    for family in METHODS:
        try:
            solve(family, [Target("hidden", width, width)], budget)
        except BudgetError:
            continue
        fits.append(family)
    return tuple(fits)


@dataclass(frozen=True)
class Params:
    width: int = 32  # d: the adapted layer is d x d
    budget: int = 64  # update parameters, matched per family (nearest feasible count)
    methods: tuple[str, ...] = ("lowrank", "circulant", "toeplitz", "symmetric_toeplitz")
    bottom: tuple[str, ...] = BOTTOMS
    steps: int = 30
    per_class: int = 100
    lr: float = 0.01
    seeds: tuple[int, ...] = (0,)  # one run per seed, as in every experiment
    data_seed: int = 0  # the pinwheel's points


PROFILES = {
    "smoke": Params(),
    "cpu": Params(width=64, budget=128, steps=500, per_class=200, seeds=(0, 1, 2)),
    "paper": Params(
        width=64, budget=128, methods=families_within(64, 128), steps=3000, per_class=1000, seeds=(0, 1, 2, 3, 4)
    ),
}


def pinwheel(per_class: int, arms: int = 5, radial_std: float = 0.3, tangential_std: float = 0.05,
             rate: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``arms`` spiral arms of ``per_class`` 2-d points each: ``(x, labels)``."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    feats = rng.standard_normal((arms * per_class, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    labels = np.repeat(np.arange(arms), per_class)
    rot = angles[labels] + rate * np.exp(feats[:, 0])
    c, s = np.cos(rot), np.sin(rot)
    rotations = np.stack([c, -s, s, c], axis=1).reshape(-1, 2, 2)
    x = 10 * np.einsum("ti,tij->tj", feats, rotations)
    return x.astype(np.float32), labels


class AdaptedMLP(nn.Module):
    def __init__(self, width: int, family: str, hyper: dict[str, Any], arms: int = 5) -> None:
        super().__init__()
        self.bottom = nn.Linear(2, width)
        self.w0 = nn.Linear(width, width)
        self.w0.requires_grad_(False)
        self.update = make(family, width, width, **hyper)
        self.head = nn.Linear(width, arms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bottom(x))
        h = torch.relu(self.w0(h) + self.update(h))
        return self.head(h)


def validate(p: Params) -> None:
    common.check_choice("method", p.methods, METHODS)
    common.check_choice("bottom", p.bottom, BOTTOMS)
    common.check_positive(width=p.width, budget=p.budget, steps=p.steps, per_class=p.per_class, lr=p.lr)
    common.check_seeds(p.seeds)
    for family in p.methods:
        # a BudgetError unless the budget lies in every family's range (nearest would clamp it)
        solve(family, [Target("hidden", p.width, p.width)], p.budget)


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    """Train every (method, bottom, seed) and write the loss curves to ``pinwheel_curves.csv`` too."""
    x, y = pinwheel(p.per_class, seed=p.data_seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    curves: list[dict[str, Any]] = []
    rows = []
    for family in p.methods:
        plan = solve(family, [Target("hidden", p.width, p.width)], p.budget, nearest=True)
        for bottom in p.bottom:
            for seed in p.seeds:
                torch.manual_seed(seed)  # same W0, bottom and head for every method at this seed
                model = AdaptedMLP(p.width, family, plan.hyper)
                model.bottom.requires_grad_(bottom == "trainable")
                opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=p.lr)
                for step in range(p.steps):
                    loss = nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    curves.append({"method": family, "bottom": bottom, "seed": seed, "step": step, "loss": loss.item()})
                with torch.no_grad():
                    acc = (model(x).argmax(-1) == y).float().mean().item()
                rows.append({
                    "method": family, "hyper": str(plan.hyper), "update_params": plan.total, "bottom": bottom,
                    "seed": seed, "final_loss": loss.item(), "train_accuracy": acc,
                    "min_loss": min(c["loss"] for c in curves[-p.steps:]),
                })  # fmt: skip
    curve_table = pd.DataFrame(curves)
    atomic_write(out / f"{NAME}_curves.csv", lambda tmp: curve_table.to_csv(tmp, index=False))
    return pd.DataFrame(rows)


def curves(out_dir: str | Path) -> pd.DataFrame:
    """Mean training loss per (method, bottom, step) over seeds, from the run's curve file."""
    table = pd.read_csv(Path(out_dir) / f"{NAME}_curves.csv")
    return table.groupby(["method", "bottom", "step"], as_index=False)["loss"].mean()


def summary(table: pd.DataFrame) -> pd.DataFrame:
    return table.groupby(["bottom", "method", "update_params"], as_index=False)[["final_loss", "train_accuracy"]].agg(
        lambda v: f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{v.iloc[0]:.4f}"
    )


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Mean training loss per step (from the run's curve file), and the runs."""
    return [plots.loss_curves(curves(out_dir or Path("results") / NAME), facet="bottom"), table]


def summarize(table: pd.DataFrame) -> str:
    """Per bottom-layer setting: the lowest mean final loss, its ratio to low rank's, training accuracy."""
    sentences = []
    for bottom, part in table.groupby("bottom", sort=False):
        loss = part.groupby("method")["final_loss"].mean().sort_values()
        best = loss.index[0]
        text = f"With the bottom layer {bottom}, {best} ends at the lowest mean training loss, {loss.iloc[0]:.2g}"
        if "lowrank" in loss and best != "lowrank":
            text += f" ({loss['lowrank'] / loss.iloc[0]:.1f}x below low rank's {loss['lowrank']:.2g})"
        elif best == "lowrank" and len(loss) > 1:
            text += f" (the best structured update, {loss.index[1]}, ends at {loss.iloc[1]:.2g})"
        acc = part.train_accuracy
        sentences.append(
            f"{text}; training accuracy {words.span(acc.min(), acc.max(), '.1%')} across methods and seeds."
        )
    seeds = table.seed.nunique()
    count = words.span(table.update_params.min(), table.update_params.max(), "d")
    sentences.append(
        f"Means over {seeds} seed{'s' if seeds > 1 else ''} at {count} update parameters; the figure shows the "
        "mean loss per step."
    )
    return " ".join(sentences)
