"""Batching: rows of a task's split -> the tensors a backbone's ``forward(**batch)`` takes."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

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


class IndexedRows(Dataset):
    """A split whose rows carry their position (``index``), so that a row's augmentation can be seeded by it."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        try:
            row = self.rows[i]
        except (OSError, SyntaxError) as err:  # PIL on a damaged image file: name the file, not just the damage
            source = _source(self.rows, i)
            if source in str(err):
                raise
            raise OSError(f"{source}: {err}") from err
        return {**row, "index": i}


def _source(rows: Any, i: int) -> str:
    """The file behind row ``i`` of a split (its image, read undecoded), to name it in an error."""
    try:
        import datasets

        raw = rows.cast_column("image", datasets.Image(decode=False))[i]["image"]
        return str(raw.get("path") or f"row {i}")
    except Exception:  # not a datasets split with an image column: the position is all there is
        return f"row {i}"


class SeededAugmentation:
    """A random training transform made a pure function of (seed, epoch, example).

    Each example is transformed under Python's, NumPy's and torch's global generators seeded from
    ``(seed, epoch, index)``, and the generators are put back afterwards. So an augmentation does not
    depend on how far a data loader has prefetched, and draws nothing from the generators a checkpoint
    saves (dropout's): a resumed run sees the uninterrupted run's augmentations exactly.
    """

    def __init__(self, transform: Callable, seed: int) -> None:
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __call__(self, image: Image.Image, index: int) -> torch.Tensor:
        key = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        python, numpy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                random.seed(key)
                np.random.seed(key)
                torch.manual_seed(key)
                return self.transform(image)
            finally:
                random.setstate(python)
                np.random.set_state(numpy)


class Collate:
    """A DataLoader ``collate_fn`` (``make_collate`` builds one); ``set_epoch`` reaches a seeded augmentation."""

    def __init__(self, collate: Callable[[list[dict]], dict[str, torch.Tensor]], augmentation: Any = None) -> None:
        self.collate, self.augmentation = collate, augmentation

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.collate(rows)

    def set_epoch(self, epoch: int) -> None:
        if self.augmentation is not None:
            self.augmentation.epoch = epoch


def make_collate(
    task: Task, backbone: Preprocessing, max_length: int = 128, train: bool = False, seed: int | None = None
) -> Collate:
    """A DataLoader ``collate_fn``: rows -> ``pixel_values`` or ``input_ids``/``attention_mask``
    (/``token_type_ids``), plus ``labels`` (long; float for regression). With ``train`` and a ``seed``,
    an image backbone's random training transform is seeded per example (``SeededAugmentation``): the
    rows must then carry their ``index`` (``IndexedRows``)."""
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
        seeded = SeededAugmentation(transform, seed) if train and seed is not None else None

        def pixels(row: dict) -> torch.Tensor:
            image = _rgb(row["image"])
            return seeded(image, row["index"]) if seeded is not None else transform(image)

        def collate_images(rows: list[dict]) -> dict[str, torch.Tensor]:
            return {"pixel_values": torch.stack([pixels(row) for row in rows]), "labels": labels(rows)}

        return Collate(collate_images, seeded)
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

    return Collate(collate_text)
