"""Everything a trained run hands on, in one folder another process (or tool) loads without the lab's runs.

``export_run(run, dest)`` writes, from the run's ``final/`` (or ``best/``) weights:

- ``run_config.json`` (the run's ``config.json``: training options, task, labels) and ``labels.json``;
- ``adapter/``: the method's portable files, once each: surmlab's adapter and model card for SURM runs
  (``surmlab.from_pretrained`` loads it), PEFT's own files for the PEFT baselines, the trained tensors
  (``trainable.safetensors``) for the other methods;
- ``merged/``: the whole model with the update folded into its weights (``model.safetensors``, loaded
  into the rebuilt backbone; a Hugging Face model also gets its ``config.json`` and tokenizer), where
  the method folds (lora-mode SURM, PEFT's mergeable methods, methods that train existing weights);
- ``lora/``: a PEFT LoRA adapter (``surmlab.export_lora``) of a lora-mode SURM run.

``load_export(dest, kind)`` rebuilds the model from such a folder alone; ``surmlab.predict.classify``
then predicts with it exactly as with the run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from .export import from_pretrained, save_pretrained
from .fileio import write_json
from .lora_export import export_lora
from .models import Backbone
from .predict import load_run
from .runs import RunConfig, RunDir, load_weights
from .train import build_backbone, build_method
from .tuner import CONFIG_FILE, surm_layers, unload

KINDS = ("adapter", "merged", "lora")
RUN_CONFIG = "run_config.json"
LABELS = "labels.json"
MERGED_WEIGHTS = "model.safetensors"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Exported:
    """What ``export_run`` wrote: the folder, the kinds it holds, its files, and why a kind is absent."""

    folder: Path
    kinds: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.folder.name}: {', '.join(self.kinds) or 'nothing'}"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def _set_labels(model: nn.Module, names: list[str] | None) -> None:
    """The run's class names on a transformers-style config, so the adapter files record them."""
    config = getattr(model, "config", None)
    if names and config is not None and hasattr(config, "id2label"):
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _write_adapter(model: nn.Module, weights: Path, folder: Path, saved: RunConfig) -> None:
    if surm_layers(model):
        save_pretrained(model, folder, command=_command(saved))
        meta = json.loads((folder / CONFIG_FILE).read_text())
        if meta.get("labels") is None and saved.task.label_names:  # a backbone with no config for id2label
            meta["labels"] = saved.task.label_names
            write_json(folder / CONFIG_FILE, meta)
    elif all((weights / f).is_file() for f in PEFT_FILES):
        folder.mkdir(parents=True, exist_ok=True)
        for name in PEFT_FILES:
            shutil.copyfile(weights / name, folder / name)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights / "trainable.safetensors", folder / "trainable.safetensors")


def _command(saved: RunConfig) -> str:
    from .command import command_line

    return command_line(saved.train)


def _merge(model: nn.Module, backbone_keys: set[str]) -> tuple[nn.Module | None, str]:
    """The model with its update folded in, or None and why not."""
    if surm_layers(model):
        if any(layer.mode != "lora" for layer in surm_layers(model).values()):
            return None, "merged: adapter-mode SURM adds layers no weight can hold"
        return unload(model, merge=True), ""
    if _is_peft(model):
        try:
            return model.merge_and_unload(), ""
        except (AttributeError, ValueError, NotImplementedError) as err:
            return None, f"merged: PEFT cannot fold this method ({err})"
    if set(model.state_dict()) != backbone_keys:
        return None, "merged: the method adds modules to the backbone; its adapter is the export"
    return model, ""


def export_run(
    run_dir: str | Path, dest: str | Path, *, best: bool = False, kinds: tuple[str, ...] = KINDS
) -> Exported:
    """Write the run's exports (``kinds`` of :data:`KINDS` that apply) into ``dest`` (created; must not
    hold files already)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown export kinds {unknown}; choose from {', '.join(KINDS)}")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty; export into a new folder")
    run = RunDir(run_dir)
    backbone, prepared, saved = load_run(run_dir, best)
    model = prepared.model
    weights = run.best_dir if best else run.final_dir
    _set_labels(model, saved.task.label_names)
    out = Exported(dest)
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / RUN_CONFIG, saved.to_dict())
    write_json(dest / LABELS, {"labels": saved.task.label_names, "task": saved.task.name,
                               "metric": saved.task.metric, "weights": "best" if best else "final"})  # fmt: skip
    if "adapter" in kinds:
        _write_adapter(model, weights, dest / "adapter", saved)
        out.kinds.append("adapter")
    if "lora" in kinds:
        layers = surm_layers(model)
        if layers and all(layer.mode == "lora" for layer in layers.values()):
            export_lora(model, dest / "lora", verbose=False)
            out.kinds.append("lora")
        elif _is_peft(model) and saved.train.method == "lora":
            out.notes.append("lora: the adapter/ folder already is PEFT's LoRA adapter")
        else:
            out.notes.append("lora: only lora-mode SURM runs export as a PEFT LoRA adapter")
    if "merged" in kinds:
        bare = build_backbone(saved.train, saved.task.num_labels)
        merged, why = _merge(model, set(bare.model.state_dict()))
        if merged is None:
            out.notes.append(why)
        else:
            (dest / "merged").mkdir()
            save_model(merged, str(dest / "merged" / MERGED_WEIGHTS))
            if hasattr(merged, "save_pretrained") and hasattr(merged, "config"):
                merged.config.save_pretrained(dest / "merged")
            if backbone.tokenizer is not None and hasattr(backbone.tokenizer, "save_pretrained"):
                backbone.tokenizer.save_pretrained(dest / "merged")
            out.kinds.append("merged")
    out.files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    return out


def load_export(folder: str | Path, kind: str = "adapter") -> tuple[Backbone, nn.Module, RunConfig]:
    """The model an ``export_run`` folder holds (``kind``: adapter, merged or lora), ready to ``classify``."""
    folder = Path(folder)
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}; choose from {', '.join(KINDS)}")
    if not (folder / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not an export (no {RUN_CONFIG})")
    if not (folder / kind).is_dir():
        raise FileNotFoundError(f"{folder} holds no {kind}/ export")
    saved = RunConfig.from_dict(json.loads((folder / RUN_CONFIG).read_text()))
    backbone = build_backbone(saved.train, saved.task.num_labels)
    sub = folder / kind
    if kind == "merged":
        load_model(backbone.model, str(sub / MERGED_WEIGHTS))
        model = backbone.model
    elif kind == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(backbone.model, sub)
    elif (sub / CONFIG_FILE).is_file():
        model = from_pretrained(backbone.model, sub)
    elif (sub / "trainable.safetensors").is_file():
        model = build_method(saved.train, backbone).model
        load_weights(model, sub)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(backbone.model, sub)
    return backbone, model.eval(), saved
