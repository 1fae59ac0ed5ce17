"""Tasks from the Hugging Face hub, or from a copy of a hub dataset saved with ``save_to_disk``.

Either way the hub's columns are renamed to the lab's schema (:attr:`Hub.columns`) and the
label column is cast to int64 (float32 for regression).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from ..hub import hub_usable
from .schema import Loaded, Spec, missing_column
from .splits import EVAL_FRACTION, SPLIT_SEED, split


def _standardise(spec: Spec, split_: datasets.Dataset, where: str) -> datasets.Dataset:
    hub = spec.hub
    for column in hub.columns:
        if column not in split_.column_names:
            raise missing_column(column, split_.column_names, where)
    split_ = split_.select_columns(list(hub.columns)).rename_columns({k: v for k, v in hub.columns.items() if k != v})
    label_type = "float32" if spec.num_labels == 1 else "int64"
    if split_.features["label"] != datasets.Value(label_type):
        split_ = split_.cast_column("label", datasets.Value(label_type))
    return split_


def _from_hf(spec: Spec, splits: datasets.DatasetDict, where: str, description: str) -> Loaded:
    hub = spec.hub
    for name in (hub.train_split, hub.eval_split):
        if name not in splits:
            raise ValueError(f"{where} has no split {name!r} (needed by {spec.name}); it has: {', '.join(splits)}")
    label_column = next(k for k, v in hub.columns.items() if v == "label")
    feature = splits[hub.train_split].features.get(label_column)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    train = _standardise(spec, splits[hub.train_split], f"{where} [{hub.train_split}]")
    eval_ = _standardise(spec, splits[hub.eval_split], f"{where} [{hub.eval_split}]")
    return Loaded(train, eval_, names, description)


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def load_saved(spec: Spec, path: Path) -> Loaded:
    """A saved copy in the hub's schema; a single saved split is divided by the lab's own split."""
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({spec.hub.train_split: loaded})
        label = next(k for k, v in spec.hub.columns.items() if v == "label")
        strat = None if spec.num_labels == 1 else np.asarray(loaded[spec.hub.train_split][label])
        loaded[spec.hub.train_split], loaded[spec.hub.eval_split] = split(loaded[spec.hub.train_split], strat)
        how = f"one split, divided {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} (seed {SPLIT_SEED})"
    else:
        how = f"splits {spec.hub.train_split}/{spec.hub.eval_split}"
    description = f"{spec.name} from the saved dataset {path} ({how}, {spec.hub.dataset} schema)"
    return _from_hf(spec, loaded, f"saved dataset {path}", description)


def load_hub(spec: Spec, hint: str = "") -> Loaded:
    """Download ``spec``'s dataset; without the hub, an error says which ``data_dir`` would do."""
    hub = spec.hub
    ref = hub.dataset + (f" ({hub.config})" if hub.config else "")
    if not hub_usable():
        other = "an image folder" if spec.modality == "image" else "a folder of GLUE TSV files"
        raise RuntimeError(
            f"task {spec.name} needs the Hugging Face hub (dataset {ref}), which is not reachable here. Pass "
            f"data_dir: a copy saved with datasets' save_to_disk, or {other}{hint}"
        )
    splits = datasets.load_dataset(hub.dataset, hub.config, trust_remote_code=False)  # never a loading script
    description = f"{spec.name} from the hub: {ref}, splits {hub.train_split}/{hub.eval_split}"
    return _from_hf(spec, splits, f"hub dataset {ref}", description)
