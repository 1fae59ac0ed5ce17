"""Batching: rows of a task's split -> the tensors a backbone's ``forward(**batch)`` takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .schema import Task


class Preprocessing(Protocol):
    """What batching needs from a backbone (``surmlab.models.Backbone`` is one): its modality and
    an image transform or a tokenizer."""

    name: str
    modality: str
    transform: Callable | None
    train_transform: Callable | None
    tokenizer: Any | None


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def make_collate(
    task: Task, backbone: Preprocessing, max_length: int = 128, train: bool = False
) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """A DataLoader ``collate_fn``: rows -> ``pixel_values`` or ``input_ids``/``attention_mask``
    (/``token_type_ids``), plus ``labels`` (long; float for regression)."""
    if backbone.modality != task.modality:
        raise ValueError(
            f"task {task.name} is {task.modality} data but backbone {backbone.name} takes {backbone.modality}"
        )
    label_dtype = torch.float32 if task.regression else torch.long

    def labels(rows: list[dict]) -> torch.Tensor:
        return torch.tensor([row["label"] for row in rows], dtype=label_dtype)

    if task.modality == "image":
        transform = (backbone.train_transform if train else None) or backbone.transform
        if transform is None:
            raise ValueError(f"backbone {backbone.name} has no image transform")

        def collate_images(rows: list[dict]) -> dict[str, torch.Tensor]:
            return {
                "pixel_values": torch.stack([transform(_rgb(row["image"])) for row in rows]),
                "labels": labels(rows),
            }

        return collate_images
    tokenizer = backbone.tokenizer
    if tokenizer is None:
        raise ValueError(f"backbone {backbone.name} has no tokenizer")

    def collate_text(rows: list[dict]) -> dict[str, torch.Tensor]:
        texts = [row["text"] for row in rows]
        pairs = [row["text_pair"] for row in rows] if "text_pair" in rows[0] else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        batch["labels"] = labels(rows)
        return batch

    return collate_text
