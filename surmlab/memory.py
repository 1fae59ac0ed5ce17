"""Memory options of a run: gradient checkpointing and length bucketing (``TrainConfig`` fields), and
the defaults each task kind gives the options a config leaves to the lab.

bf16 autocast is ``mixed_precision="bf16"`` and gradient accumulation ``grad_accum``: both are
accelerate's. Length bucketing orders each epoch so that a batch holds rows of similar length (less
padding); the order is a pure function of ``(seed, epoch)``, so a resumed run skips exactly the
batches it trained on, as with plain shuffling.

Defaults (``length_bucketing=None``, ``mixed_precision="auto"``) are settled once, before the run
folder is written, so the folder records the values used and a resume reads them back. Decoder tasks
bucket by length (their prompts and replies vary several-fold, and padding is compute spent on nothing)
and autocast to bf16 on a GPU that has it; classification keeps float32 and plain shuffling, the order
every recorded study used. Gradient checkpointing stays opt-in: it costs a second forward pass and
pays only where activations, not time, are what runs out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

if TYPE_CHECKING:
    from .train_config import TrainConfig

MEGABATCH = 32  # rows are sorted by length within windows of this many batches of a shuffled epoch


TEXT_COLUMNS = ("text", "text_pair", "messages", "response")


def text_columns(rows: Any) -> list[str]:
    """The text columns of a split; a split without any (images) is refused: bucketing needs lengths."""
    columns = [c for c in TEXT_COLUMNS if c in rows.column_names]
    if not columns:
        raise ValueError(f"length_bucketing applies to text tasks; this one has columns {rows.column_names}")
    return columns


def text_lengths(rows: Any) -> list[int]:
    """Characters of each row's text: the length proxy bucketing sorts by (no tokenizer needed)."""
    return [sum(len(v) for v in row.values() if isinstance(v, str)) for row in rows.select_columns(text_columns(rows))]


class LengthBuckets(Sampler[int]):
    """Each epoch: a permutation seeded by ``(seed, epoch)``, cut into windows of ``MEGABATCH`` batches,
    each window sorted by length (longest first), so consecutive ``batch_size`` rows are alike."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = np.asarray(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths))
        window = self.batch_size * MEGABATCH
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            yield from chunk[np.argsort(-self.lengths[chunk], kind="stable")].tolist()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass: transformers models (non-reentrant, so frozen inputs
    still pass gradients to the update) and timm models; anything else is refused by name."""
    for module in model.modules():
        if callable(getattr(module, "activation_checkpointing_enable", None)):  # transformers 5
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            return
        if callable(getattr(module, "gradient_checkpointing_enable", None)):  # transformers 4
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
        if callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)
            return
    raise ValueError(
        f"gradient_checkpointing needs a transformers or timm backbone; {type(model).__name__} offers neither switch"
    )


@dataclass(frozen=True)
class MemoryDefaults:
    """What a task kind turns on when a config leaves the choice to the lab."""

    length_bucketing: bool = False
    bf16_on_gpu: bool = False


def bf16_device(config: TrainConfig) -> bool:
    """Whether this run trains on a GPU with bf16 arithmetic."""
    return not config.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def with_memory_defaults(config: TrainConfig, defaults: MemoryDefaults, bf16: bool) -> TrainConfig:
    """``config`` with ``length_bucketing=None`` and ``mixed_precision="auto"`` settled from ``defaults``
    (``bf16``: whether the device has bf16); options given explicitly are kept as they are."""
    changes: dict[str, Any] = {}
    if config.length_bucketing is None:
        changes["length_bucketing"] = defaults.length_bucketing
    if config.mixed_precision == "auto":
        changes["mixed_precision"] = "bf16" if defaults.bf16_on_gpu and bf16 else "no"
    return replace(config, **changes)
