"""``export_lora``: a PEFT LoRA adapter from any LoRA-mode SURM model, so any LoRA serving stack serves it.

Each layer's update ``alpha * S`` (all its row slices together, zeros elsewhere) becomes ``B A``:
exactly, from the factors, for the ``lowrank`` family; through a truncated SVD for the other families,
whose updates are usually full rank. ``rank`` caps the export rank, ``energy`` keeps the fewest singular
values holding that share of ``||S||_F^2``; with neither, the SVD keeps the numerical rank (exact, and as
large as the update needs). Each layer's relative error ``||alpha S - B A||_F / ||alpha S||_F`` is printed
and returned. The head (``modules_to_save``) is written whole, as PEFT's ``modules_to_save``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .fileio import atomic_write
from .layer import SurmLinear, is_transposed
from .tuner import find_suffix, surm_layers

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


@dataclass(frozen=True)
class LayerExport:
    """One exported layer: its LoRA rank and the relative Frobenius error of ``B A`` against ``alpha S``."""

    name: str
    shape: tuple[int, int]
    rank: int
    relative_error: float
    exact: bool


def _lowrank_factors(layer: SurmLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` with ``B A = alpha S`` built from the lowrank factors of every slice (no SVD)."""
    blocks_b, blocks_a = [], []
    for name, start, stop in layer.slices:
        update = layer.updates[name]
        b = torch.zeros(layer.out_features, update.rank, dtype=torch.float64)
        b[start:stop] = layer.alpha * update.b.detach().double().cpu()
        blocks_b.append(b)
        blocks_a.append(update.a.detach().double().cpu())
    return torch.cat(blocks_b, dim=1), torch.cat(blocks_a, dim=0)


def _svd_factors(delta: torch.Tensor, rank: int | None, energy: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    if rank is not None:
        keep = rank
    elif energy is not None:
        share = torch.cumsum(s**2, 0) / (s**2).sum().clamp_min(torch.finfo(s.dtype).tiny)
        keep = int((share < energy - 1e-12).sum().item()) + 1
    else:  # the numerical rank: exact to rounding
        keep = int((s > s.max() * max(delta.shape) * torch.finfo(s.dtype).eps).sum().item()) if s.numel() else 0
    keep = max(1, min(keep, s.numel()))  # PEFT needs r >= 1; a zero update exports as a zero rank-1 one
    root = s[:keep].sqrt()
    return u[:, :keep] * root, root[:, None] * vh[:keep]


def _check(model: nn.Module, rank: int | None, energy: float | None) -> dict[str, SurmLinear]:
    layers = surm_layers(model)
    if not layers or not hasattr(model, "surm_config"):
        raise ValueError("model has no SURM layers; call inject() first")
    if rank is not None and energy is not None:
        raise ValueError(f"give rank ({rank}) or energy ({energy}), not both")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, int | float) or not 0 < energy <= 1):
        raise ValueError(f"energy must be a share in (0, 1], got {energy!r}")
    for name, layer in layers.items():
        if layer.mode != "lora":
            raise ValueError(
                f"{name} is an adapter-mode layer (h + act(S h) + b), which no LoRA adapter can express; "
                "export_lora takes lora-mode models"
            )
        if layer.adapter_names != [layer.adapter_name] or layer.active != (layer.adapter_name,):
            raise ValueError(
                f"{name} holds adapters {layer.adapter_names} (active: {list(layer.active)}); export_lora takes "
                "one adapter: delete_adapter() the others first"
            )
        if layer.embedding or layer.conv:
            kind = type(layer.base_layer).__name__
            raise ValueError(f"{name} is an nn.{kind}; export_lora writes LoRA for linear layers only")
        if layer.read_by_parent:
            raise ValueError(
                f"{name} is read through .weight by its nn.MultiheadAttention, which PEFT's LoRA on that name would "
                "bypass; export_lora writes LoRA for layers their parent calls"
            )
        limit = min(layer.out_features, layer.in_features)
        if rank is not None and rank > limit:
            raise ValueError(
                f"export rank {rank} is larger than layer {name} ({layer.out_features}x{layer.in_features}) "
                f"allows: give rank <= {limit}"
            )
    return layers


@torch.no_grad()
def export_lora(
    model: nn.Module,
    save_directory: str | Path,
    rank: int | None = None,
    energy: float | None = None,
    *,
    verbose: bool = True,
) -> list[LayerExport]:
    """Write a PEFT LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) that
    ``peft.PeftModel.from_pretrained(base_model, save_directory)`` loads; returns one row per layer."""
    from peft import LoraConfig

    from .export import base_model_id

    layers = _check(model, rank, energy)
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    rows = []
    for name, layer in layers.items():
        delta = layer.delta_weight().double().cpu()
        exact = rank is None and energy is None and all(u.family == "lowrank" for u in layer.updates.values())
        b, a = _lowrank_factors(layer) if exact else _svd_factors(delta, rank, energy)
        norm = torch.linalg.matrix_norm(delta).item()
        error = torch.linalg.matrix_norm(delta - b @ a).item() / norm if norm > 0 else 0.0
        state[f"{PREFIX}{name}.lora_A.weight"] = a.float().contiguous()
        state[f"{PREFIX}{name}.lora_B.weight"] = b.float().contiguous()
        ranks[name] = a.shape[0]
        rows.append(LayerExport(name, (layer.out_features, layer.in_features), a.shape[0], error, exact))
        if verbose:
            how = "exact (lowrank factors)" if exact else "truncated SVD"
            print(f"{name}: rank {a.shape[0]}, relative error {error:.3e} ({how})")
    saved = list(model.surm_config.modules_to_save or [])
    for suffix in saved:
        for full in find_suffix(model, suffix):
            for key, value in model.get_submodule(full).state_dict().items():
                state[f"{PREFIX}{full}.{key}"] = value.detach().cpu().contiguous()
    # scaling = lora_alpha / r = 1 in every layer: the scale is folded into B.
    default = max(ranks.values())
    config = LoraConfig(
        r=default,
        lora_alpha=default,
        target_modules=list(layers),
        rank_pattern={n: r for n, r in ranks.items() if r != default},
        alpha_pattern={n: r for n, r in ranks.items() if r != default},
        modules_to_save=saved or None,
        lora_dropout=0.0,
        # GPT-2's Conv1D stores its weight in x out: PEFT's flag for it (a mix of kinds: PEFT sets it per layer)
        fan_in_fan_out=all(is_transposed(layer.base_layer) for layer in layers.values()),
        base_model_name_or_path=base_model_id(model),
    )
    meta: dict[str, Any] = config.to_dict()
    for key, value in meta.items():  # sets (target_modules) are not JSON
        if isinstance(value, set):
            meta[key] = sorted(value)
    folder = Path(save_directory)
    atomic_write(folder / PEFT_WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write(folder / PEFT_CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
    return rows
