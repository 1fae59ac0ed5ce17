"""``TrainConfig``: everything that defines a training run; the CLI derives its flags from these fields.

One validation serves the Python API, the command line (``surmlab train``, whose flags, defaults,
choices and help come from the fields below) and the app (which writes a config file per job).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budget import MODES
from .config import INITS, PRODUCTS, from_dict, is_real, is_whole
from .methods import HEAD_LR

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "no", "fp16", "bf16")
LOGGERS = ("tensorboard", "wandb", "mlflow")  # experiment trackers offered by the command line
# What ``--resume`` may change: how long the run goes on and how often it reports. Everything else
# defines the run and stays as it was saved.
RESUME_OPTIONS = ("epochs", "max_steps", "log_every", "checkpoint_every")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as the run's ``config.json``.

    A field's ``metadata`` holds its ``help`` and, where the values are a fixed set, its ``choices``.
    """

    backbone: str = field(default="minilm-l6", metadata={"help": "the pretrained model to fine-tune"})
    task: str = field(default="rotten-tomatoes", metadata={"help": "the classification task"})
    method: str = field(default="surm-circulant", metadata={"help": "the fine-tuning method"})
    mode: str = field(
        default="lora",
        metadata={"help": "SURM mode: 'lora' adds alpha S x to W x, 'adapter' adds act(S h) to h", "choices": MODES},
    )
    budget: int | str | None = field(
        default=None, metadata={"help": "trainable parameters the method may add, e.g. 50k"}
    )
    hyper: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": 'explicit hyper-parameters instead of a budget, e.g. {"block_size": 64}'},
    )
    hyper_pattern: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "per-layer settings of surm-* and lora by module suffix (PEFT's rank_pattern); the budget "
            'solver sizes the other layers, e.g. {"attention.self.value": {"block_size": 32}}'
        },
    )
    targets: list[str] | str | None = field(
        default=None, metadata={"help": "module-name suffixes to adapt, or all-linear (default: the model's preset)"}
    )
    alpha: float = field(default=1.0, metadata={"help": "SURM lora-mode scale"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the SURM/LoRA update's input (lora_dropout)"})
    init: str = field(
        default="zero",
        metadata={
            "help": "SURM/LoRA update start: zero (exactly the pretrained model) or noise (small draws, for studies "
            "of the init)",
            "choices": INITS,
        },
    )
    product: str = field(
        default="auto",
        metadata={"help": "how SURM computes S x: fft, dense (S folded into W) or auto", "choices": PRODUCTS},
    )
    epochs: int = field(default=1, metadata={"help": "passes over the training data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    batch_size: int = field(default=32, metadata={"help": "examples per step and process"})
    eval_batch_size: int = field(default=64, metadata={"help": "examples per evaluation batch"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    lr: float | None = field(
        default=None, metadata={"help": "learning rate of the method's parameters (default: the method's)"}
    )
    head_lr: float = field(default=HEAD_LR, metadata={"help": "learning rate of the classifier head"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "fraction of steps spent warming up"})
    schedule: str = field(
        default="cosine", metadata={"help": "learning-rate schedule after the warm-up", "choices": SCHEDULES}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "autocast precision: auto (bf16 for decoder tasks on a GPU that has it, else none), "
            "no (full float32), fp16 or bf16",
            "choices": PRECISIONS,
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the backward pass (less memory, ~1.3x the time)"}
    )
    length_bucketing: bool | None = field(
        default=None,
        metadata={
            "help": "text: batch rows of similar length together (less padding); default: on for decoder "
            "(instruction) tasks, off for classification"
        },
    )
    seed: int = field(default=0, metadata={"help": "random seed (data sampling, initialisation, order)"})
    data_dir: str | None = field(default=None, metadata={"help": "local data: GLUE TSV folder, saved dataset"})
    shots_per_class: int | None = field(
        default=None, metadata={"help": "few-shot: keep this many training examples per class"}
    )
    train_fraction: float | None = field(
        default=None, metadata={"help": "keep this fraction of the training examples (stratified)"}
    )
    max_train: int | None = field(default=None, metadata={"help": "cap on training examples"})
    max_eval: int | None = field(default=None, metadata={"help": "cap on evaluation examples"})
    max_length: int = field(default=128, metadata={"help": "text: tokens per example"})
    image_size: int | None = field(default=None, metadata={"help": "image: input resolution (default: the model's)"})
    pretrained: bool | None = field(
        default=None,
        metadata={"help": "real weights (missing ones an error) or random ones (default: real where available)"},
    )
    text_column: str | None = field(default=None, metadata={"help": "csv:/tsv: tasks: the text column"})
    text_pair_column: str | None = field(default=None, metadata={"help": "csv:/tsv: tasks: the second text of a pair"})
    label_column: str | None = field(default=None, metadata={"help": "csv:/tsv: tasks: the label column"})
    runs_dir: str = field(default="runs", metadata={"help": "where run directories go"})
    name: str | None = field(default=None, metadata={"help": "run name (default: method-backbone-task)"})
    log_with: str | None = field(
        default=None, metadata={"help": "also log to this experiment tracker", "choices": LOGGERS}
    )
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if a GPU is present"})
    log_every: int = field(default=10, metadata={"help": "write training metrics every this many steps"})
    checkpoint_every: int = field(
        default=50, metadata={"help": "optimiser steps between checkpoints (0: only when the run ends or stops)"}
    )
    eval_every: int = field(
        default=0, metadata={"help": "optimiser steps between evaluations (0: at each epoch's end); always at the end"}
    )

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"unknown mixed_precision {self.mixed_precision!r}; known: {', '.join(PRECISIONS)}")
        counts = ("epochs", "batch_size", "eval_batch_size", "grad_accum", "log_every", "max_length")
        optional_counts = ("max_steps", "shots_per_class", "max_train", "max_eval", "image_size")
        for name in counts + optional_counts:
            value = getattr(self, name)
            if value is None and name in optional_counts:
                continue
            if not is_whole(value) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if not (value is None and name == "lr") and not (is_real(value) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (is_real(value) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (is_real(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.train_fraction is not None and not (is_real(self.train_fraction) and 0 < self.train_fraction <= 1):
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction!r}")
        if not (is_real(self.alpha) and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")
        if not (is_real(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if not is_whole(value) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data, "training options")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The config in JSON file ``path`` (an object of fields; absent ones keep their defaults), or the
        training options of a run's ``config.json``."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f'{path} must hold a JSON object of training options, e.g. {{"epochs": 2}}')
        if isinstance(data.get("train"), dict) and "task" in data:  # a run's config.json: train it again
            data = data["train"]
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def run_name(self) -> str:
        """``name``, or method-backbone-task; a data file's task by its file name (``csv-reviews.csv``), not
        its whole path."""
        kind, _, path = self.task.partition(":")
        task = f"{kind}-{Path(path).name}" if kind in ("folder", "csv", "tsv") and path else self.task
        return self.name or f"{self.method}-{self.backbone}-{task}".replace("/", "-")
