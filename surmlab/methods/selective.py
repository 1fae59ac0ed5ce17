"""Methods that add nothing and only choose which pretrained parameters train (the head always does)."""

from __future__ import annotations

from torch import nn

from .registry import Built, Request, register_method


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm2d) or "Norm" in type(module).__name__


@register_method("bitfit", kind="selective", lr=1e-3, description="train only the biases")
def build_bitfit(model: nn.Module, request: Request) -> Built:
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            p.requires_grad_(True)
    return Built(model, {}, "all biases")


@register_method("layernorm", kind="selective", lr=1e-3, description="train only the normalisation layers")
def build_layernorm(model: nn.Module, request: Request) -> Built:
    for module in model.modules():
        if _is_norm(module):
            for p in module.parameters(recurse=False):
                p.requires_grad_(True)
    return Built(model, {}, "all normalisation layers")


@register_method("linear-probe", kind="selective", lr=1e-3, description="train only the classifier head")
def build_linear_probe(model: nn.Module, request: Request) -> Built:
    return Built(model, {}, "nothing (head only)")


@register_method("full", kind="full", lr=5e-5, description="full fine-tuning")
def build_full(model: nn.Module, request: Request) -> Built:
    model.requires_grad_(True)
    return Built(model, {}, "every parameter")
