"""``prepare``: one call readies a model for any registered method, so comparisons are fair.

It freezes the backbone, lets the method's builder add its trainable parts (matched to a parameter
``budget`` where it has a size knob), keeps the classifier head trainable, and reports the exact
trainable count and the layers it adapts. The head is outside the budget and counted separately.

Fairness rules every method follows: it starts exactly at the pretrained model (every update is zero
at initialisation), ``lora`` adapts exactly the rows SURM adapts, and one scaling convention holds
(``W x + alpha * S x``); see ``surm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..budget import BudgetError
from ..tuner import find_suffix, trainable_parameters
from .registry import Request, method_info


@dataclass
class Prepared:
    """A model ready to train with one method."""

    model: nn.Module
    method: str
    hyper: dict[str, Any]
    method_params: int  # trainable parameters the method adds (the budget counts these)
    head_params: int
    trainable: int
    total: int
    lr: float
    head: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    targets: str = ""  # what the method adapts, e.g. "encoder.layer.*.attention.self.{query,value} (x6)"

    def describe(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items()) or "no size knob"
        return (
            f"{self.method} ({hyper}) on {self.targets}: {self.method_params:,} method + {self.head_params:,} "
            f"head = {self.trainable:,} trainable of {self.total:,} ({100 * self.trainable / self.total:.3f}%)"
        )


def prepare(
    method: str,
    model: nn.Module,
    *,
    head: list[str],
    budget: int | str | None = None,
    hyper: dict[str, Any] | None = None,
    hyper_pattern: dict[str, dict[str, Any]] | None = None,
    mode: str = "lora",
    targets: list[str] | str | None = None,
    nearest: bool = False,
    alpha: float = 1.0,
    product: str = "auto",
    dropout: float = 0.0,
    init: str = "zero",
    lr: float | None = None,
) -> Prepared:
    """Freeze ``model``, add ``method``'s trainable parts (matched to ``budget`` where it has a size
    knob), keep the ``head`` suffixes trainable. Returns the model to train (PEFT methods wrap it)."""
    info = method_info(method)
    if head and not any(find_suffix(model, h) for h in head):  # no head: a language model keeps its own output
        raise ValueError(f"head {head!r} matches no module of {type(model).__name__}")
    # A structure family has defaults per layer; every other size knob needs a budget or a value.
    if info.budgeted and budget is None and not hyper and info.structure is None:
        raise BudgetError(f"{method} needs --budget (e.g. 50k) or explicit hyper-parameters")
    if not info.budgeted and budget is not None:
        raise BudgetError(f"{method} has no size knob; drop the budget")
    if info.mode_for(mode) != mode:
        raise ValueError(f"mode {mode!r} applies to surm-* methods only")
    if hyper and budget is not None:
        raise BudgetError(f"give either hyper-parameters {hyper} or a budget ({budget}) for {method}, not both")
    info.check_hyper(hyper or {})
    if dropout and info.kind not in ("surm", "lora"):
        raise ValueError(f"dropout applies to surm-* methods and lora; {method} takes none (got {dropout})")
    if init != "zero" and info.kind not in ("surm", "lora"):
        raise ValueError(f"init {init!r} applies to surm-* methods and lora; {method} starts its own way")
    if hyper_pattern and info.kind not in ("surm", "lora"):
        raise ValueError(f"per-layer settings (hyper_pattern) apply to surm-* methods and lora, not {method}")
    model.requires_grad_(False)
    request = Request(
        list(head),
        budget,
        dict(hyper or {}),
        mode,
        targets,
        nearest,
        alpha,
        product,
        dropout,
        init,
        hyper_pattern or None,
    )
    built = info.build(model, request)
    for suffix in head:
        for name in find_suffix(built.model, suffix):
            built.model.get_submodule(name).requires_grad_(True)
    trainable, total = trainable_parameters(built.model)
    head_names = head_parameter_names(built.model, head)
    head_params = sum(p.numel() for n, p in built.model.named_parameters() if n in head_names)
    return Prepared(
        model=built.model,
        method=info.name,
        hyper=built.hyper,
        method_params=trainable - head_params,
        head_params=head_params,
        trainable=trainable,
        total=total,
        lr=lr if lr is not None else info.lr,
        head=list(head),
        layers=built.layers,
        targets=built.targets,
    )


def head_parameter_names(model: nn.Module, head: list[str]) -> set[str]:
    """Names of trainable parameters that belong to the classifier head (for its own learning rate)."""
    return {n for n, p in model.named_parameters() if p.requires_grad and any(f".{h}." in f".{n}" for h in head)}
