"""Paper Table 1: a ViT backbone x datasets x methods, with trainable-parameter counts and accuracy.

SURM families run in LoRA mode at the same budget as LoRA (and the Houlsby adapter, matched by its
bottleneck); BitFit, linear probing and full fine-tuning have no size knob. The paper's setting is the
``paper`` profile (ViT-B/16 ImageNet-21k on CIFAR-10/100, SUN397, DTD, STL-10; needs the hub); the
offline default is ``vit-s14`` on Fashion-MNIST and MNIST.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import common

NAME = "image_classification"
SURM = ["surm-circulant", "surm-toeplitz", "surm-symmetric_toeplitz", "surm-kronecker", "surm-ldr"]
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"backbone": "tiny-vit", "tasks": ["mnist"], "methods": ["surm-circulant", "lora", "linear-probe"],
              "budget": "4096", "seeds": [0], "max_steps": 2, "max_train": 64, "max_eval": 64, "image_size": None,
              "batch_size": 16, "epochs": 1, "shots_per_class": None, "train_fraction": None},
    "cpu": {"backbone": "vit-s14", "tasks": ["fashion-mnist", "mnist"],
            "methods": [*SURM, "lora", "adapter", "bitfit", "linear-probe", "full"], "budget": "55k", "seeds": [0],
            "max_steps": 150, "max_train": 4800, "max_eval": 1000, "image_size": 56, "batch_size": 32, "epochs": 1,
            "shots_per_class": None, "train_fraction": None},
    "paper": {"backbone": "timm:vit_base_patch16_224.augreg_in21k",
              "tasks": ["cifar10", "cifar100", "sun397", "dtd", "stl10"],
              "methods": [*SURM, "lora", "adapter", "bitfit", "linear-probe", "full"], "budget": "55k",
              "seeds": [0, 1, 2], "max_steps": None, "max_train": None, "max_eval": None, "image_size": None,
              "batch_size": 64, "epochs": 10, "shots_per_class": None, "train_fraction": None},
}  # fmt: skip


def validate(p: dict[str, Any]) -> None:
    common.check_grid(p)
    from ..data import SPECS

    for task in p["tasks"]:
        if task in SPECS and SPECS[task].modality != "image":
            raise ValueError(f"task {task!r} is not an image task")
    labels = SPECS[p["tasks"][0]].num_labels if p["tasks"][0] in SPECS else 10
    common.check_budgets(p["backbone"], labels, p["methods"], p["budget"])


def grid(p: dict[str, Any], out_dir: Any, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One training run per (task, method, seed[, extra]), budget on the methods that take one."""
    from ..methods import METHODS

    rows = []
    for task in p["tasks"]:
        for method in p["methods"]:
            for seed in p["seeds"]:
                row = common.train_row(
                    backbone=p["backbone"], task=task, method=method, seed=seed,
                    budget=p["budget"] if METHODS[method].budgeted else None,
                    max_steps=p["max_steps"], max_train=p["max_train"], max_eval=p["max_eval"],
                    image_size=p["image_size"], batch_size=int(p["batch_size"]), epochs=int(p["epochs"]),
                    shots_per_class=p["shots_per_class"], train_fraction=p["train_fraction"],
                    runs_dir=str(out_dir / "runs"), **(extra or {}),
                )  # fmt: skip
                rows.append({**row, "shots_per_class": p["shots_per_class"], "train_fraction": p["train_fraction"]})
    return rows


def run(profile: str = "smoke", out_dir: str | None = None, **params: Any) -> pd.DataFrame:
    started = common.start()
    p = common.resolve(PROFILES, profile, params)
    validate(p)
    out = common.output_dir(out_dir, NAME)
    table = pd.DataFrame(grid(p, out))
    common.write_results(table, out, NAME, profile, p, started)
    return table


def pivot(table: pd.DataFrame, value: str = "best") -> pd.DataFrame:
    """Methods x tasks (mean over seeds), with the method's trainable-parameter count."""
    wide = table.pivot_table(index="method", columns="task", values=value, aggfunc="mean")
    wide.insert(0, "method_params", table.groupby("method")["method_params"].first())
    if "targets" in table:  # records written before targets were recorded lack the column
        wide.insert(1, "targets", table.groupby("method")["targets"].first())
    return wide.sort_values("method_params")
