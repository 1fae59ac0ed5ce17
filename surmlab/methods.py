"""Every fine-tuning method the lab compares, prepared by one call so comparisons are fair.

``prepare(method, model, head=...)`` freezes the backbone, adds the method's trainable parts,
keeps the classifier head trainable, and reports the exact trainable count and the layers it
adapts. Methods with a size knob (rank, block size, bottleneck width, ...) are matched to a
parameter ``budget`` by the same solver; the head is outside the budget and counted separately.

Fairness rules every method follows: it starts exactly at the pretrained model (every update is
zero at initialisation); ``lora`` is LoRA inside the same ``SurmLinear`` wrapper as SURM (the
``lowrank`` family with LoRA's initialisation), so it adapts exactly the rows SURM adapts,
including the q and v thirds of a fused qkv projection. One scaling convention: an update enters
as ``W x + alpha * S x``; SURM's default ``alpha`` is 1, and LoRA's ``lora_alpha / r`` is that same
``alpha`` (``lora_alpha = 2 r`` by default, so ``alpha = 2``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import budget as budget_mod
from .budget import BudgetError, Target
from .config import SurmConfig
from .structures import FAMILIES
from .tuner import (
    _find_suffix,
    find_targets,
    inject,
    plan_for,
    resolve_config,
    surm_layers,
    trainable_parameters,
)


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


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    lr: float  # default learning rate for the method's parameters (the head has its own)
    budgeted: bool
    structure: str | None = None  # the SURM structure family of a surm-* method

    @property
    def takes_mode(self) -> bool:
        """Whether the method offers SURM's ``lora``/``adapter`` modes (every surm-* method does)."""
        return self.structure is not None


# Default learning rates. Measured on MiniLM / Rotten Tomatoes (2,000 training reviews, one epoch,
# 50k budget; README "Learning rates"): LoRA 1e-3 -> 66.2%, 3e-3 -> 73.0%, 1e-2 -> 75.0%;
# circulant 2e-3 -> 73.5%, 5e-3 -> 72.6%, 2e-2 -> 58.5%. Unlike PEFT's C3A (which scales its
# circulant by 1/in_features and so needs large steps), our structured updates are unscaled: one
# kernel entry moves a whole diagonal of S, so they want smaller steps than LoRA's factors.
METHODS: dict[str, Method] = {
    **{
        f"surm-{name}": Method(f"surm-{name}", f"SURM with {name} matrices (lora or adapter mode)", lr, True, name)
        for name, lr in {
            "circulant": 2e-3,
            "toeplitz": 2e-3,
            "symmetric_toeplitz": 2e-3,
            "ldr": 2e-3,
            "kronecker": 3e-3,
            "lowrank": 3e-3,
        }.items()
    },
    "lora": Method("lora", "LoRA (B A, scaled by lora_alpha / r) on the same rows as SURM", 3e-3, True),
    "peft-lora": Method("peft-lora", "LoRA through the PEFT library (whole layers: all of a fused qkv)", 3e-3, True),
    "c3a": Method("c3a", "C3A (block-circulant, delta scaled by 1/in_features) through the PEFT library", 5e-2, True),
    "lokr": Method("lokr", "LoKr (Kronecker) through the PEFT library", 3e-3, True),
    "adapter": Method("adapter", "Houlsby bottleneck adapter after attention and MLP outputs", 1e-3, True),
    "bitfit": Method("bitfit", "train only the biases", 1e-3, False),
    "layernorm": Method("layernorm", "train only the normalisation layers", 1e-3, False),
    "linear-probe": Method("linear-probe", "train only the classifier head", 1e-3, False),
    "full": Method("full", "full fine-tuning", 5e-5, False),
}
HEAD_LR = 1e-3  # classifier heads start from scratch; every method trains them at this rate


def method_info(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


# Hyper-parameters each non-SURM method takes (a SURM family checks its own in ``resolve_hyper``).
HYPER_KEYS: dict[str, tuple[str, ...]] = {
    "lora": ("rank", "lora_alpha"),
    "peft-lora": ("rank",),
    "c3a": ("block_size", "init_weights"),
    "lokr": ("rank", "decompose_factor"),
    "adapter": ("bottleneck",),
}


def _check_hyper(method: str, hyper: dict[str, Any]) -> None:
    if method.startswith("surm-") or not hyper:
        return
    keys = HYPER_KEYS.get(method, ())
    if not keys:
        raise ValueError(f"{method} has no hyper-parameters; got {sorted(hyper)}")
    unknown = sorted(set(hyper) - set(keys))
    needed = "rank" if "rank" in keys else keys[0]
    if unknown or needed not in hyper:
        raise ValueError(f"{method} takes hyper-parameters {', '.join(keys)} ({needed} required); got {sorted(hyper)}")


# -- helpers -----------------------------------------------------------------------------------------


def _unfreeze_head(model: nn.Module, head: list[str]) -> None:
    for suffix in head:
        for name in _find_suffix(model, suffix):
            model.get_submodule(name).requires_grad_(True)


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def preset_targets(model: nn.Module, mode: str, targets: list[str] | str | None) -> list[tuple[str, nn.Linear]]:
    """The layers SURM would adapt in ``mode``, without qkv slicing (PEFT cannot slice)."""
    config = resolve_config(model, SurmConfig(mode=mode, target_modules=targets, qkv_slices={}))
    return [(name, layer) for name, layer, _ in find_targets(model, config)]


def _solve_knob(
    name: str, options: list[tuple[int, dict[str, Any]]], budget: int | str | None, nearest: bool
) -> tuple[int, dict[str, Any]]:
    """Pick the knob setting whose count is closest to the budget (below it unless ``nearest``), as
    ``budget.solve`` does for the structure families."""
    options = sorted(options, key=lambda o: o[0])
    if budget is None:
        raise BudgetError(f"{name} needs a budget or explicit hyper-parameters")
    target = budget_mod.parse_budget(budget)
    low, high = options[0][0], options[-1][0]
    if not nearest and not low <= target <= high:
        raise BudgetError(
            f"a budget of {target:,} is infeasible for {name}: achievable counts range from {low:,} to {high:,}"
        )
    fits = options if nearest else [o for o in options if o[0] <= target]
    return min(fits, key=lambda o: abs(target - o[0]))


# -- SURM --------------------------------------------------------------------------------------------


def _surm_config(family, budget, hyper, mode, targets, nearest, alpha, product, head) -> SurmConfig:
    # The head is a module to save: it trains, it is saved inside the adapter file, and "all-linear"
    # leaves it out of the targets.
    return SurmConfig(
        family=family,
        mode=mode,
        target_modules=targets,
        hyper=dict(hyper or {}),
        budget=None if hyper else budget,
        nearest=nearest,
        alpha=alpha,
        product=product,
        modules_to_save=list(head),
    )


def _prepare_surm(model, family, budget, hyper, mode, targets, nearest, alpha, product, head):
    inject(model, _surm_config(family, budget, hyper, mode, targets, nearest, alpha, product, head))
    return dict(model.surm_plan.hyper), model.surm_plan.rows()


def _prepare_lora(model, budget, hyper, targets, nearest, product, head):
    """LoRA as the ``lowrank`` family in SURM's wrapper: the same rows as SURM, PEFT's init and scaling."""
    hyper = dict(hyper or {})
    if "rank" not in hyper:
        solved = plan_for(model, _surm_config("lowrank", budget, None, "lora", targets, nearest, 1.0, product, head))
        hyper["rank"] = solved.hyper["rank"]
    rank = int(hyper["rank"])
    lora_alpha = float(hyper.get("lora_alpha", 2 * rank))
    _prepare_surm(model, "lowrank", None, {"rank": rank}, "lora", targets, nearest, lora_alpha / rank, product, head)
    return {"rank": rank, "lora_alpha": lora_alpha}, model.surm_plan.rows()


# -- PEFT baselines ----------------------------------------------------------------------------------


def _peft_targets(model: nn.Module, targets: list[str] | str | None) -> tuple[list[str], list[tuple[str, nn.Linear]]]:
    layers = preset_targets(model, "lora", targets)
    return [name for name, _ in layers], layers


def _prepare_peft_lora(model, budget, hyper, targets, nearest):
    from peft import LoraConfig, get_peft_model

    names, layers = _peft_targets(model, targets)
    shapes = [Target(n, lay.out_features, lay.in_features) for n, lay in layers]
    rank = int(hyper["rank"]) if hyper else budget_mod.solve("lowrank", shapes, budget, nearest=nearest).hyper["rank"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=names, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    return peft_model, {"rank": rank, "lora_alpha": 2 * rank}


def _prepare_c3a(model, budget, hyper, targets, nearest):
    from peft import C3AConfig, get_peft_model

    names, layers = _peft_targets(model, targets)
    shapes = [Target(n, lay.out_features, lay.in_features) for n, lay in layers]
    if hyper:
        block = int(hyper["block_size"])
    else:
        block = budget_mod.solve("circulant", shapes, budget, nearest=nearest).hyper["block_size"]
    # PEFT starts C3A's kernels from xavier noise; init_weights=True keeps them at zero, so C3A starts
    # exactly at the pretrained model like every other method here (hyper init_weights overrides).
    init = (hyper or {}).get("init_weights", True)
    peft_model = get_peft_model(model, C3AConfig(block_size=block, target_modules=names, init_weights=init))
    return peft_model, {"block_size": block, "init_weights": init}


def lokr_count(in_features: int, out_features: int, rank: int, factor: int = -1) -> int:
    """Parameters PEFT's LoKr adds to one linear layer (mirrors its ``update_layer``)."""
    from peft.tuners.lokr.layer import factorization

    in_m, in_n = factorization(in_features, factor)
    out_l, out_k = factorization(out_features, factor)
    w1 = out_l * in_m
    w2 = out_k * in_n if rank >= max(out_k, in_n) / 2 else rank * (out_k + in_n)
    return w1 + w2


def _prepare_lokr(model, budget, hyper, targets, nearest):
    from peft import LoKrConfig, get_peft_model

    names, layers = _peft_targets(model, targets)
    if hyper:
        rank, factor = int(hyper["rank"]), int(hyper.get("decompose_factor", -1))
    else:
        max_rank = max(max(lay.in_features, lay.out_features) for _, lay in layers)
        options = [
            (sum(lokr_count(lay.in_features, lay.out_features, r, f) for _, lay in layers), {"rank": r, "factor": f})
            for f in (-1, 2, 4, 8, 16, 32, 64)
            for r in sorted({1, 2, 4, 8, 16, 32, 64, 128, max_rank})
        ]
        _, best = _solve_knob("lokr", options, budget, nearest)
        rank, factor = best["rank"], best["factor"]
    config = LoKrConfig(r=rank, alpha=rank, decompose_factor=factor, target_modules=names)
    peft_model = get_peft_model(model, config)
    return peft_model, {"rank": rank, "decompose_factor": factor}


# -- Houlsby adapter ------------------------------------------------------------------------------------


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


def _prepare_adapter(model, budget, hyper, targets, nearest):
    from .tuner import _set_module

    layers = preset_targets(model, "adapter", targets)
    if hyper:
        bottleneck = int(hyper["bottleneck"])
    else:
        widest = min(lay.out_features for _, lay in layers)
        options = [
            (sum(HoulsbyAdapter.count(lay.out_features, m) for _, lay in layers), {"bottleneck": m})
            for m in range(1, widest + 1)
        ]
        bottleneck = _solve_knob("adapter", options, budget, nearest)[1]["bottleneck"]
    for name, layer in layers:
        _set_module(model, name, HoulsbyAdapter(layer, bottleneck))
    return model, {"bottleneck": bottleneck}


# -- selective tuning ---------------------------------------------------------------------------------


def _unfreeze_where(model: nn.Module, keep: Callable[[str, nn.Module, str], bool]) -> None:
    for module_name, module in model.named_modules():
        for param_name, p in module.named_parameters(recurse=False):
            if keep(module_name, module, param_name):
                p.requires_grad_(True)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm2d) or "Norm" in type(module).__name__


# -- entry point ----------------------------------------------------------------------------------------


def prepare(
    method: str,
    model: nn.Module,
    *,
    head: list[str],
    budget: int | str | None = None,
    hyper: dict[str, Any] | None = None,
    mode: str = "lora",
    targets: list[str] | str | None = None,
    nearest: bool = False,
    alpha: float = 1.0,
    product: str = "auto",
    lr: float | None = None,
) -> Prepared:
    """Freeze ``model``, add ``method``'s trainable parts (matched to ``budget`` where it has a size
    knob), keep the ``head`` suffixes trainable. Returns the model to train (PEFT methods wrap it)."""
    info = method_info(method)
    if not head or not any(_find_suffix(model, h) for h in head):
        raise ValueError(f"head {head!r} matches no module of {type(model).__name__}")
    if info.budgeted and budget is None and not hyper and not method.startswith("surm-"):
        raise BudgetError(f"{method} needs --budget (e.g. 50k) or explicit hyper-parameters")
    if not info.budgeted and budget is not None:
        raise BudgetError(f"{method} has no size knob; drop the budget")
    if mode != "lora" and not method.startswith("surm-"):
        raise ValueError(f"mode {mode!r} applies to surm-* methods only")
    if hyper and budget is not None:
        raise BudgetError(f"give either hyper-parameters {hyper} or a budget ({budget}) for {method}, not both")
    _check_hyper(method, hyper or {})
    _freeze(model)
    rows: list[dict[str, Any]] = []
    knob: dict[str, Any] = {}
    if method.startswith("surm-"):
        family = method.removeprefix("surm-")
        if family not in FAMILIES:
            raise ValueError(f"unknown method {method!r}")
        knob, rows = _prepare_surm(model, family, budget, hyper, mode, targets, nearest, alpha, product, head)
        knob = {**knob, "mode": mode}
    elif method == "lora":
        knob, rows = _prepare_lora(model, budget, hyper, targets, nearest, product, head)
    elif method in ("peft-lora", "c3a", "lokr", "adapter"):
        builder = {
            "peft-lora": _prepare_peft_lora,
            "c3a": _prepare_c3a,
            "lokr": _prepare_lokr,
            "adapter": _prepare_adapter,
        }
        model, knob = builder[method](model, budget, hyper, targets, nearest)
    elif method == "bitfit":
        _unfreeze_where(model, lambda _m, _mod, p: p == "bias")
    elif method == "layernorm":
        _unfreeze_where(model, lambda _m, mod, _p: _is_norm(mod))
    elif method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    _unfreeze_head(model, head)
    trainable, total = trainable_parameters(model)
    head_names = head_parameter_names(model, head)
    head_params = sum(p.numel() for n, p in model.named_parameters() if n in head_names)
    return Prepared(
        model=model,
        method=method,
        hyper=knob,
        method_params=trainable - head_params,
        head_params=head_params,
        trainable=trainable,
        total=total,
        lr=lr if lr is not None else info.lr,
        head=list(head),
        layers=rows,
        targets=describe_targets(method, model, head),
    )


def head_parameter_names(model: nn.Module, head: list[str]) -> set[str]:
    """Names of trainable parameters that belong to the classifier head (for its own learning rate)."""
    return {n for n, p in model.named_parameters() if p.requires_grad and any(f".{h}." in f".{n}" for h in head)}


# -- what a method adapts -------------------------------------------------------------------------------


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


def describe_targets(method: str, model: nn.Module, head: list[str]) -> str:
    """The rows ``method`` adapts on ``model``, as a short human-readable string (excluding the head)."""
    wrapped = surm_layers(model)
    if wrapped:
        names = [
            name if slice_name in ("full", "adapter") else f"{name}[{slice_name}]"
            for name, layer in wrapped.items()
            for slice_name, _, _ in layer.slices
        ]
        where = "after " if next(iter(wrapped.values())).mode == "adapter" else ""
        return where + summarize_layers(names)
    if method == "adapter":
        return "after " + summarize_layers([n for n, m in model.named_modules() if isinstance(m, HoulsbyAdapter)])
    if method in ("peft-lora", "c3a", "lokr"):
        from peft.tuners.tuners_utils import BaseTunerLayer

        names = [n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
        return summarize_layers(names)
    return {"bitfit": "all biases", "layernorm": "all normalisation layers", "full": "every parameter"}.get(
        method, "nothing (head only)"
    )
