"""Classify new inputs with a trained run: rebuild its backbone and method, load its weights.

``classify`` is the one place a loaded model turns inputs into class probabilities: ``surmlab predict``,
the app's "Try it" and a reloaded export (``surmlab.run_export.load_export``) all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .data import Task, make_collate
from .methods import Prepared
from .models import Backbone
from .runs import RunConfig, RunDir, load_weights
from .train import build_backbone, build_method


@dataclass(frozen=True)
class Prediction:
    """One input's prediction: the top class and its probability (the value for regression), and the
    probability of every class (empty for regression)."""

    input: str
    label: str
    score: float
    probabilities: dict[str, float]


def load_run(run_dir: str | Path, best: bool = False) -> tuple[Backbone, Prepared, RunConfig]:
    """The run's model with its trained weights (``best``: the best-evaluated checkpoint)."""
    run = RunDir(run_dir)
    if not run.config_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    saved = run.config()
    config = saved.train
    weights = run.best_dir if best else run.final_dir
    if not (weights / "trainable.safetensors").exists():
        raise FileNotFoundError(f"{weights} holds no weights (did the run save any before it ended?)")
    backbone = build_backbone(config, saved.task.num_labels)
    prepared = build_method(config, backbone)
    load_weights(prepared.model, weights)
    prepared.model.eval()
    return backbone, prepared, saved


@torch.no_grad()
def classify(backbone: Backbone, model: nn.Module, saved: RunConfig, inputs: list) -> list[Prediction]:
    """Predictions of ``model`` (built on ``backbone``) for texts, or image paths / PIL images."""
    info = saved.task
    task = Task(info.name, backbone.modality, info.num_labels, "", None, None, info.label_names, "")
    if backbone.modality == "image":
        images = [item if isinstance(item, Image.Image) else Image.open(item) for item in inputs]
        rows = [{"image": image, "label": 0} for image in images]
    else:
        rows = [{"text": str(text), "label": 0} for text in inputs]
    batch = make_collate(task, backbone, saved.train.max_length)(rows)
    batch.pop("labels")
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
    shown = [item if isinstance(item, str) else "(image)" for item in inputs]
    if task.num_labels == 1:
        return [Prediction(s, "value", float(v), {}) for s, v in zip(shown, logits.squeeze(-1), strict=True)]
    probs = logits.softmax(-1)
    names = task.label_names or [str(i) for i in range(task.num_labels)]
    return [
        Prediction(s, names[int(p.argmax())], float(p.max()), {n: float(v) for n, v in zip(names, p, strict=True)})
        for s, p in zip(shown, probs, strict=True)
    ]


def predict_all(run_dir: str | Path, inputs: list, best: bool = False) -> list[Prediction]:
    """``classify`` with the run's own model (``best``: its best checkpoint)."""
    backbone, prepared, saved = load_run(run_dir, best)
    return classify(backbone, prepared.model, saved, inputs)


def predict(run_dir: str | Path, inputs: list[str], best: bool = False) -> list[tuple[str, str, float]]:
    """``(input, label, score)`` per input: texts for text backbones, image paths for image ones.
    Score is the softmax probability of the label (the predicted value for regression)."""
    return [(str(inp), p.label, p.score) for inp, p in zip(inputs, predict_all(run_dir, inputs, best), strict=True)]
