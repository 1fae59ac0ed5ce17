"""The Houlsby bottleneck adapter after attention and MLP outputs (the placement SURM's adapter mode uses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import budget
from ..tuner import set_module
from .registry import Built, Request, register_method
from .targets import preset_targets, summarize_layers


class HoulsbyAdapter(nn.Module):
    """``h <- h + up(gelu(down(h)))`` after a frozen output layer; ``up`` starts at zero."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        d = base_layer.out_features
        self.base_layer = base_layer
        self.down = nn.Linear(d, bottleneck).to(base_layer.weight.device)
        self.up = nn.Linear(bottleneck, d).to(base_layer.weight.device)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @staticmethod
    def count(d: int, bottleneck: int) -> int:
        return 2 * d * bottleneck + bottleneck + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return h + self.up(F.gelu(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


@register_method(
    "houlsby",  # formerly "adapter", which still works (registry.ALIASES)
    kind="houlsby",
    lr=1e-3,
    description="Houlsby bottleneck adapter after attention and MLP outputs",
    budgeted=True,
    hyper_keys=("bottleneck",),
)
def build_houlsby(model: nn.Module, request: Request) -> Built:
    layers = preset_targets(model, "adapter", request.targets)
    widest = min(lay.out_features for _, lay in layers)  # a bottleneck is at most as wide as its layer
    if request.hyper:
        bottleneck = request.hyper["bottleneck"]
        if not isinstance(bottleneck, int) or isinstance(bottleneck, bool) or not 1 <= bottleneck <= widest:
            raise ValueError(f"adapter bottleneck must be a whole number from 1 to {widest} here, got {bottleneck!r}")
    else:
        options = [
            (sum(HoulsbyAdapter.count(lay.out_features, m) for _, lay in layers), {"bottleneck": m})
            for m in range(1, widest + 1)
        ]
        bottleneck = budget.closest(options, request.budget, request.nearest, "adapter")[1]["bottleneck"]
    for name, layer in layers:
        set_module(model, name, HoulsbyAdapter(layer, bottleneck))
    return Built(model, {"bottleneck": bottleneck}, "after " + summarize_layers([name for name, _ in layers]))
