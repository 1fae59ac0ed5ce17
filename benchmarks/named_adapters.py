"""Named adapters and dropout on one layer: forward+backward time, ratios measured in one interleaved run.

* two active adapters against the sum of each alone (the claim: at most the sum, since the frozen product
  is computed once);
* dropout off costs nothing: a layer built with ``dropout=0.1`` in eval mode (dropout off) and one built
  with ``dropout=0`` against each other, and the cost of dropout on in training for reference.

    nice -n 10 .venv/bin/python -m benchmarks.named_adapters --out benchmarks/results/named-adapters-cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surmlab import SurmConfig, inject, set_adapter
from surmlab.timing import ratio, time_interleaved

from .common import environment, fwd_bwd


def one_layer(features: int) -> nn.Module:
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(features, features))
    return model


def build(features: int, budget: int, families: tuple[str, str], dropout: float = 0.0) -> nn.Module:
    model = one_layer(features)
    for name, family in zip(("a", "b"), families, strict=True):
        config = SurmConfig(family=family, target_modules=["fc"], budget=budget, nearest=True, dropout=dropout)
        inject(model, config, name=name)
    with torch.no_grad():  # non-zero updates, as after training (inactive ones included: randomize_updates skips them)
        for key, p in model.named_parameters():
            if ".updates." in key:
                p.normal_(0.0, 0.01)
    return model


def single(args: argparse.Namespace, budget: int, dropout: float, train: bool) -> nn.Module:
    """Adapter ``a`` alone, built with ``dropout``, in train or eval mode."""
    model = build(args.features, budget, tuple(args.families), dropout)
    set_adapter(model, "a")
    return model.train(train)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--families", nargs=2, default=["circulant", "lowrank"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cpu")
    budget = 8 * 2 * args.features  # LoRA r8's count on a square layer
    x = torch.randn(args.tokens, args.features, requires_grad=True)
    frozen = one_layer(args.features).requires_grad_(False)
    models = {name: build(args.features, budget, tuple(args.families)) for name in ("a", "b", "a+b")}
    set_adapter(models["a"], "a")
    set_adapter(models["b"], "b")
    set_adapter(models["a+b"], ["a", "b"])
    fns = {name: fwd_bwd(model, x) for name, model in models.items()}
    fns["frozen"] = fwd_bwd(frozen, x)
    for dropout in (0, 0.1):
        for train in (True, False):
            fns[f"dropout={dropout} {'train' if train else 'eval'}"] = fwd_bwd(single(args, budget, dropout, train), x)
    times = time_interleaved(fns, device, reps=args.reps)
    med = {name: t["median_s"] for name, t in times.items()}
    result = {
        "environment": environment(device),
        "setting": {**vars(args), "out": str(args.out) if args.out else None, "budget": budget},
        "median_s": med,
        "ratios": {
            "a+b / (a + b)": ratio(med["a+b"], med["a"] + med["b"]),
            "a+b / (a + b - frozen)": ratio(med["a+b"], med["a"] + med["b"] - med["frozen"]),
            "dropout=0.1 eval / dropout=0 eval": ratio(med["dropout=0.1 eval"], med["dropout=0 eval"]),
            "dropout=0.1 train / dropout=0 train": ratio(med["dropout=0.1 train"], med["dropout=0 train"]),
        },
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"median_s": med, "ratios": result["ratios"]}, indent=2))
    return result


if __name__ == "__main__":
    main()
