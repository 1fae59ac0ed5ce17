"""The registry of every method the lab compares, in the manner of timm's ``@register_model``.

A method is one ``Method`` record: its name, kind, default learning rate, whether a parameter budget
sizes it, the hyper-parameters it takes, and its builder. A builder is registered by decoration::

    @register_method("bitfit", kind="selective", lr=1e-3, description="train only the biases")
    def build_bitfit(model: nn.Module, request: Request) -> Built: ...

so a new baseline is one decorated function, and nothing central changes. The ``surm-<family>``
methods are derived from the structure-family registry (``surmlab.structures.FAMILIES``), each at
its family's ``default_lr``: a new family becomes a method without touching this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

HEAD_LR = 1e-3  # classifier heads start from scratch; every method trains them at this rate
# The order the lab lists methods in: by kind, then in order of registration.
KINDS = ("surm", "lora", "peft", "houlsby", "selective", "full")
# Older names that still work everywhere a method is named (CLI, study specs, saved run configs).
ALIASES = {"adapter": "houlsby"}


@dataclass(frozen=True)
class Request:
    """What the caller asks of a method; ``prepare`` hands it to the method's builder."""

    head: list[str]
    budget: int | str | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    mode: str = "lora"
    targets: list[str] | str | None = None
    nearest: bool = False
    alpha: float = 1.0
    product: str = "auto"
    dropout: float = 0.0
    init: str = "zero"  # "noise": small draws instead of the zero start (SURM's wrapper only)
    hyper_pattern: dict[str, dict[str, Any]] | None = None  # per-layer settings (SURM's wrapper only)


@dataclass
class Built:
    """What a builder made: the model to train (PEFT methods wrap it), its resolved size knob, what it
    adapts in words (e.g. ``blocks.*.attn.qkv[q,v] (x12)``) and, for SURM, the per-layer plan."""

    model: nn.Module
    hyper: dict[str, Any]
    targets: str
    layers: list[dict[str, Any]] = field(default_factory=list)


Builder = Callable[[nn.Module, Request], Built]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    kind: str  # one of KINDS
    lr: float  # default learning rate for the method's parameters (the head has its own, HEAD_LR)
    build: Builder
    budgeted: bool = False  # a size knob that a parameter budget solves for
    hyper_keys: tuple[str, ...] = ()  # the hyper-parameters it takes, the first required (SURM: the family's)
    structure: str | None = None  # the SURM structure family of a surm-* method

    @property
    def takes_targets(self) -> bool:
        """Whether the method adapts layers one chooses (``targets``); selective methods and full
        fine-tuning choose their own parameters."""
        return self.kind not in ("selective", "full")

    @property
    def takes_mode(self) -> bool:
        """Whether the method offers SURM's ``lora``/``adapter`` modes (every surm-* method does)."""
        return self.structure is not None

    def mode_for(self, mode: str) -> str:
        """The mode the method runs in when ``mode`` is asked for: the rule, said once. SURM's methods
        take it; every other method has no mode, which the lab records as ``lora``."""
        return mode if self.takes_mode else "lora"

    def placement(self, mode: str) -> str:
        """Where the method's layers go: after sublayer outputs (``adapter``: SURM in adapter mode and
        Houlsby's adapter) or on the targeted linear layers (``lora``)."""
        return "adapter" if self.kind == "houlsby" else self.mode_for(mode)

    def check_hyper(self, hyper: dict[str, Any]) -> None:
        """Refuse hyper-parameter names the method does not take (a family checks its own values later)."""
        if self.structure is not None or not hyper:
            return
        if not self.hyper_keys:
            raise ValueError(f"{self.name} has no hyper-parameters; got {sorted(hyper)}")
        unknown = sorted(set(hyper) - set(self.hyper_keys))
        needed = self.hyper_keys[0]
        if unknown or needed not in hyper:
            raise ValueError(
                f"{self.name} takes hyper-parameters {', '.join(self.hyper_keys)} ({needed} required); "
                f"got {sorted(hyper)}"
            )


METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    kind: str,
    lr: float,
    description: str,
    budgeted: bool = False,
    hyper_keys: tuple[str, ...] = (),
    structure: str | None = None,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as method ``name`` (a name registered twice is an error)."""
    if kind not in KINDS:
        raise ValueError(f"unknown method kind {kind!r}; known: {', '.join(KINDS)}")

    def decorate(build: Builder) -> Builder:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = Method(name, description, kind, lr, build, budgeted, tuple(hyper_keys), structure)
        listed = sorted(METHODS.values(), key=lambda m: KINDS.index(m.kind))  # stable: registration order kept
        METHODS.clear()
        METHODS.update((m.name, m) for m in listed)
        return build

    return decorate


def method_info(name: str) -> Method:
    """The method registered as ``name`` (or under an older name in ``ALIASES``)."""
    try:
        return METHODS[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
