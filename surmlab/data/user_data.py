"""Your data: ``folder:<path>`` (one sub-folder per class, optionally inside train/ and test/),
``csv:<path>`` / ``tsv:<path>`` (a file, or a folder with train and test/dev/validation files).

Inputs are bounded (files per folder, bytes and rows per table) and every error names the file and
what to change, never echoing more than a few characters of its content.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .schema import Loaded, image_features, missing_column, short
from .splits import EVAL_FRACTION, SPLIT_SEED, split, split_indices

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EVAL_NAMES = ("test", "dev", "validation", "eval")  # file or folder names of the eval split
MAX_IMAGE_FILES = 2_000_000  # an image folder with more files than this is refused (e.g. "folder:/")
MAX_TABLE_BYTES = 2 * 2**30  # a CSV/TSV file larger than this is refused rather than read into memory
MAX_TABLE_ROWS = 10_000_000


def _image_files(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    found, seen = {}, 0
    for c in classes:
        files = []
        for f in c.rglob("*"):
            seen += 1
            if seen > MAX_IMAGE_FILES:
                raise ValueError(f"{folder} holds more than {MAX_IMAGE_FILES:,} files; point at a dataset folder")
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(f)
        found[c.name] = sorted(files)
    return {k: v for k, v in found.items() if v}


def _find_split_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def load_image_folder(root: Path) -> Loaded:
    """One sub-folder per class, either directly in ``root`` (the lab splits) or inside train/ and test/."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    train_dir = _find_split_dir(root, ("train", "training"))
    eval_dir = _find_split_dir(root, (*EVAL_NAMES, "val", "valid"))
    if train_dir and eval_dir:
        train_files, eval_files = _image_files(train_dir), _image_files(eval_dir)
        names = sorted(train_files)
        extra = sorted(set(eval_files) - set(names))
        if extra:
            raise ValueError(f"{eval_dir} has classes that {train_dir} lacks: {', '.join(extra)}")
        how = f"{train_dir.name}/ and {eval_dir.name}/"
    else:
        train_files, eval_files, names = _image_files(root), None, None
        names = sorted(train_files)
        how = f"stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split (seed {SPLIT_SEED})"
    if len(names) < 2:
        raise ValueError(
            f"{root}: found {len(names)} class folder(s) with images; need one sub-folder per class (>= 2)"
        )

    def build(files: dict[str, list[Path]]) -> datasets.Dataset:
        paths = [str(f) for c in names for f in files.get(c, [])]
        labels = [i for i, c in enumerate(names) for _ in files.get(c, [])]
        return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=image_features())

    if eval_files is None:
        full = build(train_files)
        train, eval_ = split(full, np.asarray(full["label"]))
    else:
        train, eval_ = build(train_files), build(eval_files)
    return Loaded(train, eval_, names, f"image folder {root} ({len(names)} classes): {how}")


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    """One CSV/TSV file, bounded in size and rows; every failure names the file, never its content."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; tables up to {MAX_TABLE_BYTES:,} bytes are read")
    if size == 0:
        raise ValueError(f"{path} is empty: give a header row and at least one row per class")
    kwargs = {"sep": sep, "quoting": csv.QUOTE_NONE} if sep == "\t" else {"sep": sep}
    try:
        frame = pd.read_csv(path, encoding="utf-8", nrows=MAX_TABLE_ROWS + 1, **kwargs)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (undecodable byte at offset {err.start}); save as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds no table (no header row)") from None
    except pd.errors.ParserError as err:
        kind = "TSV" if sep == "\t" else "CSV"
        raise ValueError(f"{path} cannot be parsed as {kind}: {short(err, 160)}") from None
    if frame.empty:
        raise ValueError(f"{path} has a header but no rows")
    if len(frame) > MAX_TABLE_ROWS:
        raise ValueError(f"{path} has more than {MAX_TABLE_ROWS:,} rows; subsample it first")
    return frame


def _table_labels(train: pd.Series, eval_: pd.Series) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Integer class ids (strings and non-contiguous ints are mapped) or floats for a regression target."""
    both = pd.concat([train, eval_])
    if pd.api.types.is_float_dtype(both) and not np.all(np.mod(both.to_numpy(), 1) == 0):
        return train.to_numpy("float32"), eval_.to_numpy("float32"), None
    values = sorted(both.unique().tolist())
    if pd.api.types.is_numeric_dtype(both) and values == list(range(len(values))):
        return train.to_numpy("int64"), eval_.to_numpy("int64"), [str(v) for v in values]
    index = {v: i for i, v in enumerate(values)}
    to_ids = lambda s: s.map(index).to_numpy("int64")  # noqa: E731
    return to_ids(train), to_ids(eval_), [str(v) for v in values]


def _check_classes(path: Path, labels: pd.Series) -> None:
    """The lab's own split needs two examples of every class: one to train on, one to evaluate."""
    counts = labels.value_counts()
    single = [str(c) for c, n in counts.items() if n < 2]
    if single:
        shown = ", ".join(short(c) for c in single[:5]) + (", ..." if len(single) > 5 else "")
        raise ValueError(
            f"{path}: {len(single)} class(es) with a single example ({shown}); each class needs at least 2 "
            "for the train/eval split (or give train and test files)"
        )


def load_table(path: Path, sep: str, text: str, pair: str | None, label: str) -> Loaded:
    """A CSV/TSV file (the lab splits) or a folder with a train file and a test/dev/validation file;
    string or integer labels are classes, fractional floats a regression target."""
    ext = "tsv" if sep == "\t" else "csv"
    if path.is_dir():
        train_file = path / f"train.{ext}"
        eval_file = next((path / f"{n}.{ext}" for n in EVAL_NAMES if (path / f"{n}.{ext}").exists()), None)
        if not train_file.exists() or eval_file is None:
            raise FileNotFoundError(f"{path} needs train.{ext} and one of {'/'.join(EVAL_NAMES)}.{ext}")
        frames = [_read_table(train_file, sep), _read_table(eval_file, sep)]
        how = f"{train_file.name} / {eval_file.name}"
    elif path.exists():
        frames = [_read_table(path, sep)]
        how = f"stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split (seed {SPLIT_SEED})"
    else:
        raise FileNotFoundError(f"{path} does not exist")
    for frame in frames:
        for column in (text, pair, label):
            if column is not None and column not in frame.columns:
                raise missing_column(column, list(frame.columns), str(path))
    unlabelled = [int(f[label].isna().sum()) for f in frames]
    if any(unlabelled):
        counts = ", ".join(f"{n} of {len(f)}" for n, f in zip(unlabelled, frames, strict=True))
        raise ValueError(
            f"{path}: rows without a {label!r} value ({counts}); fill or remove them (nothing is dropped silently)"
        )
    if len(frames) == 1:
        frame = frames[0]
        ids, _, names = _table_labels(frame[label], frame[label].iloc[:0])
        if names is not None:
            _check_classes(path, frame[label])
        train_idx, eval_idx = split_indices(len(frame), None if names is None else ids)
        frames = [frame.iloc[train_idx], frame.iloc[eval_idx]]
    y_train, y_eval, names = _table_labels(frames[0][label], frames[1][label])
    if names is not None and len(names) < 2:
        raise ValueError(
            f"{path}: column {label!r} has one class ({short(names[0])}); a classifier needs at least two "
            "(use float labels for a regression target)"
        )

    def build(frame: pd.DataFrame, y: np.ndarray) -> datasets.Dataset:
        data = {"text": frame[text].fillna("").astype(str).tolist()}
        if pair is not None:
            data["text_pair"] = frame[pair].fillna("").astype(str).tolist()
        data["label"] = y
        return datasets.Dataset.from_dict(data)

    return Loaded(build(frames[0], y_train), build(frames[1], y_eval), names, f"{ext.upper()} {path}: {how}")
