"""Evaluate a trained run on a split of its task: the run's model and columns, the task's metric.

``surmlab evaluate RUN --split eval`` and the app's "Evaluate" both call :func:`evaluate_run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .data import compute_metrics, load_task, make_collate
from .predict import load_run

SPLITS = ("eval", "train")


@dataclass(frozen=True)
class Evaluation:
    """A run's scores on a split: every metric of its task, over ``examples`` rows."""

    run: str
    split: str
    weights: str  # best | final
    examples: int
    metric: str
    metrics: dict[str, float]

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return f"{self.run} ({self.weights} weights) on the {self.split} split, {self.examples:,} examples: {shown}"


@torch.no_grad()
def evaluate_run(
    run_dir: str | Path, split: str = "eval", *, best: bool = False, max_examples: int | None = None
) -> Evaluation:
    """Score the run on ``split`` (``eval``: the task's evaluation split, ``train``: its training split),
    all of it or its first ``max_examples`` rows, read with the run's own task options."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if max_examples is not None and (isinstance(max_examples, bool) or max_examples < 1):
        raise ValueError(f"max_examples must be a whole number of at least 1, got {max_examples!r}")
    backbone, prepared, saved = load_run(run_dir, best)
    config = saved.train
    columns = {
        k: v
        for k, v in (
            ("text_column", config.text_column),
            ("text_pair_column", config.text_pair_column),
            ("label_column", config.label_column),
        )
        if v is not None
    }
    task = load_task(config.task, config.data_dir, seed=config.seed, **columns)
    rows = task.eval if split == "eval" else task.train
    if max_examples is not None:
        rows = rows.select(range(min(max_examples, len(rows))))
    loader = DataLoader(
        rows, batch_size=config.eval_batch_size, collate_fn=make_collate(task, backbone, config.max_length)
    )
    model = prepared.model.eval()
    preds, labels = [], []
    for batch in loader:
        y = batch.pop("labels")
        logits = model(**batch)
        preds.append((logits.squeeze(-1) if task.num_labels == 1 else logits.argmax(-1)).float().cpu())
        labels.append(y.float())
    metrics = compute_metrics(task.metric, torch.cat(preds).numpy(), torch.cat(labels).numpy())
    weights = "best" if best else "final"
    return Evaluation(Path(run_dir).name, split, weights, len(rows), task.metric, metrics)
