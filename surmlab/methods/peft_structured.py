"""The structured and multiplicative methods of the PEFT library as baselines: SHiRA, MiSS, GraLoRA,
FourierFT and VeRA (additive, ``W x + S x`` with PEFT's own ``S``), and OFT, BOFT and HRA, which are
multiplicative (``W R x`` with an orthogonal ``R``; BOFT also scales the outputs) and so do not fit the
lab's ``W x + alpha S x``: they run as PEFT's own modules.

Each adapts the whole layers SURM's preset targets (PEFT cannot adapt a slice of a fused qkv) and starts
exactly at the pretrained model. Its size knob is solved for a parameter budget by the lab's one rule
(``budget.closest``) over the method's exact count, written out below from PEFT's ``update_layer`` and
checked against PEFT's modules in the tests. A knob value PEFT would silently adjust is refused instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import budget
from ..budget import BudgetError, Target
from .peft_baselines import _targets, _wrap
from .registry import Built, Request, register_method

Count = Callable[[Target, int], int]  # parameters the method adds to one layer at one knob value


@dataclass(frozen=True)
class Knob:
    """A method's size knob: its name, the values it may take on these layers, and the per-layer count."""

    name: str
    values: Sequence[int]  # increasing; the total count increases with the value
    count: Count

    def total(self, shapes: list[Target], value: int) -> int:
        return sum(self.count(t, value) for t in shapes)


def _show(numbers: Sequence[int]) -> str:
    if len(numbers) <= 6:
        return ", ".join(f"{n:,}" for n in numbers)
    return ", ".join(f"{n:,}" for n in numbers[:3]) + f", ..., {numbers[-1]:,}"


def resolve_knob(knob: Knob, shapes: list[Target], request: Request, what: str) -> int:
    """The knob's value: the one given in ``request.hyper`` (checked against the feasible values), or
    the one whose exact count is closest to the budget without exceeding it (``nearest``: either side)."""
    values = knob.values
    if not values:
        raise BudgetError(f"{what} has no valid {knob.name} on these layers ({_layer_words(shapes)})")
    if knob.name in request.hyper:
        value = request.hyper[knob.name]
        if not isinstance(value, int) or isinstance(value, bool) or value not in values:
            raise ValueError(f"{what} {knob.name} must be one of {_show(values)} on these layers, got {value!r}")
        return value
    if len(values) > 64:  # an arithmetic range: the count is affine in the value, so look near the budget
        goal = budget.parse_budget(request.budget)
        first, step = knob.total(shapes, values[0]), knob.total(shapes, values[1]) - knob.total(shapes, values[0])
        near = min(max((goal - first) // step, 0), len(values) - 1)
        candidates = sorted({0, len(values) - 1, near, min(near + 1, len(values) - 1)})
        picks = [values[i] for i in candidates]
    else:
        picks = list(values)
    options = [(knob.total(shapes, v), {knob.name: v}) for v in picks]
    try:
        return budget.closest(options, request.budget, request.nearest, what)[1][knob.name]
    except BudgetError as error:
        shown = list(values) if len(values) <= 6 else [*values[:3], values[-1]]
        counts = _show([knob.total(shapes, v) for v in shown]) if len(values) <= 6 else None
        if counts is None:
            first = ", ".join(f"{knob.total(shapes, v):,}" for v in shown[:3])
            counts = f"{first}, ..., {knob.total(shapes, shown[-1]):,}"
        raise BudgetError(f"{error}; the feasible counts are {counts} ({knob.name} = {_show(values)})") from None


def _layer_words(shapes: list[Target]) -> str:
    return ", ".join(sorted({f"{t.out_features}x{t.in_features}" for t in shapes}))


def _common_divisors(numbers: list[int], least: int = 2) -> list[int]:
    g = math.gcd(*numbers)
    return [d for d in range(least, g + 1) if g % d == 0]


# -- exact counts (one layer), as PEFT 0.21's update_layer allocates them ------------------------------------


def shira_count(t: Target, r: int) -> int:
    return r * (t.in_features + t.out_features)  # r (d_in + d_out) entries at a fixed random mask


def miss_count(t: Target, r: int) -> int:
    return r * t.out_features  # one shared r x d_out block


def gralora_count(t: Target, r: int) -> int:
    return r * (t.in_features + t.out_features)  # k x k blocks of rank r / k


def fourierft_count(t: Target, n: int) -> int:
    return n  # n spectral coefficients


def vera_count(t: Target, r: int) -> int:
    return r + t.out_features  # the scaling vectors lambda_d (r) and lambda_b (d_out); A and B are frozen


def oft_count(t: Target, block: int) -> int:
    return (t.in_features // block) * (block * (block - 1) // 2)  # one skew-symmetric block each


def boft_count(t: Target, block: int) -> int:
    # one butterfly factor (PEFT uses one without its CUDA kernel): in/b blocks of b x b, and d_out scales
    return (t.in_features // block) * block * block + t.out_features


def hra_count(t: Target, r: int) -> int:
    return r * t.in_features  # r Householder vectors


# -- knobs ----------------------------------------------------------------------------------------------------


def shira_knob(shapes: list[Target]) -> Knob:
    top = min(t.in_features * t.out_features // (t.in_features + t.out_features) for t in shapes)
    return Knob("r", range(1, top + 1), shira_count)  # PEFT refuses more entries than the layer has


def miss_knob(shapes: list[Target]) -> Knob:
    return Knob("r", range(1, min(t.in_features for t in shapes) + 1), miss_count)


def gralora_knob(shapes: list[Target], k: int) -> Knob:
    top = min(min(t.in_features, t.out_features) for t in shapes)
    return Knob("r", range(k, top + 1, k), gralora_count)  # r a multiple of k (PEFT's rule)


def fourierft_knob(shapes: list[Target]) -> Knob:
    return Knob("n_frequency", range(1, min(t.in_features * t.out_features for t in shapes) + 1), fourierft_count)


def vera_knob(shapes: list[Target]) -> Knob:
    widest = max(max(t.in_features, t.out_features) for t in shapes)
    return Knob("r", range(1, 16 * widest + 1), vera_count)  # the shared A, B grow with r: capped at 16 d


def oft_knob(shapes: list[Target]) -> Knob:
    return Knob("oft_block_size", _common_divisors([t.in_features for t in shapes]), oft_count)


def boft_knob(shapes: list[Target]) -> Knob:
    return Knob("boft_block_size", _common_divisors([t.in_features for t in shapes]), boft_count)


def hra_knob(shapes: list[Target]) -> Knob:
    # r even: PEFT's identity start pairs equal vectors (an odd r starts elsewhere)
    return Knob("r", range(2, min(t.in_features for t in shapes) + 1, 2), hra_count)


def _extra(request: Request, knob: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The method's other hyper-parameters: the request's values over the defaults."""
    return {k: request.hyper.get(k, v) for k, v in defaults.items() if k != knob}


# -- the methods ----------------------------------------------------------------------------------------------


@register_method(
    "shira",
    kind="peft",
    lr=3e-3,
    description="SHiRA (r (d_in + d_out) trainable entries at a fixed random mask) through the PEFT library",
    budgeted=True,
    hyper_keys=("r", "random_seed"),
)
def build_shira(model: nn.Module, request: Request) -> Built:
    from peft import ShiraConfig

    names, shapes = _targets(model, request)
    r = resolve_knob(shira_knob(shapes), shapes, request, "shira")
    seed = int(request.hyper.get("random_seed", 0))  # the mask is drawn from it (and saved by PEFT)
    return _wrap(model, ShiraConfig(r=r, random_seed=seed, target_modules=names), {"r": r, "random_seed": seed})


@register_method(
    "miss",
    kind="peft",
    lr=3e-3,
    description="MiSS (one shared r x d_out block applied to x summed in r-chunks) through the PEFT library",
    budgeted=True,
    hyper_keys=("r",),
)
def build_miss(model: nn.Module, request: Request) -> Built:
    from peft import MissConfig

    names, shapes = _targets(model, request)
    r = resolve_knob(miss_knob(shapes), shapes, request, "miss")
    return _wrap(model, MissConfig(r=r, target_modules=names), {"r": r})


@register_method(
    "gralora",
    kind="peft",
    lr=3e-3,
    description="GraLoRA (a k x k grid of rank-r/k blocks) through the PEFT library",
    budgeted=True,
    hyper_keys=("r", "gralora_k"),
)
def build_gralora(model: nn.Module, request: Request) -> Built:
    from peft import GraloraConfig

    names, shapes = _targets(model, request)
    k = request.hyper.get("gralora_k", 2)
    feasible = _common_divisors([n for t in shapes for n in t.shape], least=1)
    if k not in feasible:
        layers = _layer_words(shapes)
        raise ValueError(f"gralora gralora_k must divide every layer ({layers}): one of {feasible}, got {k!r}")
    r = resolve_knob(gralora_knob(shapes, k), shapes, request, "gralora")
    # alpha = 2 r, as the lab's LoRA (PEFT scales by alpha / r)
    config = GraloraConfig(r=r, gralora_k=k, alpha=2 * r, target_modules=names)
    return _wrap(model, config, {"r": r, "gralora_k": k, "alpha": 2 * r})


@register_method(
    "fourierft",
    kind="peft",
    lr=5e-2,
    description="FourierFT (n coefficients at random 2-D frequencies, a dense ifft2 per forward) through PEFT",
    budgeted=True,
    hyper_keys=("n_frequency", "scaling", "random_loc_seed"),
)
def build_fourierft(model: nn.Module, request: Request) -> Built:
    from peft import FourierFTConfig

    names, shapes = _targets(model, request)
    n = resolve_knob(fourierft_knob(shapes), shapes, request, "fourierft")
    extra = _extra(request, "n_frequency", {"scaling": 150.0, "random_loc_seed": 777})
    # init_weights=True: the spectrum starts at zero (PEFT's default draws it from N(0, 1))
    config = FourierFTConfig(n_frequency=n, init_weights=True, target_modules=names, **extra)
    return _wrap(model, config, {"n_frequency": n, **extra})


@register_method(
    "vera",
    kind="peft",
    lr=1e-2,
    description="VeRA (trainable scales around frozen shared random A, B) through the PEFT library",
    budgeted=True,
    hyper_keys=("r", "projection_prng_key"),
)
def build_vera(model: nn.Module, request: Request) -> Built:
    from peft import VeraConfig

    names, shapes = _targets(model, request)
    r = resolve_knob(vera_knob(shapes), shapes, request, "vera")
    key = int(request.hyper.get("projection_prng_key", 0))
    config = VeraConfig(r=r, projection_prng_key=key, save_projection=True, target_modules=names)
    return _wrap(model, config, {"r": r, "projection_prng_key": key})


@register_method(
    "oft",
    kind="peft",
    lr=3e-3,
    description="OFT (multiplicative W R x, block-orthogonal R; not W x + alpha S x) through the PEFT library",
    budgeted=True,
    hyper_keys=("oft_block_size",),
)
def build_oft(model: nn.Module, request: Request) -> Built:
    from peft import OFTConfig

    names, shapes = _targets(model, request)
    block = resolve_knob(oft_knob(shapes), shapes, request, "oft")
    return _wrap(model, OFTConfig(r=0, oft_block_size=block, target_modules=names), {"oft_block_size": block})


def _no_boft_kernel() -> None:
    """PEFT's BOFT compiles a CUDA kernel on first use and falls back to one butterfly factor without it;
    the lab runs that fallback everywhere (so the count is one rule), without trying to compile."""
    from peft.tuners.boft import layer

    if layer._FBD_CUDA is None:
        layer._FBD_CUDA = False


@register_method(
    "boft",
    kind="peft",
    lr=3e-3,
    description="BOFT (multiplicative: block-orthogonal R on x, output scales; not W x + alpha S x) through PEFT",
    budgeted=True,
    hyper_keys=("boft_block_size",),
)
def build_boft(model: nn.Module, request: Request) -> Built:
    from peft import BOFTConfig

    names, shapes = _targets(model, request)
    block = resolve_knob(boft_knob(shapes), shapes, request, "boft")
    _no_boft_kernel()
    config = BOFTConfig(boft_block_size=block, boft_block_num=0, boft_n_butterfly_factor=1, target_modules=names)
    return _wrap(model, config, {"boft_block_size": block})


@register_method(
    "hra",
    kind="peft",
    lr=3e-3,
    description="HRA (multiplicative: r Householder reflections on x; not W x + alpha S x) through the PEFT library",
    budgeted=True,
    hyper_keys=("r",),
)
def build_hra(model: nn.Module, request: Request) -> Built:
    from peft import HRAConfig

    names, shapes = _targets(model, request)
    r = resolve_knob(hra_knob(shapes), shapes, request, "hra")
    return _wrap(model, HRAConfig(r=r, target_modules=names), {"r": r})
