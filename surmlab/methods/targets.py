"""Which layers a method adapts, found and described the same way for every method."""

from __future__ import annotations

import re

from torch import nn

from ..config import SurmConfig
from ..layer import is_linear
from ..tuner import find_targets, resolve_config, surm_layers


def preset_targets(model: nn.Module, mode: str, targets: list[str] | str | None) -> list[tuple[str, nn.Linear]]:
    """The layers SURM would adapt in ``mode``, without qkv slicing (PEFT cannot slice), for the methods that
    take linear layers only: a convolution or an embedding among them is refused by name."""
    config = resolve_config(model, SurmConfig(mode=mode, target_modules=targets, qkv_slices={}))
    found = [(name, layer) for name, layer, _ in find_targets(model, config)]
    for name, layer in found:
        if not is_linear(layer):
            raise ValueError(
                f"target {name} is an nn.{type(layer).__name__}; this method adapts nn.Linear layers only (the "
                "surm-* methods and lora also take Conv2d and Embedding layers): name linear layers with targets"
            )
    return found


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
