"""Low-resource image classification: the Table 1 comparison with few labelled examples per class
(``shots`` sweep; ``fractions`` sweeps a stratified fraction of the training set instead)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import common
from .image_classification import SURM, grid
from .image_classification import validate as validate_grid

NAME = "low_resource"
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"backbone": "tiny-vit", "tasks": ["mnist"], "methods": ["surm-circulant", "lora"], "budget": "4096",
              "seeds": [0], "shots": [2], "fractions": [], "max_steps": 2, "max_eval": 64, "image_size": None,
              "batch_size": 16, "epochs": 1},
    "cpu": {"backbone": "vit-s14", "tasks": ["fashion-mnist"], "methods": ["surm-circulant", "surm-toeplitz", "lora",
            "linear-probe"], "budget": "20k", "seeds": [0], "shots": [1, 5, 10], "fractions": [], "max_steps": 60,
            "max_eval": 1000, "image_size": 56, "batch_size": 16, "epochs": 20},
    "paper": {"backbone": "timm:vit_base_patch16_224.augreg_in21k", "tasks": ["cifar10", "cifar100", "dtd"],
              "methods": [*SURM, "lora", "adapter", "linear-probe"], "budget": "55k", "seeds": [0, 1, 2],
              "shots": [1, 2, 5, 10], "fractions": [0.01, 0.05], "max_steps": None, "max_eval": None,
              "image_size": None, "batch_size": 32, "epochs": 20},
}  # fmt: skip


def settings(p: dict[str, Any]) -> list[dict[str, Any]]:
    """One training-set setting per shot count, then one per fraction."""
    shots = [{"shots_per_class": s, "train_fraction": None} for s in p["shots"]]
    return shots + [{"shots_per_class": None, "train_fraction": f} for f in p["fractions"]]


def validate(p: dict[str, Any]) -> None:
    p["shots"] = [int(s) for s in common.as_list(p["shots"])]
    p["fractions"] = [float(f) for f in common.as_list(p["fractions"])]
    if not p["shots"] and not p["fractions"]:
        raise ValueError("give at least one value in shots or fractions")
    if any(s < 1 for s in p["shots"]) or any(not 0 < f <= 1 for f in p["fractions"]):
        raise ValueError("shots must be >= 1 and fractions in (0, 1]")
    validate_grid(p)


def run(profile: str = "smoke", out_dir: str | None = None, **params: Any) -> pd.DataFrame:
    started = common.start()
    p = common.resolve(PROFILES, profile, params)
    validate(p)
    base = {**p, "max_train": None}
    out = common.output_dir(out_dir, NAME)
    rows = []
    for setting in settings(p):
        rows += grid({**base, **setting}, out)
    table = pd.DataFrame(rows)
    common.write_results(table, out, NAME, profile, p, started)
    return table
