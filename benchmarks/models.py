"""Whole models built from configs (random weights): a full training step and merged inference.

Every method adapts the same layers a user gets by default (the model family's preset: the q and v
parts of attention) at PEFT LoRA's trainable-parameter budget (rank 8; the classifier head is
trainable in every method and not counted). A training step is zero_grad, forward, cross-entropy,
backward and one AdamW step. The methods of one model are timed in interleaved rounds; ratios are
against PEFT LoRA of the same round. Merged inference pairs the plain model with each SURM family
injected, trained-looking (random update weights) and merged into the base weights (``merge``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from peft import inject_adapter_in_model
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from surmlab import SurmConfig, SurmLinear, inject, merge, plan_for
from surmlab.timing import no_grad_call, peak_memory, randomize_updates, time_interleaved

from .common import DTYPES
from .layers import LORA_RANK, STRUCTURED_PEFT, add_ratios, peft_config

# Targets of PEFT's baselines: the same layers as surmlab's presets (a fused timm qkv is adapted
# whole by PEFT, which cannot slice it; surmlab adapts its q and v thirds).
PEFT_TARGETS = {"vit": ["qkv"], "bert": ["query", "value"]}
HEADS = {"vit": "head", "bert": "classifier"}


@dataclass(frozen=True)
class ModelSpec:
    """A ViT-S/16-shaped (timm) or BERT-base-shaped (transformers) classifier and its batch."""

    kind: str  # "vit" | "bert"
    batch: int
    seq: int = 128  # BERT tokens per sequence
    image: int = 224  # ViT image side
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the architecture (depth, widths)

    @property
    def name(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        size = f"img{self.image}" if self.kind == "vit" else f"seq{self.seq}"
        return f"{self.kind}/b{self.batch}/{size}" + (f"/{extra}" if extra else "")

    @property
    def tokens(self) -> int:
        if self.kind == "vit":
            patch = self.config.get("patch_size", 16)
            return self.batch * ((self.image // patch) ** 2 + 1)
        return self.batch * self.seq


def build_model(spec: ModelSpec, device: torch.device) -> nn.Module:
    """Random-weight model from its config: timm ``vit_small_patch16_224`` or ``BertConfig()`` (base)."""
    if spec.kind == "vit":
        model = timm.create_model(
            "vit_small_patch16_224", pretrained=False, num_classes=10, img_size=spec.image, **spec.config
        )
    elif spec.kind == "bert":
        config = BertConfig(num_labels=2, **spec.config)
        model = BertForSequenceClassification(config)
    else:
        raise ValueError(f"unknown model kind {spec.kind!r}")
    return model.to(device).train()


def make_batch(spec: ModelSpec, model: nn.Module, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if spec.kind == "vit":
        inputs = {"x": torch.randn(spec.batch, 3, spec.image, spec.image, generator=g)}
        labels = torch.randint(0, 10, (spec.batch,), generator=g)
    else:
        vocab = model.config.vocab_size
        inputs = {"input_ids": torch.randint(0, vocab, (spec.batch, spec.seq), generator=g)}
        labels = torch.randint(0, 2, (spec.batch,), generator=g)
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def logits(spec: ModelSpec, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(inputs["x"]) if spec.kind == "vit" else model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def adapter_parameters(model: nn.Module, spec: ModelSpec) -> int:
    """Trainable parameters outside the classifier head."""
    head = HEADS[spec.kind]
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(head + "."))


def _freeze_all_but_head(model: nn.Module, spec: ModelSpec) -> None:
    for name, p in model.named_parameters():
        if name.startswith(HEADS[spec.kind] + "."):
            p.requires_grad_(True)


def copy_model(base: nn.Module, spec: ModelSpec, share_frozen: bool) -> nn.Module:
    """A deep copy; with ``share_frozen`` the backbone parameters stay shared (only the head is new), so
    many adapted copies fit in memory. Never merge into a copy that shares."""
    head = HEADS[spec.kind] + "."
    memo = {id(p): p for n, p in base.named_parameters() if share_frozen and not n.startswith(head)}
    return copy.deepcopy(base, memo)


def prepare(
    base: nn.Module, spec: ModelSpec, method: str, budget: int | None, share_frozen: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``base`` adapted by ``method``: ``lora`` / ``c3a`` / ``lokr`` (PEFT), one of PEFT's structured
    baselines (``STRUCTURED_PEFT``, ``fourierft``; at the budget, by the lab's builders) or a surmlab family,
    optionally with a forced product (``circulant:fft``, ``circulant:dense``; default ``auto``)."""
    model = copy_model(base, spec, share_frozen)
    targets = PEFT_TARGETS[spec.kind]
    info: dict[str, Any] = {"impl": "peft"}
    if method in ("lora", "c3a", "lokr"):
        block = _surm_hyper(base, spec, "circulant", budget)["block_size"] if method == "c3a" else None
        info["hyper"] = {
            "lora": {"rank": LORA_RANK},
            "c3a": {"block_size": block},
            "lokr": {"factors": "PEFT default (decompose_factor=-1)"},
        }[method]
        model.requires_grad_(False)
        inject_adapter_in_model(peft_config(method, targets, block_size=block), model)
        _freeze_all_but_head(model, spec)
    elif method in (*STRUCTURED_PEFT, "fourierft"):  # the lab's builder: its knob solved for the budget
        from surmlab.budget import BudgetError
        from surmlab.methods import peft_structured
        from surmlab.methods.registry import Request

        model.requires_grad_(False)
        build = getattr(peft_structured, f"build_{method}")
        try:
            built = build(model, Request(head=[], budget=budget, targets=targets))
        except BudgetError:  # the knob cannot reach LoRA's count here: its nearest setting
            built = build(model, Request(head=[], budget=budget, targets=targets, nearest=True))
        model = built.model.get_base_model()  # the model with PEFT's layers in it, called as the others
        info["hyper"] = built.hyper
        _freeze_all_but_head(model, spec)
    else:
        family, _, path = method.partition(":")
        model.requires_grad_(False)
        inject(model, SurmConfig(family=family, budget=budget, product=path or "auto"))
        info = {"impl": "surmlab", "hyper": dict(model.surm_config.hyper)}
    info["params"] = adapter_parameters(model, spec)
    return model, info


def _surm_hyper(base: nn.Module, spec: ModelSpec, family: str, budget: int | None) -> dict[str, Any]:
    return dict(plan_for(base, SurmConfig(family=family, budget=budget)).hyper)


def lora_budget(base: nn.Module, spec: ModelSpec) -> int:
    model, info = prepare(base, spec, "lora", None)
    del model
    return info["params"]


def step_fn(spec: ModelSpec, model: nn.Module, batch: tuple[dict, torch.Tensor], dtype: str) -> Callable[[], None]:
    inputs, labels = batch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    device_type = labels.device.type
    autocast = dtype != "float32"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=DTYPES[dtype], enabled=autocast):
            loss = F.cross_entropy(logits(spec, model, inputs).float(), labels)
        loss.backward()
        optimizer.step()

    return step


def _used_path(model: nn.Module, spec: ModelSpec) -> str | None:
    layers = [m for m in model.modules() if isinstance(m, SurmLinear)]
    if not layers:
        return None
    layer = layers[0]
    probe = torch.empty(spec.tokens, layer.in_features, device=layer.weight.device)
    return "dense" if layer.use_dense(probe) else "fft"


def run_steps(
    spec: ModelSpec,
    methods: list[str],
    device: torch.device,
    reps: int,
    warmup: int = 1,
    dtype: str = "float32",
) -> list[dict[str, Any]]:
    """Training-step time and peak memory of each method, ratios against PEFT LoRA."""
    torch.manual_seed(0)
    base = build_model(spec, device)
    budget = lora_budget(base, spec)
    batch = make_batch(spec, base, device)
    prepared = {m: prepare(base, spec, m, budget) for m in methods}
    steps = {m: step_fn(spec, model, batch, dtype) for m, (model, _) in prepared.items()}
    times = time_interleaved(steps, device, reps, warmup)
    rows = []
    for method, (model, info) in prepared.items():
        rows.append(
            {
                "model": spec.name,
                "kind": spec.kind,
                "tokens_per_step": spec.tokens,
                "dtype": dtype,
                "method": method,
                **info,
                "budget": budget,
                "path": _used_path(model, spec),
                "step": times[method],
                # steps ran already, so AdamW state exists: this is the steady-state peak of one step
                "step_peak_bytes": peak_memory(steps[method], device),
            }
        )
    add_ratios(rows, {"lora": "lora"})
    return rows


def run_merged(
    spec: ModelSpec, families: list[str], device: torch.device, reps: int, warmup: int = 1
) -> list[dict[str, Any]]:
    """No-grad forward time of the plain model and of each family merged into it, pair by pair."""
    torch.manual_seed(0)
    base = build_model(spec, device).eval()
    budget = lora_budget(base, spec)
    inputs, _ = make_batch(spec, base, device)

    rows = []
    for family in families:
        model, info = prepare(base, spec, family, budget, share_frozen=False)
        model.eval()
        randomize_updates(model)
        merge(model)
        fns = {"base": no_grad_call(logits, spec, base, inputs), family: no_grad_call(logits, spec, model, inputs)}
        times = time_interleaved(fns, device, reps, warmup)
        pair = [{"model": spec.name, "method": name, "family": family, "merged_infer": t} for name, t in times.items()]
        pair[1].update(info)
        add_ratios(pair, {"base": "base"})
        rows.append(pair[1] | {"base_merged_infer": pair[0]["merged_infer"]})
        del model
    return rows
