"""``SurmConfig``: what to adapt, with which structure, and how; round-trips through JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .budget import MODES, parse_budget
from .structures import family as structure_family

PRODUCTS = ("auto", "fft", "dense")
# Fields renamed since files were first written: old adapter and run configs still load.
RENAMED = {"path": "product"}
QKV = ("q", "k", "v")
# Activations with act(0) = 0 (the model starts unchanged) and act'(0) != 0 (it still learns);
# relu is left out because its zero gradient at 0 would freeze a zero-initialised adapter.
ACTIVATIONS = ("gelu", "silu", "tanh", "identity")
# "zero": S = 0, the model starts exactly at the pretrained one; "noise": the parameters each family
# starts at zero drawn from N(0, surmlab.layer.NOISE_STD^2) instead (torch's RNG: seeded by torch.manual_seed).
INITS = ("zero", "noise")


def is_whole(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` and not NaN (infinity passes: callers bound it)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming them and the known ones."""
    known = {f.name for f in fields(cls)}
    data = {RENAMED[k] if RENAMED.get(k) in known and RENAMED[k] not in data else k: v for k, v in data.items()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class SurmConfig:
    """How to inject structured updates into a model.

    ``target_modules`` is a list of module-name suffixes, a regular expression (a string matched
    against full names), ``"all-linear"``, or ``None`` for the preset of the model's family.
    ``qkv_slices`` maps a fused-qkv suffix to the slices to adapt, e.g. ``{"attn.qkv": ["q", "v"]}``.
    Give either ``hyper`` (e.g. ``{"block_size": 64}``) or a ``budget`` (``50000``, ``"50k"``) that
    the solver turns into ``hyper``.
    """

    family: str = field(default="circulant", metadata={"help": "structure family"})
    mode: str = field(default="lora", metadata={"help": "'lora': W x + alpha S x; 'adapter': h + act(S h) + b"})
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "suffixes, a regex, 'all-linear', or None for the preset"}
    )
    exclude: list[str] | str | None = field(default=None, metadata={"help": "suffixes or a regex to skip"})
    qkv_slices: dict[str, list[str]] | None = field(
        default=None, metadata={"help": "fused-qkv suffix -> slices among q, k, v (None: preset)"}
    )
    hyper: dict[str, Any] = field(default_factory=dict, metadata={"help": "family hyper-parameters"})
    budget: int | str | None = field(default=None, metadata={"help": "target trainable-parameter count"})
    nearest: bool = field(default=False, metadata={"help": "budget: nearest count, not the largest below"})
    alpha: float = field(default=1.0, metadata={"help": "scale of the LoRA-mode update"})
    activation: str = field(default="gelu", metadata={"help": f"adapter non-linearity: {ACTIVATIONS}"})
    product: str = field(
        default="auto",
        metadata={"help": "how S x is computed: 'fft' (activation space), 'dense' (S folded into W), 'auto'"},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "suffixes kept trainable and saved (None: the preset's head)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the update's input in training (lora_dropout)"})
    init: str = field(default="zero", metadata={"help": f"update initialisation: {INITS}"})
    hyper_pattern: dict[str, dict[str, Any]] | None = field(
        default=None,
        metadata={"help": "module suffix -> its own hyper-parameters (PEFT's rank_pattern), e.g. {'fc2': {'rank': 8}}"},
    )

    def __post_init__(self) -> None:
        structure_family(self.family)  # raises on an unknown family, listing the known ones
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        if self.product not in PRODUCTS:
            raise ValueError(f"unknown product {self.product!r}; known: {', '.join(PRODUCTS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; known: {', '.join(INITS)}")
        if not (is_real(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.budget is not None:
            parse_budget(self.budget)
        for suffix, slices in (self.qkv_slices or {}).items():
            bad = [s for s in slices if s not in QKV] or ([] if slices else ["(none)"])
            if bad or len(set(slices)) != len(slices):
                raise ValueError(f"qkv_slices[{suffix!r}] = {slices!r}: give distinct slices among q, k, v")
        if self.qkv_slices and self.mode == "adapter":
            raise ValueError("qkv_slices apply to the lora mode; adapter mode wraps whole output layers")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty; give suffixes, a regex, 'all-linear' or None")
        spec = self.target_modules
        if not (
            spec is None or isinstance(spec, str) or (isinstance(spec, list) and all(isinstance(t, str) for t in spec))
        ):
            raise ValueError(
                f"target_modules must be a list of suffixes, a regex string, 'all-linear' or None; got {spec!r}"
            )
        for suffix, setting in (self.hyper_pattern or {}).items():
            if not (isinstance(suffix, str) and suffix and isinstance(setting, dict)):
                raise ValueError(
                    f"hyper_pattern[{suffix!r}] = {setting!r}: map module suffixes to hyper-parameter dicts"
                )
        if not (is_real(self.alpha) and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurmConfig:
        return from_dict(cls, data, "SurmConfig fields")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SurmConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> SurmConfig:
        return cls.from_json(Path(path).read_text())
