"""Which layers a method adapts, found and described the same way for every method.

Default targets per model family are ``tuner.PRESETS``; the CNN family below is added to them here.
"""

from __future__ import annotations

import re

from torch import nn

from .. import tuner
from ..config import SurmConfig
from ..tuner import Preset, find_targets, resolve_config, surm_layers

# timm's MobileNetV2 / EfficientNet / MobileNetV3 blocks (the ``mobilenetv2`` backbone and ``timm:`` relatives):
# the pointwise 1x1 convs, expansion ``conv_pw`` and projection ``conv_pwl``, which hold most of the weights
# (the depthwise 3x3 ``conv_dw`` are out x 9 kernels, too thin for a structured update). A Conv2d takes
# LoRA-mode updates only, so adapter mode on them is refused by ``SurmLinear`` with that reason.
CNN_PRESET = Preset("timm-mobilenet", "conv_pwl", ("conv_pw", "conv_pwl"), ("conv_pwl",), ("classifier",))


def add_preset(preset: Preset) -> None:
    """Make ``preset`` one of the families ``inject`` recognises (once; later presets lose ties)."""
    if all(p.name != preset.name for p in tuner.PRESETS):
        tuner.PRESETS = (*tuner.PRESETS, preset)


add_preset(CNN_PRESET)


def preset_targets(model: nn.Module, mode: str, targets: list[str] | str | None) -> list[tuple[str, nn.Linear]]:
    """The layers SURM would adapt in ``mode``, without qkv slicing (PEFT cannot slice)."""
    config = resolve_config(model, SurmConfig(mode=mode, target_modules=targets, qkv_slices={}))
    return [(name, layer) for name, layer, _ in find_targets(model, config)]


def _pattern(name: str) -> str:
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "*", name)


def summarize_layers(names: list[str]) -> str:
    """Module names grouped by their pattern over layer indices, slices merged:
    ``blocks.0.attn.qkv[q]``, ``blocks.0.attn.qkv[v]``, ... -> ``blocks.*.attn.qkv[q,v] (x12)``."""
    groups: dict[str, tuple[set[str], list[str]]] = {}
    for name in names:
        base, _, rest = name.partition("[")
        layers, slices = groups.setdefault(_pattern(base), (set(), []))
        layers.add(base)
        if rest and rest[:-1] not in slices:
            slices.append(rest[:-1])
    parts = []
    for pattern, (layers, slices) in groups.items():
        sliced = f"[{','.join(slices)}]" if slices else ""
        parts.append(f"{pattern}{sliced}" + (f" (x{len(layers)})" if len(layers) > 1 else ""))
    return ", ".join(parts)


def describe_surm_layers(model: nn.Module) -> str:
    """The rows the ``SurmLinear`` layers of ``model`` adapt (``after ...`` for adapter mode)."""
    wrapped = surm_layers(model)
    names = [
        name if slice_name in ("full", "adapter") else f"{name}[{slice_name}]"
        for name, layer in wrapped.items()
        for slice_name, _, _ in layer.slices
    ]
    where = "after " if wrapped and next(iter(wrapped.values())).mode == "adapter" else ""
    return where + summarize_layers(names)
