"""Generate with a trained decoder run: rebuild its backbone and method, load its weights, optionally
fold the update into the base weights (``merged``), and reply to prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..predict import load_run
from ..tuner import merge, surm_layers
from .generate import Generation, GenerationOptions, generate


def merge_update(model: nn.Module, method: str) -> nn.Module:
    """Fold the method's update into the base weights (SURM and LoRA layers; PEFT's adapters)."""
    if surm_layers(model):
        return merge(model)
    if callable(getattr(model, "merge_adapter", None)):
        model.merge_adapter()
        return model
    raise ValueError(f"method {method} adds no update to merge; generate without merged")


def generate_from_run(
    run_dir: str | Path,
    prompts: list[Any],
    options: GenerationOptions | None = None,
    *,
    merged: bool = False,
    best: bool = False,
) -> list[Generation]:
    """Replies of run ``run_dir``'s model to ``prompts`` (user messages or conversations)."""
    options = options or GenerationOptions()  # checked before the model is built
    backbone, prepared, saved = load_run(run_dir, best)
    if saved.task.modality != "lm":
        raise ValueError(
            f"{Path(run_dir).name} is a {saved.task.modality} classifier; generation needs a decoder run "
            "(a decoder backbone trained on an instruction task)"
        )
    model = merge_update(prepared.model, saved.train.method) if merged else prepared.model
    return generate(model, backbone.tokenizer, prompts, options)
