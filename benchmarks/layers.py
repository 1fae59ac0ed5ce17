"""One adapted linear layer: forward+backward and no-grad forward time, peak memory, per method.

A *group* is one layer shape, token count and dtype. Every method of a group is timed in the same
interleaved rounds; ratios are taken against the group's PEFT LoRA (rank 8) and the frozen layer.
SURM families get LoRA's parameter budget (the budget solver picks the largest setting that does
not exceed it) and run both products: ``fft`` (activation space) and ``dense`` (weight space).
PEFT C3A runs at the block size of our circulant row, PEFT LoKr at its own default factor shapes,
which our ``kronecker@lokr`` row copies, PEFT FourierFT at the ``n`` of our sparse_spectrum row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from peft import C3AConfig, FourierFTConfig, LoKrConfig, LoraConfig, PeftConfig, inject_adapter_in_model
from peft.tuners.lokr.layer import factorization
from torch import nn

from surmlab import FAMILIES, SurmLinear
from surmlab.budget import BudgetError, Target, solve
from surmlab.timing import no_grad_call, paired_ratio, peak_memory, ratio, time_interleaved
from surmlab.tuner import qkv_rows

from .common import DTYPES

LORA_RANK = 8
SURM_FAMILIES = [name for name in FAMILIES if name != "lowrank"]
# PEFT's structured baselines, built by the lab's own builders (surmlab.methods.peft_structured)
STRUCTURED_PEFT = ("shira", "miss", "gralora", "vera", "oft", "boft", "hra")
PAIRS = {"circulant/fft": "c3a", "kronecker@lokr/fft": "lokr", "sparse_spectrum/fft": "fourierft"}


@dataclass(frozen=True)
class Group:
    """One layer shape, token count and dtype. ``slices="qv"``: a fused ``3d x d`` qkv layer whose q and v
    thirds SURM adapts (as the presets do; PEFT, which cannot slice, adapts the whole layer)."""

    out_features: int
    in_features: int
    tokens: int
    dtype: str = "float32"
    slices: str = ""

    @property
    def name(self) -> str:
        shape = f"{self.out_features}x{self.in_features}" + (f"[{self.slices}]" if self.slices else "")
        return f"{shape}/t{self.tokens}/{self.dtype}"

    @property
    def targets(self) -> list[tuple[str, int, int]]:
        """``(name, start, stop)`` row slices SURM adapts."""
        if not self.slices:
            return [("full", 0, self.out_features)]
        d = self.in_features
        if self.out_features != 3 * d:
            raise ValueError(f"slices need a fused qkv layer (out = 3 x in), got {self.out_features}x{d}")
        return qkv_rows(d, self.slices)

    @property
    def budget(self) -> int:
        return LORA_RANK * (self.in_features + self.out_features)


@dataclass
class Built:
    """A module holding one adapted layer, with what the results table reports about it."""

    method: str
    impl: str
    module: nn.Module
    family: str | None = None
    path: str | None = None
    hyper: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    @property
    def shapes(self) -> dict[str, list[int]]:
        return {n: list(p.shape) for n, p in self.module.named_parameters() if p.requires_grad}


class Holder(nn.Module):
    """A one-layer model, so PEFT can inject into ``layer`` as it would into a transformer."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def frozen_linear(group: Group, device: torch.device) -> nn.Linear:
    layer = nn.Linear(group.in_features, group.out_features, device=device, dtype=DTYPES[group.dtype])
    layer.requires_grad_(False)
    return layer


def lokr_factors(in_features: int, out_features: int) -> tuple[int, int]:
    """PEFT LoKr's default ``w1`` shape for a linear layer (``decompose_factor=-1``)."""
    return factorization(out_features)[0], factorization(in_features)[0]


def solved_hyper(family: str, group: Group) -> dict[str, Any]:
    targets = [Target(name, stop - start, group.in_features) for name, start, stop in group.targets]
    try:
        return solve(family, targets, group.budget).hyper
    except BudgetError:  # a tiny layer whose largest setting stays below LoRA's count: take that largest
        return solve(family, targets, group.budget, nearest=True).hyper


def build_surm(
    group: Group, family: str, hyper: dict[str, Any], path: str, device: torch.device, name: str | None = None
) -> Built:
    slices = group.targets if group.slices else None
    layer = SurmLinear(frozen_linear(group, device), family, hyper, slices=slices, product=path)
    return Built(f"{name or family}/{path}", "surmlab", Holder(layer), family, path, dict(hyper))


def peft_config(
    method: str, targets: list[str], *, block_size: int | None = None, lokr_rank: int = 4096, n_frequency: int = 1000
) -> PeftConfig:
    """PEFT's config of a baseline: LoRA at rank ``LORA_RANK`` (alpha = r), C3A at ``block_size``, LoKr with
    ``decompose_both=False`` (w1 whole) and ``lokr_rank`` at least half of w2's sides (w2 whole too), so
    its factors are the plain (m1, n1) and (m2, n2) matrices our Kronecker family uses."""
    if method == "lora":
        return LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=targets)
    if method == "c3a":
        return C3AConfig(block_size=block_size, target_modules=targets)
    if method == "lokr":
        return LoKrConfig(r=lokr_rank, alpha=lokr_rank, target_modules=targets, decompose_both=False)
    if method == "fourierft":  # zero start, as ours
        return FourierFTConfig(n_frequency=n_frequency, target_modules=targets, init_weights=True)
    raise ValueError(f"unknown PEFT method {method!r}")


def build_peft(group: Group, method: str, device: torch.device, **hyper: Any) -> Built:
    holder = Holder(frozen_linear(group, device))
    config = peft_config(
        method,
        ["layer"],
        block_size=hyper.get("block_size"),
        lokr_rank=max(group.in_features, group.out_features),
        n_frequency=hyper.get("coefficients", 1000),
    )
    if method == "lora":
        hyper = {"rank": LORA_RANK}
    elif method == "lokr":
        hyper = {"factors": list(lokr_factors(group.in_features, group.out_features))}
    inject_adapter_in_model(config, holder)
    for p in holder.layer.parameters():  # adapters in fp32, as ours, whatever the base dtype
        if p.requires_grad:
            p.data = p.data.float()
    return Built(method, "peft", holder, path="dense" if method in ("lokr", "fourierft") else None, hyper=hyper)


def build_group(group: Group, device: torch.device, families: list[str] | None = None) -> list[Built]:
    """Every method of a group: frozen layer, PEFT LoRA/C3A/LoKr, and each SURM family on both paths."""
    families = [*SURM_FAMILIES, "lowrank"] if families is None else families
    built = [Built("base", "torch", Holder(frozen_linear(group, device))), build_peft(group, "lora", device)]
    for family in families:
        hyper = solved_hyper(family, group)
        built += [build_surm(group, family, hyper, path, device) for path in ("fft", "dense")]
        if family == "circulant" and not group.slices:
            built.append(build_peft(group, "c3a", device, block_size=hyper["block_size"]))
        if family == "sparse_spectrum" and not group.slices:  # PEFT's FourierFT at the same n (dense ifft2)
            built.append(build_peft(group, "fourierft", device, coefficients=hyper["coefficients"]))
    if "kronecker" in families and not group.slices:
        factors = list(lokr_factors(group.in_features, group.out_features))
        built.append(build_surm(group, "kronecker", {"factors": factors}, "fft", device, "kronecker@lokr"))
        built.append(build_peft(group, "lokr", device))
    return built


def _inputs(group: Group, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    seq = min(group.tokens, 512)
    shape = (group.tokens // seq, seq)
    x = torch.randn(*shape, group.in_features, device=device, dtype=DTYPES[group.dtype], requires_grad=True)
    gy = torch.randn(*shape, group.out_features, device=device, dtype=DTYPES[group.dtype])
    return x, gy


def _clear_grads(module: nn.Module, x: torch.Tensor):
    params = [p for p in module.parameters() if p.requires_grad]

    def clear() -> None:
        for p in params:
            p.grad = None
        x.grad = None

    return clear


def _train_fn(module: nn.Module, x: torch.Tensor, gy: torch.Tensor, clear: bool = True):
    """Forward and backward (dropping the previous gradients first unless ``clear=False``)."""
    reset = _clear_grads(module, x)

    def step() -> None:
        if clear:
            reset()
        module(x).backward(gy)

    return step


def _auto_paths(built: Built, x: torch.Tensor) -> dict[str, str] | None:
    layer = built.module.layer
    if not isinstance(layer, SurmLinear):
        return None
    path, layer.product = layer.product, "auto"
    try:
        train = layer.use_dense(x)
        with torch.no_grad():
            infer = layer.use_dense(x)
    finally:
        layer.product = path
    return {"train": "dense" if train else "fft", "infer": "dense" if infer else "fft"}


def run_group(
    group: Group, device: torch.device, reps: int, warmup: int = 1, families: list[str] | None = None
) -> list[dict[str, Any]]:
    """Time and measure every method of ``group``; one result row per method."""
    torch.manual_seed(0)
    built = build_group(group, device, families)
    x, gy = _inputs(group, device)
    train = time_interleaved({b.method: _train_fn(b.module, x, gy) for b in built}, device, reps, warmup)
    infer = time_interleaved({b.method: no_grad_call(b.module, x) for b in built}, device, reps, warmup)
    memory = {
        b.method: peak_memory(_train_fn(b.module, x, gy, clear=False), device, setup=_clear_grads(b.module, x))
        for b in built
    }
    rows = []
    for b in built:
        rows.append(
            {
                "group": group.name,
                "out_features": group.out_features,
                "in_features": group.in_features,
                "tokens": group.tokens,
                "dtype": group.dtype,
                "method": b.method,
                "impl": b.impl,
                "family": b.family,
                "path": b.path,
                "hyper": b.hyper,
                "params": b.params,
                "train": train[b.method],
                "infer": infer[b.method],
                "train_peak_bytes": memory[b.method],
                "auto_path": _auto_paths(b, x),  # what path="auto" picks (train, infer)
                "pair": PAIRS.get(b.method) if PAIRS.get(b.method) in train else None,
            }
        )
    add_ratios(rows, {"lora": "lora", "base": "base"})
    return rows


def add_ratios(rows: list[dict[str, Any]], baselines: dict[str, str]) -> None:
    """``ratios[<metric>_vs_<key>]`` against the rows named in ``baselines`` and each row's ``pair``."""
    by_method = {row["method"]: row for row in rows}
    for row in rows:
        refs = {key: by_method.get(method) for key, method in baselines.items()}
        if row.get("pair"):
            refs["pair"] = by_method.get(row["pair"])
        ratios = {}
        for key, ref in refs.items():
            if ref is None:
                continue
            for metric in ("train", "infer", "step", "merged_infer"):
                if metric in row and metric in ref:
                    ratios[f"{metric}_vs_{key}"] = paired_ratio(row[metric], ref[metric])
            for metric in ("train_peak_bytes", "step_peak_bytes"):
                if metric in row and metric in ref:
                    ratios[f"{metric.removesuffix('_bytes')}_vs_{key}"] = ratio(row[metric], ref[metric])
        row["ratios"] = ratios
