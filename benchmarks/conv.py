"""Conv2d updates on MobileNetV2 (timm's architecture, random weights): forward+backward of the whole network
with SURM on its pointwise convolutions at the count nearest PEFT LoRA r8's (one shared setting over 33 shapes),
against the frozen network and PEFT LoRA on the same convolutions, timed in one interleaved run.

    nice -n 10 .venv/bin/python -m benchmarks.conv --out benchmarks/results/conv-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import timm
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from surmlab import SurmConfig, inject
from surmlab.timing import ratio, time_interleaved

from .common import environment, fwd_bwd

TARGETS = r"blocks\.\d+\.\d+\.conv_(pw|pwl)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--families", nargs="+", default=["lowrank", "circulant"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cpu")
    base = timm.create_model(args.model, pretrained=False, num_classes=10).train()
    x = torch.randn(args.batch, 3, args.size, args.size, requires_grad=True)
    frozen = copy.deepcopy(base).requires_grad_(False)
    lora = inject_adapter_in_model(LoraConfig(r=8, target_modules=TARGETS), copy.deepcopy(base))
    budget = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    models: dict[str, nn.Module] = {"frozen": frozen, "peft-lora-r8": lora}
    counts = {"peft-lora-r8": budget}
    for family in args.families:
        config = SurmConfig(family=family, target_modules=TARGETS, budget=budget, nearest=True)
        model = inject(copy.deepcopy(base), config)
        models[family] = model
        counts[family] = model.surm_plan.total
    times = time_interleaved({name: fwd_bwd(m, x) for name, m in models.items()}, device, reps=args.reps)
    med = {name: t["median_s"] for name, t in times.items()}
    result = {
        "environment": environment(device),
        "setting": {**vars(args), "out": str(args.out) if args.out else None, "targets": TARGETS},
        "trainable": counts,
        "median_s": med,
        "ratio_to_frozen": {name: ratio(t, med["frozen"]) for name, t in med.items()},
        "ratio_to_lora": {name: ratio(t, med["peft-lora-r8"]) for name, t in med.items()},
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("trainable", "median_s", "ratio_to_frozen", "ratio_to_lora")}, indent=2))
    return result


if __name__ == "__main__":
    main()
