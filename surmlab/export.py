"""What is trained leaves the lab: adapter folders with a model card, the Hugging Face hub, PEFT LoRA.

``save_pretrained`` writes ``save_adapter``'s two files plus a ``README.md`` model card;
``from_pretrained`` loads a local folder or a hub repository into a base model; ``push_to_hub`` uploads
the folder ``save_pretrained`` writes. ``export_lora`` (see ``surmlab.lora_export``) writes a PEFT LoRA
adapter that any LoRA serving stack loads.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .fileio import atomic_write
from .tuner import (
    CONFIG_FILE,
    LEGACY_CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    backbone_name,
    label_names,
    load_adapter,
    read_adapter_config,
    save_adapter,
)

CARD_FILE = "README.md"


def base_model_id(model: nn.Module) -> str | None:
    """The hub id or path the base model was loaded from, when transformers recorded one."""
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return str(name) if name else None


def model_card(
    meta: dict[str, Any], *, base_model: str | None = None, metrics: dict[str, float] | None = None, command: str = ""
) -> str:
    """A hub model card: what was adapted and how, what it scored, what trained it and how to load it."""
    config = meta["config"]
    hyper = ", ".join(f"{k}={v}" for k, v in config["hyper"].items()) or "(none)"
    front = ["---", "library_name: surmlab", "tags:", "- surmlab", "- peft", "- structured-matrices"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    targets = config["target_modules"]
    lines = [
        *front,
        "",
        f"# SURM adapter for {meta['backbone']}",
        "",
        f"Structured unrestricted-rank ({config['family']}, {config['mode']} mode) updates trained with surmlab.",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | {meta['backbone']}{f' (`{base_model}`)' if base_model else ''} |",
        f"| family | {config['family']} ({config['mode']} mode, alpha={config['alpha']}) |",
        f"| plan | {hyper} |",
        f"| trainable parameters | {meta.get('trainable_parameters', 0):,} (head included) |",
        *([f"| budget | {meta['budget']:,} for the updates (solved to the plan) |"] if meta.get("budget") else []),
        f"| targets | {', '.join(targets) if isinstance(targets, list) else targets} |",
        f"| saved modules | {', '.join(config['modules_to_save'] or []) or '(none)'} |",
    ]
    if meta.get("labels"):
        lines.append(f"| labels | {', '.join(meta['labels'])} |")
    lines += ["", "## Layers", "", "| layer | shape (out x in) |", "|---|---|"]
    lines += [f"| {name} | {out} x {inp} |" for name, (out, inp) in meta["layers"].items()]
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    if command:
        lines += ["", "## Training command", "", "```bash", command, "```"]
    if base_model:  # a model with a hub id is a transformers one: its backbone name is its class
        build = [
            f"from transformers import {meta['backbone']}",
            "",
            f'base = {meta["backbone"]}.from_pretrained("{base_model}")',
        ]
    else:
        build = [f"base = ...  # the {meta['backbone']} as it was before training"]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import surmlab",
        *build,
        'model = surmlab.from_pretrained(base, "<this folder or hub id>")',
        "```",
        "",
        "The files are surmlab's own (`surm_config.json`, `surm_model.safetensors`), not a PEFT adapter; "
        "`surmlab.export_lora` writes a PEFT LoRA adapter from them.",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(
    model: nn.Module,
    save_directory: str | Path,
    *,
    metrics: dict[str, float] | None = None,
    command: str = "",
    base_model: str | None = None,
) -> Path:
    """``save_adapter`` plus a ``README.md`` model card; ``from_pretrained`` loads the folder back."""
    folder = save_adapter(model, save_directory)
    meta = read_adapter_config(folder)
    card = model_card(meta, base_model=base_model or base_model_id(model), metrics=metrics, command=command)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(card))
    return folder


def _download(repo_id: str, revision: str | None, token: str | bool | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    patterns = [CONFIG_FILE, WEIGHTS_FILE, LEGACY_CONFIG_FILE, LEGACY_WEIGHTS_FILE, CARD_FILE]
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns))
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a valid hub repository id") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder and could not be fetched from the hub ({reason}); "
            "give a folder that surmlab.save_pretrained wrote, or a hub repository id reachable now"
        ) from None


def from_pretrained(
    model: nn.Module,
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    allow_missing_head: bool = False,
) -> nn.Module:
    """Load a surmlab adapter folder, or a hub repository holding one, into ``model`` (see ``load_adapter``);
    the saved label names replace the model's placeholder ones."""
    folder = Path(path_or_repo_id)
    if not folder.exists():
        folder = _download(str(path_or_repo_id), revision, token)
    load_adapter(model, folder, allow_missing_head=allow_missing_head)
    labels = read_adapter_config(folder).get("labels")
    config = getattr(model, "config", None)
    if labels and config is not None and label_names(model) != labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    return model


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    metrics: dict[str, float] | None = None,
    command: str = "",
    base_model: str | None = None,
) -> str:
    """``save_pretrained`` into a temporary folder and upload it to ``repo_id`` (created if missing);
    returns the commit's URL."""
    from huggingface_hub import HfApi

    if not hasattr(model, "surm_config"):
        raise ValueError("model has no SURM layers; call inject() first")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="surmlab-push-") as tmp:
        folder = save_pretrained(model, tmp, metrics=metrics, command=command, base_model=base_model)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"SURM adapter for {backbone_name(model)}",
        )
    return str(getattr(info, "commit_url", info))
