"""Inject structured updates into any PyTorch model; merge, unload, save and load them.

``inject(model, config)`` finds the target ``nn.Linear`` (or Hugging Face ``Conv1D``) layers, solves
the budget if one is given, wraps each target in a ``SurmLinear`` and freezes everything except the
updates and ``modules_to_save``. The wrapped model is still the user's model object.

Named adapters (PEFT's ``adapter_name``): ``inject(model, config, name=...)`` adds an adapter beside the
existing ones (inactive, as PEFT's ``add_adapter``); ``set_adapter`` picks the active ones (trainable, added
up by the forward), ``delete_adapter`` removes one, ``merge(model, names=...)`` folds some in. The
``modules_to_save`` (the head) are shared by all adapters. ``model.surm_config`` / ``surm_plan`` describe
the first active adapter; ``model.surm_adapters`` holds every adapter's record.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import budget as budget_mod
from .budget import BudgetPlan, Target
from .config import QKV, SurmConfig
from .fileio import atomic_write
from .layer import (
    DEFAULT_ADAPTER,
    IN_PROJ,
    PACKED_WEIGHTS,
    InProjReader,
    SurmLinear,
    attach_in_proj,
    features,
    in_proj_view,
    is_adaptable,
    is_linear,
    release_in_proj,
)
from .structures import family as structure_family

# surmlab's own names: PEFT and transformers take a folder with ``adapter_config.json`` for a PEFT adapter.
CONFIG_FILE = "surm_config.json"
WEIGHTS_FILE = "surm_model.safetensors"
# What surmlab wrote before it had its own names; such folders still load.
LEGACY_CONFIG_FILE = "adapter_config.json"
LEGACY_WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "surmlab-adapter"


# -- presets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Default targets for a model family, recognised by its transformers ``config.model_type`` or, failing
    that, by a module-name suffix it always has (``marker``; empty: by model type only)."""

    name: str
    marker: str
    lora_targets: tuple[str, ...]
    adapter_targets: tuple[str, ...]
    head: tuple[str, ...]
    qkv_slices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    model_types: tuple[str, ...] = ()


# Decoder families: q and v as PEFT's LoRA defaults do; the adapter after attention and MLP outputs; the
# head of a *ForSequenceClassification is ``score`` (a causal LM's ``lm_head`` is tied or the output layer).
DECODER_TARGETS = (("q_proj", "v_proj"), ("o_proj", "down_proj"), ("score",))


PRESETS = (
    # timm ViT / DeiT / CLIP vision towers: fused qkv, adapt the q and v thirds as LoRA does.
    Preset("timm-vit", "attn.qkv", ("attn.qkv",), ("attn.proj", "mlp.fc2"), ("head",), (("attn.qkv", ("q", "v")),)),
    # Hugging Face ViT: separate query/key/value inside attention.attention.
    Preset(
        "hf-vit",
        "attention.attention.query",
        ("attention.query", "attention.value"),
        ("attention.output.dense", "output.dense"),
        ("classifier",),
    ),
    # BERT, RoBERTa, MiniLM and relatives.
    Preset(
        "bert",
        "attention.self.query",
        ("attention.self.query", "attention.self.value"),
        ("attention.output.dense", "output.dense"),
        ("classifier",),
    ),
    Preset(
        "llama",
        "",
        *DECODER_TARGETS,
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"),
    ),
    # GPT-2: Conv1D layers; the fused ``c_attn`` (q, k, v thirds in that order) adapted on its q and v thirds.
    Preset(
        "gpt2",
        "",
        ("attn.c_attn",),
        ("attn.c_proj", "mlp.c_proj"),
        ("score",),
        (("attn.c_attn", ("q", "v")),),
        model_types=("gpt2",),
    ),
    # Phi-1/1.5/2: separate q/k/v, ``dense`` after attention, ``fc2`` after the MLP.
    Preset("phi", "", ("q_proj", "v_proj"), ("self_attn.dense", "mlp.fc2"), ("score",), model_types=("phi",)),
    # Phi-3: a fused ``qkv_proj`` (grouped K/V heads make its thirds unequal), adapted whole as PEFT does.
    Preset("phi3", "", ("qkv_proj",), ("o_proj", "down_proj"), ("score",), model_types=("phi3",)),
    # CLIP text/vision (Hugging Face), and other q_proj/v_proj models.
    Preset(
        "clip",
        "self_attn.q_proj",
        ("q_proj", "v_proj"),
        ("out_proj", "fc2"),
        ("classifier", "head"),
        model_types=("clip", "clip_text_model", "clip_vision_model"),
    ),
    # timm's MobileNetV2 / EfficientNet / MobileNetV3 blocks (the ``mobilenetv2`` backbone, ``timm:`` relatives):
    # the pointwise 1x1 convs, expansion ``conv_pw`` and projection ``conv_pwl``, which hold most of the weights
    # (the depthwise ``conv_dw`` kernels are out x 9, too thin for a structured update). A Conv2d takes
    # LoRA-mode updates only: adapter mode on them is refused by ``SurmLinear`` with that reason.
    Preset("timm-mobilenet", "conv_pwl", ("conv_pw", "conv_pwl"), ("conv_pwl",), ("classifier",)),
)


def _ends_with(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def detect_preset(model: nn.Module) -> Preset | None:
    """The preset of the model's architecture (``config.model_type``), else the first whose marker it has."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for preset in PRESETS:
        if model_type in preset.model_types:
            return preset
    names = [n for n, _ in model.named_modules()]
    for preset in PRESETS:
        if preset.marker and any(_ends_with(n, preset.marker) for n in names):
            return preset
    return None


def resolve_config(model: nn.Module, config: SurmConfig) -> SurmConfig:
    """Fill ``None`` targets, slices and modules_to_save from the model family's preset."""
    preset = detect_preset(model)
    if preset is None and config.target_modules is None:
        raise ValueError(
            f"no target preset for {type(model).__name__}; give target_modules (suffixes, a regex or "
            f"'all-linear'). Linear layers look like: {', '.join(_linear_names(model)[:6])}"
        )
    changes: dict[str, Any] = {}
    if config.target_modules is None:
        targets = preset.lora_targets if config.mode == "lora" else preset.adapter_targets
        changes["target_modules"] = list(targets)
    if config.modules_to_save is None:
        heads = preset.head if preset else ("head", "classifier")
        changes["modules_to_save"] = [h for h in heads if find_suffix(model, h)]
    if config.qkv_slices is None and config.mode == "lora":
        slices = {k: list(v) for k, v in preset.qkv_slices} if preset else {}
        if slices:
            # A preset's slices apply only where the targets reach the fused layer (a user's
            # target_modules or exclude may leave it out); explicit qkv_slices are still checked.
            chosen = [n for n, _, _ in find_targets(model, replace(config, **changes, qkv_slices={}), in_proj=True)]
            slices = {k: v for k, v in slices.items() if any(_ends_with(n, k) for n in chosen)}
        changes["qkv_slices"] = slices
    return replace(config, **changes) if changes else config


# -- target matching ----------------------------------------------------------------------------

# Modules that read a child Linear's ``.weight`` directly (fused attention kernels, the encoder layer's
# inference fast path) instead of calling it: a wrapped child would be bypassed without a word.
WEIGHT_READERS: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer,)
# Children read through ``.weight`` that a SurmLinear serves its effective weight to (``read_by_parent``).
# ``in_proj``: the fused q, k, v projection an nn.MultiheadAttention stores as in_proj_weight / in_proj_bias, made
# a child at inject (``surmlab.layer.attach_in_proj``); before that it is only a name, ``<attention>.in_proj``.
READ_THROUGH_WEIGHT: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.MultiheadAttention, "out_proj"),
    (nn.MultiheadAttention, IN_PROJ),
)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def read_by_parent(model: nn.Module, name: str) -> bool:
    parent, child = _parent(model, name)
    return any(isinstance(parent, cls) and child == attr for cls, attr in READ_THROUGH_WEIGHT)


def in_proj_names(model: nn.Module) -> dict[str, nn.MultiheadAttention]:
    """``<attention>.in_proj`` -> the attention, for each ``nn.MultiheadAttention`` whose in-projection is not a
    child yet: the names SURM's targets may give its fused q, k, v projection."""
    return {
        f"{name}.{IN_PROJ}" if name else IN_PROJ: module
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention) and not isinstance(module, InProjReader)
    }


def wrap_in_place(model: nn.Module, name: str, wrapper: SurmLinear) -> None:
    """Put ``wrapper`` at ``name``; an attention's in_proj becomes a child the attention reads its weight from."""
    parent, child = _parent(model, name)
    if child == IN_PROJ and isinstance(parent, nn.MultiheadAttention) and not isinstance(parent, InProjReader):
        attach_in_proj(parent, wrapper)
    else:
        setattr(parent, child, wrapper)


def unwrap_in_place(model: nn.Module, name: str, base: nn.Module) -> None:
    """Put ``base`` back at ``name``; an attention's in_proj goes back into its own in_proj_weight / in_proj_bias."""
    parent, child = _parent(model, name)
    if child == IN_PROJ and isinstance(parent, InProjReader):
        release_in_proj(parent)
    else:
        setattr(parent, child, base)


def plain_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``named_modules`` as if no SURM layer were there: each ``SurmLinear`` stands for its base layer."""
    modules: dict[str, nn.Module] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in inside):
            continue
        if isinstance(module, SurmLinear):
            inside.append(name)
            module = module.base_layer
        modules[name] = module
    return modules


def _linear_names(model: nn.Module) -> list[str]:
    """The ``nn.Linear`` / ``Conv1D`` layers of the plain model (an attention's in_proj, once a child, is not one)."""
    modules = plain_modules(model)
    return [n for n, m in modules.items() if is_linear(m) and not _attached_in_proj(modules, n)]


def _attached_in_proj(modules: dict[str, nn.Module], name: str) -> bool:
    parent, _, child = name.rpartition(".")
    return child == IN_PROJ and isinstance(modules.get(parent), InProjReader)


def output_layers(model: nn.Module) -> set[str]:
    """Linear layers ``all-linear`` leaves out, as PEFT does: the output layer (``get_output_embeddings``) and
    any layer whose weight is an embedding's (tied), which a merge would change as well."""
    names = set()
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}  # tying shares the Parameter
    for name, module in plain_modules(model).items():
        if is_linear(module) and (module is output or id(module.weight) in embeddings):
            names.add(name)
    return names


def find_suffix(model: nn.Module, suffix: str) -> list[str]:
    return [n for n, _ in model.named_modules() if n and _ends_with(n, suffix)]


def _matches(name: str, spec: list[str] | str | None) -> bool:
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(_ends_with(name, s) for s in spec)


def qkv_rows(in_features: int, slices: Iterable[str]) -> list[tuple[str, int, int]]:
    """``(slice, start, stop)`` output rows of the named thirds of a fused ``3d x d`` qkv layer, in q, k, v order."""
    return [(s, QKV.index(s) * in_features, (QKV.index(s) + 1) * in_features) for s in QKV if s in slices]


def find_targets(
    model: nn.Module, config: SurmConfig, in_proj: bool = False
) -> list[tuple[str, nn.Linear, list[tuple[str, int, int]]]]:
    """``(name, layer, slices)`` for every layer the (resolved) config targets (a wrapped layer: its base).

    ``in_proj``: names ``<attention>.in_proj`` reach an ``nn.MultiheadAttention``'s fused projection (its layer: an
    ``nn.Linear`` view sharing the attention's Parameters), which only SURM's own wrapper knows how to attach."""
    modules = plain_modules(model)
    attentions = in_proj_names(model) if in_proj else {}
    saved = [full for suffix in config.modules_to_save or [] for full in find_suffix(model, suffix)]
    spec = config.target_modules
    if spec == "all-linear":
        left_out = set(saved) | output_layers(model)
        chosen = [n for n in _linear_names(model) if not any(n == s or n.startswith(s + ".") for s in left_out)]
    elif isinstance(spec, str):
        try:
            re.compile(spec)
        except re.error as err:
            raise ValueError(f"target_modules regex {spec!r} does not compile: {err}") from None
        chosen = [n for n in [*modules, *attentions] if n and re.fullmatch(spec, n)]
    else:
        chosen = []
        for suffix in spec or []:
            hits = find_suffix(model, suffix) + [n for n in attentions if _ends_with(n, suffix)]
            if not hits and not in_proj and any(_ends_with(n, suffix) for n in in_proj_names(model)):
                raise ValueError(
                    f"target {suffix!r} names the fused in-projection of an nn.MultiheadAttention, which only "
                    "SURM's own wrapper adapts; target the attention's out_proj, or the whole attention module "
                    "where the method supports it"
                )
            if not hits:
                raise ValueError(
                    f"target {suffix!r} matches no module of {type(model).__name__}; linear layers "
                    f"look like: {', '.join(_linear_names(model)[:6])}"
                )
            chosen += [h for h in hits if h not in chosen]
    chosen = [n for n in chosen if not _matches(n, config.exclude)]
    clash = [n for n in chosen if any(n == s or n.startswith(s + ".") for s in saved)]
    if clash:
        raise ValueError(
            f"{clash[0]} is both a target and in modules_to_save {config.modules_to_save}; a module is either "
            "adapted (frozen base + update) or trained and saved whole"
        )
    if not chosen:
        raise ValueError(f"target_modules {spec!r} (minus exclude {config.exclude!r}) match no layer")
    for name in chosen:
        if name in attentions:
            modules[name] = in_proj_view(attentions[name], name)
        if not is_adaptable(modules[name]):
            raise ValueError(
                f"target {name} is a {type(modules[name]).__name__}; only nn.Linear layers (and transformers' "
                "Conv1D, nn.Embedding and nn.Conv2d) can be adapted"
            )
        layer = modules[name]
        if isinstance(layer, nn.Conv2d) and type(layer).forward is not nn.Conv2d.forward:
            raise ValueError(
                f"target {name} is a {type(layer).__name__}, a Conv2d with its own forward (e.g. timm's 'same' "
                "padding), which the update's convolution would bypass; only plain nn.Conv2d layers can be adapted"
            )
        parent = modules[name.rpartition(".")[0]]
        if isinstance(parent, WEIGHT_READERS):
            raise ValueError(
                f"target {name} cannot be adapted: its parent {type(parent).__name__} reads its .weight directly "
                "(fused kernels), so an update there would be ignored; exclude it or target other layers"
            )
    slices_spec = config.qkv_slices or {}
    for suffix in slices_spec:
        if not any(_ends_with(n, suffix) for n in chosen):
            raise ValueError(f"qkv_slices names {suffix!r}, which matches none of the targeted layers")
    result = []
    for name in chosen:
        layer = modules[name]
        out_features, in_features = features(layer)
        wanted = next((v for k, v in slices_spec.items() if _ends_with(name, k)), None)
        if wanted is None:
            slices = [("full", 0, out_features)]
        else:
            if out_features != 3 * in_features:
                raise ValueError(
                    f"qkv_slices given for {name} ({out_features}x{in_features}), which is not a "
                    f"fused qkv layer: out_features must be 3 x in_features"
                )
            slices = qkv_rows(in_features, wanted)
        result.append((name, layer, slices))
    return result


def _budget_targets(found: list[tuple[str, nn.Module, list[tuple[str, int, int]]]], mode: str) -> list[Target]:
    if mode == "adapter":
        return [Target(name, features(layer)[0], features(layer)[0]) for name, layer, _ in found]
    return [
        Target(name if s == "full" else f"{name}[{s}]", stop - start, features(layer)[1])
        for name, layer, slices in found
        for s, start, stop in slices
    ]


def _layer_of(target: str) -> str:
    """``fc[q]`` -> ``fc``: the layer a budget target (one row slice) belongs to."""
    return target.split("[", 1)[0]


def pattern_overrides(config: SurmConfig, targets: list[Target]) -> dict[str, dict[str, Any]]:
    """Target name -> the setting of the ``hyper_pattern`` entry whose suffix its layer has (the longest wins);
    a pattern that matches no targeted layer, or a setting a matched layer cannot take, is an error naming it."""
    patterns = config.hyper_pattern or {}
    cls = structure_family(config.family)
    overrides = {}
    for suffix in patterns:
        hits = [t for t in targets if _ends_with(_layer_of(t.name), suffix)]
        if not hits:
            layers = sorted({_layer_of(t.name) for t in targets})
            raise ValueError(
                f"hyper_pattern {suffix!r} matches none of the targeted layers ({', '.join(layers[:6])}"
                f"{', ...' if len(layers) > 6 else ''})"
            )
    for t in targets:
        matched = [s for s in patterns if _ends_with(_layer_of(t.name), s)]
        if not matched:
            continue
        suffix = max(matched, key=len)
        try:
            cls.resolve_hyper(t.in_features, t.out_features, **patterns[suffix])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"hyper_pattern {suffix!r} = {patterns[suffix]} does not fit {t.name} "
                f"({t.out_features}x{t.in_features}): {err}"
            ) from None
        overrides[t.name] = dict(patterns[suffix])
    return overrides


def plan_for(model: nn.Module, config: SurmConfig) -> BudgetPlan:
    """What ``inject`` would build: per-layer shapes, hyper-parameters and the exact count."""
    config = resolve_config(model, config)
    targets = _budget_targets(find_targets(model, config, in_proj=True), config.mode)
    overrides = pattern_overrides(config, targets)
    if config.budget is not None:
        if config.hyper:
            raise ValueError(f"give either hyper {config.hyper} or a budget ({config.budget}), not both")
        return budget_mod.solve(config.family, targets, config.budget, config.mode, config.nearest, overrides)
    return budget_mod.plan(config.family, targets, config.hyper, config.mode, overrides)


# -- inject / merge / unload ----------------------------------------------------------------------


def surm_layers(model: nn.Module) -> dict[str, SurmLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SurmLinear)}


@dataclass
class AdapterRecord:
    """One named adapter of a model: its resolved config (solved hyper-parameters, no budget) and plan."""

    config: SurmConfig
    plan: BudgetPlan


NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def adapters(model: nn.Module) -> dict[str, AdapterRecord]:
    """The named adapters of ``model``, in the order they were added (empty: none)."""
    records = getattr(model, "surm_adapters", None)
    if records is None and hasattr(model, "surm_config"):  # a model injected before named adapters existed
        records = {DEFAULT_ADAPTER: AdapterRecord(model.surm_config, model.surm_plan)}
    return dict(records or {})


def active_adapters(model: nn.Module) -> list[str]:
    return list(getattr(model, "surm_active", None) or list(adapters(model))[:1])


def _known(model: nn.Module, name: str, what: str) -> AdapterRecord:
    records = adapters(model)
    if name not in records:
        raise ValueError(f"cannot {what} adapter {name!r}: it is not loaded; loaded adapters: {list(records)}")
    return records[name]


def _set_records(model: nn.Module, records: dict[str, AdapterRecord], active: list[str]) -> None:
    """Store the adapter records; ``surm_config``/``surm_plan`` follow the first active adapter."""
    if not records:
        for attr in ("surm_config", "surm_plan", "surm_adapters", "surm_active"):
            if hasattr(model, attr):
                delattr(model, attr)
        return
    model.surm_adapters, model.surm_active = records, list(active)
    main = records[active[0] if active else next(iter(records))]
    model.surm_config, model.surm_plan = main.config, main.plan


def _apply_active(model: nn.Module, active: list[str]) -> None:
    """Each layer adds the active adapters it holds; their updates train, the inactive ones are frozen."""
    for layer in surm_layers(model).values():
        layer.set_active(active)
        for name in layer.adapter_names:
            layer.slot(name).updates.requires_grad_(name in active)
            if layer.adapter_bias is not None and name == layer.adapter_name:
                layer.adapter_bias.requires_grad_(name in active)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _check_name(model: nn.Module, name: str) -> None:
    if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        raise ValueError(f"adapter name {name!r}: use letters, digits, '_' or '-', starting with a letter or '_'")
    records = adapters(model)
    if name in records:
        raise ValueError(
            f"adapter {name!r} exists: the model already carries SURM layers under that name (loaded adapters: "
            f"{list(records)}); pass another name= to add one beside it, or delete_adapter()/unload() first"
        )


def _check_stackable(name: str, config: SurmConfig, found: list[tuple[str, nn.Module, Any]], model: nn.Module) -> None:
    """Two adapters share a layer only in LoRA mode (their updates add up); refuse before anything changes."""
    layers = surm_layers(model)
    for target, _, _ in found:
        layer = layers.get(target)
        if layer is not None and (layer.mode != "lora" or config.mode != "lora"):
            raise ValueError(
                f"adapter {name!r} ({config.mode} mode) cannot share {target} with adapter(s) {layer.adapter_names} "
                f"({layer.mode} mode): only LoRA-mode adapters (W + sum alpha_i S_i) stack on one layer; exclude "
                f"{target} from {name!r}'s target_modules"
            )


def inject(model: nn.Module, config: SurmConfig, name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Wrap the targets of ``config`` in place as adapter ``name``; freeze all else but ``modules_to_save``.

    On a model that already carries adapters the new one is added beside them, inactive and frozen
    (``set_adapter`` makes it active); all or nothing: a failure part-way leaves the model as it was."""
    _check_name(model, name)
    records, active = adapters(model), active_adapters(model)
    config = resolve_config(model, config)
    found = find_targets(model, config, in_proj=True)
    plan = plan_for(model, config)
    _check_injectable(model, config, found)
    _check_stackable(name, config, found, model)
    existing = surm_layers(model)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    wrapped: list[tuple[str, nn.Module]] = []
    added: list[SurmLinear] = []
    try:  # atomic: a failure part-way puts every layer and flag back as it was
        if not records:
            for p, _ in flags:
                p.requires_grad_(False)
        for target, layer, slices in found:
            # A layer named by hyper_pattern takes its setting (all row slices of a layer match alike).
            hyper = next((h for t, h in plan.overrides.items() if _layer_of(t) == target), plan.hyper)
            if target in existing:
                existing[target].add_adapter(
                    name, config.family, hyper, slices, config.alpha, config.product, config.dropout, config.init
                )
                added.append(existing[target])
                continue
            surm = SurmLinear(
                layer,
                config.family,
                hyper,
                config.mode,
                slices,
                config.alpha,
                config.activation,
                config.product,
                config.dropout,
                config.init,
                adapter_name=name,
            )
            surm.read_by_parent = read_by_parent(model, target)
            wrap_in_place(model, target, surm)
            wrapped.append((target, layer))
        for suffix in config.modules_to_save or []:
            for saved in find_suffix(model, suffix):
                model.get_submodule(saved).requires_grad_(True)
        # Record the resolved configuration: the solved hyper-parameters replace the budget.
        records[name] = AdapterRecord(replace(config, hyper=dict(plan.hyper), budget=None), plan)
        active = active or [name]
        _apply_active(model, active)
    except BaseException:
        for target, layer in wrapped:
            unwrap_in_place(model, target, layer)
        for layer in added:
            if name in layer.extra:
                del layer.extra[name]
        for p, flag in flags:
            p.requires_grad = flag
        raise
    _set_records(model, records, active)
    _guard_save_pretrained(model)
    return model


def set_adapter(model: nn.Module, names: str | Iterable[str]) -> nn.Module:
    """Make ``names`` (one or several) the active adapters: the forward adds each, ``(W + sum_i alpha_i S_i) x``,
    and only they train. A merged model is refused (unmerge first)."""
    wanted = [names] if isinstance(names, str) else list(names)
    records = adapters(model)
    if not records:
        raise ValueError("model has no SURM layers; call inject() first")
    if not wanted:
        raise ValueError(f"set_adapter needs at least one adapter name; loaded adapters: {list(records)}")
    for name in wanted:
        _known(model, name, "activate")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"set_adapter names an adapter twice: {wanted}")
    refuse_merged(surm_layers(model), "change the active adapters", "unmerge() first")
    _apply_active(model, wanted)
    _set_records(model, records, wanted)
    return model


def delete_adapter(model: nn.Module, name: str) -> nn.Module:
    """Remove adapter ``name``; a layer left without adapters gets its base layer back. Refused while merged."""
    _known(model, name, "delete")
    layers = surm_layers(model)
    refuse_merged(layers, f"delete adapter {name!r}", "unmerge() first")
    records, active = adapters(model), [n for n in active_adapters(model) if n != name]
    del records[name]
    active = active or list(records)[:1]
    for target, layer in layers.items():
        if name not in layer.adapter_names:
            continue
        if len(layer.adapter_names) == 1:
            unwrap_in_place(model, target, layer.base_layer)
        else:
            layer.remove_adapter(name)
    _apply_active(model, active)
    _set_records(model, records, active)
    if not records:
        _unguard_save_pretrained(model)
    return model


# -- the transformers save route ---------------------------------------------------------------------------

HF_CONFIG_FILE = "config.json"
BASE_CONFIG_FILE = "surm_base_config.json"


def _guard_save_pretrained(model: nn.Module) -> None:
    """A model whose SURM layers have no plain form (adapter mode, integer weights) gets a ``save_pretrained``
    whose folder transformers refuses: its ``config.json`` is kept as ``surm_base_config.json``.

    Every LoRA-mode layer on float weights writes its effective weight under the plain key (see
    ``surmlab.layer``), so transformers' ``from_pretrained`` gives the fine-tuned model and nothing
    needs guarding. Trainer checkpoints of guarded models still resume (Trainer does not need the config)."""
    cls_save = getattr(type(model), "save_pretrained", None)
    if cls_save is None or not hasattr(model, "config"):
        return
    if all(layer.has_plain_form() for layer in surm_layers(model).values()):
        return
    model.save_pretrained = functools.partial(_save_pretrained_without_plain_form, model)


def _save_pretrained_without_plain_form(model: nn.Module, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any:
    """The transformers checkpoint (Trainer resumes from it) without ``config.json``, plus surmlab's adapter
    files, so that ``surmlab.from_pretrained(base, folder)`` loads it."""
    result = type(model).save_pretrained(model, save_directory, *args, **kwargs)
    folder = Path(save_directory)
    if (folder / HF_CONFIG_FILE).exists():
        os.replace(folder / HF_CONFIG_FILE, folder / BASE_CONFIG_FILE)
    if kwargs.get("is_main_process", True):
        save_adapter(model, folder)
    return result


def _unguard_save_pretrained(model: nn.Module) -> None:
    if isinstance(model.__dict__.get("save_pretrained"), functools.partial):
        del model.__dict__["save_pretrained"]


def _check_injectable(model: nn.Module, config: SurmConfig, found: list[tuple[str, nn.Linear, Any]]) -> None:
    """What would fail part-way through ``inject``, refused up front by name."""
    for suffix in config.modules_to_save or []:
        for name in find_suffix(model, suffix):
            frozen = [k for k, p in model.get_submodule(name).named_parameters() if not p.is_floating_point()]
            if frozen:
                raise ValueError(
                    f"modules_to_save {name} holds non-float parameters ({name}.{frozen[0]}), which cannot be "
                    "trained; leave it out of modules_to_save (modules_to_save=[]) or load it in floating point"
                )
    if config.mode == "adapter":
        for name, _, _ in found:
            if read_by_parent(model, name):
                parent = type(_parent(model, name)[0]).__name__
                raise ValueError(
                    f"target {name} is read through its .weight by its parent {parent}, which never calls it; "
                    "adapter mode (h + act(S h) + b) has no weight to serve there: use mode='lora' for it"
                )
    if config.product == "dense":
        for name, layer, _ in found:
            if not layer.weight.is_floating_point() or type(layer.weight).__name__ in PACKED_WEIGHTS:
                raise ValueError(
                    f"product='dense' adds S to the weight of {name}, a {layer.weight.dtype} (quantised) weight; "
                    "use product='fft' or 'auto' on quantised layers"
                )


def _check_mergeable(model: nn.Module) -> dict[str, SurmLinear]:
    layers = surm_layers(model)
    if not layers:
        raise ValueError("model has no SURM layers; call inject() first")
    return layers


def _check_foldable(layers: dict[str, SurmLinear]) -> None:
    """Refuse a merge by the first layer that cannot take one, before any layer changes."""
    for name, layer in layers.items():
        if layer.mode != "lora":
            raise ValueError(
                f"cannot merge {name}: adapter mode adds a non-linear branch h + act(S h) + b; it cannot be merged "
                "into the weights"
            )
        blocker = layer.weight_blocker()
        if blocker is not None:
            raise ValueError(
                f"cannot merge {name}: {blocker}; adding the update would be cast away. Keep the model unmerged "
                "(unload(merge=False)) or dequantise the base first"
            )


def merge(model: nn.Module, names: str | Iterable[str] | None = None) -> nn.Module:
    """Fold ``alpha * S`` of the active adapters (or of ``names``, active ones) into each base weight (LoRA
    mode): inference costs what the base model costs."""
    layers = _check_mergeable(model)
    _check_foldable(layers)
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            _known(model, name, "merge")
        inactive = [n for n in names if n not in active_adapters(model)]
        if inactive:
            raise ValueError(
                f"cannot merge adapter(s) {inactive}: not active (active: {active_adapters(model)}); "
                "set_adapter() them first"
            )
    if any(layer.disabled for layer in layers.values()):
        raise ValueError("cannot merge inside disable_adapter(): the update is switched off there")
    for layer in layers.values():
        layer.merge(None if names is None else [n for n in names if n in layer.active])
    return model


def refuse_merged(layers: dict[str, SurmLinear], what: str, advice: str) -> None:
    """A ``ValueError`` ("cannot WHAT (LAYER is merged): ADVICE") when any of ``layers`` is merged."""
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(f"cannot {what} ({merged[0]} is merged): {advice}")


@contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """``with disable_adapter(model):`` the SURM layers compute their base layers alone (PEFT's
    ``disable_adapter``), e.g. to compare with the pretrained model; the updates are back on exit.

    A merged model is refused (its weights hold the update: ``unmerge`` it first). The ``modules_to_save``
    (the head) are trained in place, so the trained head stays in use."""
    layers = _check_mergeable(model)
    refuse_merged(layers, "disable the adapter of a merged model", "its weight holds the update; unmerge() it first")
    before = {name: layer.disabled for name, layer in layers.items()}  # nested blocks restore what they found
    for layer in layers.values():
        layer.disabled = True
    try:
        yield model
    finally:
        for name, layer in layers.items():
            layer.disabled = before[name]


def unmerge(model: nn.Module) -> nn.Module:
    for layer in _check_mergeable(model).values():
        layer.unmerge()
    return model


def unload(model: nn.Module, merge: bool = False) -> nn.Module:
    """Put the base layers back, with the updates folded in when ``merge=True``."""
    layers = _check_mergeable(model)
    if merge:
        _check_foldable(layers)
    for name, layer in layers.items():
        if merge:
            layer.merge()
        else:
            layer.unmerge()
        unwrap_in_place(model, name, layer.base_layer)
    _unguard_save_pretrained(model)
    _set_records(model, {}, [])
    return model


# -- summaries -------------------------------------------------------------------------------------


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def summary(model: nn.Module) -> list[dict[str, Any]]:
    """One row per adapted layer and per saved module: name, shape, hyper-parameters, trainable count."""
    rows = []
    several = len(adapters(model)) > 1
    for name, layer in surm_layers(model).items():
        for adapter in layer.adapter_names:
            for slice_name, update in layer.slot(adapter).updates.items():
                label = name if slice_name in ("full", "adapter") else f"{name}[{slice_name}]"
                row = {
                    "layer": f"{label} ({adapter})" if several else label,
                    "kind": f"{update.family} ({layer.mode})",
                    "shape": f"{update.out_features}x{update.in_features}",
                    "hyper": update.hyper,
                    "params": sum(p.numel() for p in update.parameters())
                    + (layer.out_features if layer.mode == "adapter" else 0),
                }
                rows.append(row)
    config = getattr(model, "surm_config", None)
    for suffix in (config.modules_to_save if config else None) or []:
        for name in find_suffix(model, suffix):
            n = sum(p.numel() for p in model.get_submodule(name).parameters())
            rows.append({"layer": name, "kind": "saved module", "shape": "", "hyper": {}, "params": n})
    return rows


# -- adapter files ---------------------------------------------------------------------------------


def main_adapter(model: nn.Module) -> str:
    """The adapter ``surm_config`` describes: the first active one."""
    active = active_adapters(model)
    return active[0] if active else next(iter(adapters(model)))


def _adapter_state(model: nn.Module, adapter: str | None = None) -> dict[str, torch.Tensor]:
    """Adapter ``adapter``'s tensors (``None``: the main one) under the single-adapter keys
    (``<layer>.updates.<slice>...``), whichever slot of the layer holds it, plus the saved modules."""
    adapter = main_adapter(model) if adapter is None else adapter
    config = adapters(model)[adapter].config
    state = {}
    for name, layer in surm_layers(model).items():
        if adapter not in layer.adapter_names:
            continue
        slot = layer.slot(adapter)
        for key, value in slot.named_parameters():
            if not key.startswith(("base_layer.", "extra.")):
                state[f"{name}.{key}"] = value
        state.update(_adapter_buffers(name, slot))
    for suffix in config.modules_to_save or []:
        for name in find_suffix(model, suffix):
            for key, value in model.get_submodule(name).state_dict().items():
                state[f"{name}.{key}"] = value
    return state


def _adapter_buffers(name: str, slot: nn.Module) -> dict[str, torch.Tensor]:
    """The fixed data each update declares for the adapter file (``Structure.adapter_buffers``)."""
    return {
        f"{name}.updates.{slice_name}.{buffer}": getattr(update, buffer)
        for slice_name, update in slot.updates.items()
        for buffer in type(update).adapter_buffers
    }


def backbone_name(model: nn.Module) -> str:
    """What an adapter file records about its backbone: the wrapper's architecture id, or the class name."""
    return getattr(model, "backbone_name", None) or type(model).__name__


def label_names(model: nn.Module) -> list[str] | None:
    """The class names a transformers model carries (``config.id2label``), unless they are the placeholders."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)] if isinstance(id2label, dict) else []
    return names if names and names != [f"LABEL_{i}" for i in range(len(names))] else None


def save_adapter(model: nn.Module, path: str | Path, name: str | None = None) -> Path:
    """Write ``surm_config.json`` and ``surm_model.safetensors`` (updates + saved modules) of adapter ``name``
    (``None``: the first active one); the files are those of a single-adapter model."""
    if not hasattr(model, "surm_config"):
        raise ValueError("model has no SURM layers; call inject() first")
    name = main_adapter(model) if name is None else name
    record = _known(model, name, "save")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in _adapter_state(model, name).items()}
    meta = {
        "format": FORMAT,
        "config": record.config.to_dict(),
        "backbone": backbone_name(model),
        "layers": {t.name: [t.out_features, t.in_features] for t, _, _ in record.plan.per_layer},
        "tensors": {k: list(v.shape) for k, v in state.items()},
        "trainable_parameters": sum(v.numel() for v in state.values() if v.is_floating_point()),
        "labels": label_names(model),
        "budget": record.plan.budget,  # what the solver was asked for
    }
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return path


def adapter_files(path: str | Path) -> tuple[Path, Path]:
    """``(config, weights)`` files of a surmlab adapter folder, older ``adapter_config.json`` folders included;
    a PEFT adapter or any other folder is refused in one line."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{path} {what}: give the folder that save_adapter or save_pretrained wrote")
    if (folder / CONFIG_FILE).exists():
        return folder / CONFIG_FILE, folder / WEIGHTS_FILE
    legacy = folder / LEGACY_CONFIG_FILE
    if legacy.exists():
        try:
            peft_type = json.loads(legacy.read_text()).get("peft_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            peft_type = None
        if peft_type:
            raise ValueError(
                f"{path} holds a PEFT {peft_type} adapter, not a surmlab one: load it with "
                f"peft.PeftModel.from_pretrained(model, {str(path)!r})"
            )
        return legacy, folder / LEGACY_WEIGHTS_FILE
    raise FileNotFoundError(
        f"no {CONFIG_FILE} in {path}: not a surmlab adapter folder (save one with surmlab.save_adapter or "
        "surmlab.save_pretrained)"
    )


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    file = adapter_files(path)[0]
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); re-save the adapter") from None
    missing = [k for k in ("config", "backbone", "layers") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}: not a surmlab adapter config")
    return meta


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """``load_file`` with an error that names the file when it is truncated or not safetensors."""
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError on short reads)
        raise ValueError(f"{file} is not a readable safetensors file ({err}); was it cut short?") from None


def _missing_heads(model: nn.Module, config: SurmConfig) -> list[str]:
    """Head modules of ``model`` (by its preset) that an adapter saved with ``config`` does not carry."""
    heads = resolve_config(model, replace(config, modules_to_save=None)).modules_to_save or []
    saved = config.modules_to_save or []
    return [h for h in heads if h not in saved]


def load_adapter(
    model: nn.Module, path: str | Path, *, name: str | None = None, allow_missing_head: bool = False
) -> nn.Module:
    """Inject and load a saved adapter, head included; any mismatch names the offending layer.

    Without ``name``, a model that already carries SURM layers is first unloaded (its base layers come back
    exactly), so the result is the same as loading into a fresh model. With ``name``, the adapter is added
    beside the loaded ones (inactive unless it is the first; ``set_adapter`` picks), and the shared head takes
    the file's. A merged model is refused. An adapter without the classifier head the model has is refused
    unless ``allow_missing_head`` (the model's head is then used as it is, e.g. when it was pretrained)."""
    meta = read_adapter_config(path)
    try:
        config = SurmConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{adapter_files(path)[0]}: {err}") from None
    backbone = backbone_name(model)
    if meta["backbone"] != backbone:
        raise ValueError(f"adapter in {path} was saved for a {meta['backbone']}, not for this {backbone}")
    layers = surm_layers(model)
    refuse_merged(layers, f"load {path} into a merged model", "unmerge() it first, or load into a freshly built model")
    missing_heads = [] if allow_missing_head else _missing_heads(model, config)
    if missing_heads:
        raise ValueError(
            f"adapter in {path} holds no weights for this {backbone}'s head {missing_heads} (it was saved with "
            f"modules_to_save={config.modules_to_save}), so the head would keep its initial weights; save the "
            "adapter with the head, or pass allow_missing_head=True if the model's own head is the right one"
        )
    if name is not None:
        _check_name(model, name)
        heads = {k: v.detach().clone() for k, v in _head_state(model, config).items()}
        try:
            _load_into_bare(model, path, meta, config, name)
        except BaseException:  # leave the model as it was: without the new adapter, its head untouched
            if name in adapters(model):
                delete_adapter(model, name)
            with torch.no_grad():
                for key, value in _head_state(model, config).items():
                    value.copy_(heads[key])
            raise
        return model
    previous = dict(layers)
    attrs = {
        a: getattr(model, a) for a in ("surm_config", "surm_plan", "surm_adapters", "surm_active") if hasattr(model, a)
    }
    if layers:
        unload(model)  # not merged: every base layer comes back exactly as it was
    try:
        _load_into_bare(model, path, meta, config)
    except BaseException:  # leave the model as it was: its previous adapter back in place
        if surm_layers(model):
            unload(model)
        for name, layer in previous.items():
            wrap_in_place(model, name, layer)
        for attr, value in attrs.items():
            setattr(model, attr, value)
        if previous:
            _guard_save_pretrained(model)
        raise
    return model


def _head_state(model: nn.Module, config: SurmConfig) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value
        for suffix in config.modules_to_save or []
        for name in find_suffix(model, suffix)
        for key, value in model.get_submodule(name).state_dict().items()
    }


def _load_into_bare(
    model: nn.Module, path: str | Path, meta: dict[str, Any], config: SurmConfig, name: str = DEFAULT_ADAPTER
) -> None:
    backbone = backbone_name(model)
    try:
        targets = _budget_targets(find_targets(model, config, in_proj=True), config.mode)
    except ValueError as err:
        raise ValueError(f"adapter in {path} does not fit this {backbone}: {err}") from None
    have_layers = {t.name: [t.out_features, t.in_features] for t in targets}
    for layer_name, shape in meta["layers"].items():
        if layer_name not in have_layers:
            raise ValueError(f"adapter layer {layer_name} ({shape[0]}x{shape[1]}) does not exist in this {backbone}")
        if have_layers[layer_name] != shape:
            got = have_layers[layer_name]
            raise ValueError(
                f"adapter layer {layer_name} is {shape[0]}x{shape[1]} but this {backbone}'s is {got[0]}x{got[1]}"
            )
    state = read_safetensors(adapter_files(path)[1])
    inject(model, config, name)
    own = _adapter_state(model, name)
    for key, value in state.items():
        if key not in own:
            raise ValueError(f"adapter tensor {key} has no place in this {backbone}")
        if own[key].shape != value.shape:
            raise ValueError(
                f"adapter tensor {key} has shape {list(value.shape)} but this {backbone} expects "
                f"{list(own[key].shape)} (saved for another model size or number of classes?)"
            )
    buffers = {k for layer_name, layer in surm_layers(model).items() if name in layer.adapter_names
               for k in _adapter_buffers(layer_name, layer.slot(name))}  # fmt: skip
    missing = sorted(set(own) - set(state) - buffers)  # an older file without a buffer: the seed's draw stands
    if missing:
        raise ValueError(f"adapter in {path} lacks tensors {missing[:5]}")
    for key in buffers & set(state):
        update_name, buffer = key.rsplit(".", 1)
        try:
            model.get_submodule(update_name).check_adapter_buffer(buffer, state[key])
        except ValueError as err:
            raise ValueError(f"adapter tensor {key} in {path}: {err}") from None
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
