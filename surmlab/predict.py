"""Classify new inputs with a trained run: rebuild its backbone and method, load its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .data import Task, make_collate
from .methods import Prepared
from .models import Backbone
from .runs import RunConfig, RunDir, load_weights
from .train import build_backbone, build_method


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
def predict(run_dir: str | Path, inputs: list[str], best: bool = False) -> list[tuple[str, str, float]]:
    """``(input, label, score)`` per input: texts for text backbones, image paths for image ones.
    Score is the softmax probability of the label (the predicted value for regression)."""
    backbone, prepared, saved = load_run(run_dir, best)
    info = saved.task
    task = Task(info.name, backbone.modality, info.num_labels, "", None, None, info.label_names, "")
    if backbone.modality == "image":
        rows = [{"image": Image.open(path), "label": 0} for path in inputs]
    else:
        rows = [{"text": text, "label": 0} for text in inputs]
    batch = make_collate(task, backbone, saved.train.max_length)(rows)
    batch.pop("labels")
    logits = prepared.model(**batch).float()
    if task.num_labels == 1:
        return [(item, "value", float(v)) for item, v in zip(inputs, logits.squeeze(-1), strict=True)]
    probs = logits.softmax(-1)
    names = task.label_names or [str(i) for i in range(task.num_labels)]
    return [(item, names[int(p.argmax())], float(p.max())) for item, p in zip(inputs, probs, strict=True)]
