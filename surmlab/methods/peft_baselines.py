"""Baselines through the PEFT library: its LoRA, C3A and LoKr, on the layers SURM's preset targets.

PEFT cannot adapt a slice of a layer, so these adapt whole layers (all of a fused qkv). Each size knob
is solved by ``budget`` like the structure families: C3A's block size by the ``circulant`` count
(its parameters are exactly a block-circulant's), PEFT-LoRA's rank by the ``lowrank`` count, LoKr's
rank and factor by enumerating PEFT's own count (``lokr_count``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from .. import budget
from ..budget import Target
from .registry import Built, Request, register_method
from .targets import preset_targets, summarize_layers

LOKR_RANKS = (1, 2, 4, 8, 16, 32, 64, 128)
LOKR_FACTORS = (-1, 2, 4, 8, 16, 32, 64)


def _targets(model: nn.Module, request: Request) -> tuple[list[str], list[Target]]:
    layers = preset_targets(model, "lora", request.targets)
    return [name for name, _ in layers], [Target(name, lay.out_features, lay.in_features) for name, lay in layers]


def _wrap(model: nn.Module, config: Any, hyper: dict[str, Any]) -> Built:
    """``get_peft_model`` with ``config``, and the layers PEFT wrapped, in words."""
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = get_peft_model(model, config)
    names = [n.removeprefix("base_model.model.") for n, m in wrapped.named_modules() if isinstance(m, BaseTunerLayer)]
    return Built(wrapped, hyper, summarize_layers(names))


@register_method(
    "peft-lora",
    kind="peft",
    lr=3e-3,
    description="LoRA through the PEFT library (whole layers: all of a fused qkv)",
    budgeted=True,
    hyper_keys=("rank",),
)
def build_peft_lora(model: nn.Module, request: Request) -> Built:
    from peft import LoraConfig

    names, shapes = _targets(model, request)
    if request.hyper:
        rank = int(request.hyper["rank"])
    else:
        rank = budget.solve("lowrank", shapes, request.budget, nearest=request.nearest).hyper["rank"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=names, lora_dropout=0.0)
    return _wrap(model, config, {"rank": rank, "lora_alpha": 2 * rank})


@register_method(
    "c3a",
    kind="peft",
    lr=5e-2,
    description="C3A (block-circulant, delta scaled by 1/in_features) through the PEFT library",
    budgeted=True,
    hyper_keys=("block_size", "init_weights"),
)
def build_c3a(model: nn.Module, request: Request) -> Built:
    from peft import C3AConfig

    names, shapes = _targets(model, request)
    if request.hyper:
        block = int(request.hyper["block_size"])
    else:
        block = budget.solve("circulant", shapes, request.budget, nearest=request.nearest).hyper["block_size"]
    # PEFT starts C3A's kernels from xavier noise; init_weights=True keeps them at zero, so C3A starts
    # exactly at the pretrained model like every other method here (hyper init_weights overrides).
    init = request.hyper.get("init_weights", True)
    config = C3AConfig(block_size=block, target_modules=names, init_weights=init)
    return _wrap(model, config, {"block_size": block, "init_weights": init})


def lokr_count(in_features: int, out_features: int, rank: int, factor: int = -1) -> int:
    """Parameters PEFT's LoKr adds to one linear layer (mirrors its ``update_layer``)."""
    from peft.tuners.lokr.layer import factorization

    in_m, in_n = factorization(in_features, factor)
    out_l, out_k = factorization(out_features, factor)
    w1 = out_l * in_m
    w2 = out_k * in_n if rank >= max(out_k, in_n) / 2 else rank * (out_k + in_n)
    return w1 + w2


@register_method(
    "lokr",
    kind="peft",
    lr=3e-3,
    description="LoKr (Kronecker) through the PEFT library",
    budgeted=True,
    hyper_keys=("rank", "decompose_factor"),
)
def build_lokr(model: nn.Module, request: Request) -> Built:
    from peft import LoKrConfig

    names, shapes = _targets(model, request)
    if request.hyper:
        rank, factor = int(request.hyper["rank"]), int(request.hyper.get("decompose_factor", -1))
    else:
        widest = max(max(t.in_features, t.out_features) for t in shapes)
        options = sorted(  # by count (stable): of two equally close counts the smaller wins
            (
                (sum(lokr_count(t.in_features, t.out_features, r, f) for t in shapes), {"rank": r, "factor": f})
                for f in LOKR_FACTORS
                for r in sorted({*LOKR_RANKS, widest})
            ),
            key=lambda option: option[0],
        )
        best = budget.closest(options, request.budget, request.nearest, "lokr")[1]
        rank, factor = best["rank"], best["factor"]
    config = LoKrConfig(r=rank, alpha=rank, decompose_factor=factor, target_modules=names)
    return _wrap(model, config, {"rank": rank, "decompose_factor": factor})


PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def save_peft_adapter(model: nn.Module, folder: str | Path) -> bool:
    """PEFT's own adapter files for a PEFT-wrapped model (``PeftModel.from_pretrained`` loads them), the
    head the lab trains outside PEFT included as PEFT's ``modules_to_save``; each file written atomically.
    Returns False, writing nothing, for a model PEFT did not wrap."""
    if not hasattr(model, "peft_config"):  # no PEFT import for the other methods
        return False
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    if not isinstance(model, PeftModel):
        return False
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapter = set(get_peft_model_state_dict(model))
    adapter_name = model.active_adapter
    trainable = [  # PEFT's state-dict keys drop the adapter name: lora_A.default.weight -> lora_A.weight
        ".".join(part for part in n.split(".") if part != adapter_name)
        for n, p in model.named_parameters()
        if p.requires_grad
    ]
    heads = sorted({n.rsplit(".", 1)[0] for n in trainable if n not in adapter})  # trained outside PEFT
    with tempfile.TemporaryDirectory(dir=folder, prefix=".peft-") as tmp:
        model.save_pretrained(tmp)
        weights = load_file(str(Path(tmp) / PEFT_WEIGHTS_FILE))
        config = json.loads((Path(tmp) / PEFT_CONFIG_FILE).read_text())
        for head in heads:
            for key, value in model.get_submodule(head).state_dict().items():
                weights[f"{head}.{key}"] = value.detach().cpu().contiguous()
        saved = [h.removeprefix(PEFT_PREFIX) for h in heads]
        config["modules_to_save"] = sorted({*(config.get("modules_to_save") or []), *saved}) or None
        save_file(weights, str(Path(tmp) / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
        (Path(tmp) / PEFT_CONFIG_FILE).write_text(json.dumps(config, indent=2))
        for file in Path(tmp).iterdir():
            os.replace(file, folder / file.name)
    return True
