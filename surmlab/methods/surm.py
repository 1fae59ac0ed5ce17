"""SURM methods, one per structure family, and LoRA inside the same wrapper.

``surm-<family>`` exists for every family in ``surmlab.structures.FAMILIES`` and trains at the
family's ``default_lr``. ``lora`` is the ``lowrank`` family with LoRA's initialisation and scaling, so
it adapts exactly the rows SURM adapts (on a fused qkv: the same q and v thirds). One scaling
convention: an update enters as ``W x + alpha * S x``; LoRA's ``lora_alpha / r`` is that ``alpha``
(``lora_alpha = 2 r`` by default, so ``alpha = 2``).
"""

from __future__ import annotations

from torch import nn

from ..config import SurmConfig
from ..structures import FAMILIES
from ..tuner import inject, plan_for
from .registry import Built, Request, register_method
from .targets import describe_surm_layers


def surm_config(family: str, request: Request, hyper: dict | None = None, alpha: float | None = None) -> SurmConfig:
    """The request as a ``SurmConfig``; the head is a module to save (it trains, it is saved in the
    adapter file, and ``all-linear`` leaves it out of the targets)."""
    hyper = dict(request.hyper if hyper is None else hyper)
    return SurmConfig(
        family=family,
        mode=request.mode,
        target_modules=request.targets,
        hyper=hyper,
        budget=None if hyper else request.budget,
        nearest=request.nearest,
        alpha=request.alpha if alpha is None else alpha,
        product=request.product,
        dropout=request.dropout,
        init=request.init,
        modules_to_save=list(request.head),
        hyper_pattern=request.hyper_pattern,
    )


def _build_surm(family: str, model: nn.Module, request: Request) -> Built:
    inject(model, surm_config(family, request))
    plan = model.surm_plan
    return Built(model, {**plan.hyper, "mode": request.mode}, describe_surm_layers(model), plan.rows())


def _register_family(family: str) -> None:
    cls = FAMILIES[family]
    register_method(
        f"surm-{family}",
        kind="surm",
        lr=cls.default_lr,
        description=f"SURM with {family} matrices (lora or adapter mode)",
        budgeted=True,
        structure=family,
    )(lambda model, request: _build_surm(family, model, request))


for _family in FAMILIES:
    _register_family(_family)


@register_method(
    "lora",
    kind="lora",
    lr=3e-3,
    description="LoRA (B A, scaled by lora_alpha / r) on the same rows as SURM",
    budgeted=True,
    hyper_keys=("rank", "lora_alpha"),
)
def build_lora(model: nn.Module, request: Request) -> Built:
    """LoRA as the ``lowrank`` family in SURM's wrapper: the same rows as SURM, PEFT's init and scaling."""
    hyper = dict(request.hyper)
    if "rank" not in hyper:
        hyper["rank"] = plan_for(model, surm_config("lowrank", request, hyper={}, alpha=1.0)).hyper["rank"]
    rank = int(hyper["rank"])
    lora_alpha = float(hyper.get("lora_alpha", 2 * rank))
    inject(model, surm_config("lowrank", request, hyper={"rank": rank}, alpha=lora_alpha / rank))
    return Built(model, {"rank": rank, "lora_alpha": lora_alpha}, describe_surm_layers(model), model.surm_plan.rows())
