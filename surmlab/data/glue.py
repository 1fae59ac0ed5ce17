"""GLUE tasks from the official TSV files: official train, eval = the official dev file.

The folder is ``data_dir``, ``$SURMLAB_GLUE_DIR`` or the project's own ``data/glue``; a task's files
sit in ``<root>/<CoLA>``, ``<root>/<cola>`` or ``<root>`` itself.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import datasets

from .schema import Loaded, Spec, missing_column

# The GLUE TSVs shipped in the project's ``data/glue`` folder (see its README for sources and row counts).
PROJECT_GLUE_DIR = Path(__file__).resolve().parents[2] / "data" / "glue"


def default_glue_dir() -> Path | None:
    """``$SURMLAB_GLUE_DIR``, else the project's own ``data/glue`` (present in a source checkout)."""
    env = os.environ.get("SURMLAB_GLUE_DIR")
    if env:
        return Path(env)
    return PROJECT_GLUE_DIR if PROJECT_GLUE_DIR.is_dir() else None


def task_folder(spec: Spec, root: Path) -> Path | None:
    """The folder holding this task's TSVs: ``root/<CoLA>``, ``root/<cola>`` or ``root`` itself."""
    for candidate in (root / spec.glue.folder, root / spec.hub.config, root):
        if (candidate / "train.tsv").exists() or (candidate / spec.glue.dev_file).exists():
            return candidate
    return None


def files_present(spec: Spec, folder: Path) -> dict[str, bool]:
    """For the train and dev file of ``spec``: whether ``folder`` has it."""
    return {f: (folder / f).exists() for f in ("train.tsv", spec.glue.dev_file)}


def _read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _read_split(spec: Spec, path: Path) -> tuple[datasets.Dataset, int]:
    """Rows of one GLUE TSV file as text / text_pair / label; rows with a wrong field count are skipped."""
    tsv = spec.glue
    rows = _read_tsv(path)
    if tsv.header:
        header, rows = rows[0], rows[1:]
        for column in (tsv.text, tsv.pair, tsv.label):
            if column is not None and column not in header:
                raise missing_column(column, header, str(path))
        pos = {c: header.index(c) for c in (tsv.text, tsv.pair, tsv.label) if c is not None}
        width = len(header)
    else:
        pos = {c: c for c in (tsv.text, tsv.pair, tsv.label) if c is not None}
        width = max(len(r) for r in rows)
    good = [r for r in rows if len(r) == width]

    def label(value: str) -> float | int:
        if spec.num_labels == 1:
            return float(value)
        if tsv.label_map is not None:
            return tsv.label_map[value]
        return int(value)

    data: dict[str, list] = {"text": [r[pos[tsv.text]] for r in good]}
    if tsv.pair is not None:
        data["text_pair"] = [r[pos[tsv.pair]] for r in good]
    data["label"] = [label(r[pos[tsv.label]]) for r in good]
    features = {k: datasets.Value("string") for k in data if k != "label"}
    features["label"] = datasets.Value("float32" if spec.num_labels == 1 else "int64")
    return datasets.Dataset.from_dict(data, features=datasets.Features(features)), len(rows) - len(good)


def load_tsv(spec: Spec, folder: Path) -> Loaded:
    """The task's train.tsv and dev file from ``folder``; malformed rows are counted in the description."""
    files = {"train": folder / "train.tsv", "eval": folder / spec.glue.dev_file}
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{spec.name}: {', '.join(missing)} missing in {folder} (GLUE TSV layout)")
    train, bad_train = _read_split(spec, files["train"])
    eval_, bad_eval = _read_split(spec, files["eval"])
    note = f"{spec.name} from GLUE TSV files in {folder}: official train, eval = official {files['eval'].name}"
    if bad_train or bad_eval:
        note += f" ({bad_train} train / {bad_eval} dev malformed rows skipped)"
    return Loaded(train, eval_, list(spec.label_names) if spec.label_names else None, note)
