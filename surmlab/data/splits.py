"""The lab's own train/eval split and the low-resource subsamples, all seeded.

Splits the lab makes itself (one file, no official test set) are stratified 80/20 with the fixed
seed ``SPLIT_SEED``, so every run evaluates on the same rows; a run's ``seed`` only drives
subsampling, and each subsampling step draws from its own stream ``[seed, k]``.
"""

from __future__ import annotations

import datasets
import numpy as np

SPLIT_SEED = 0
EVAL_FRACTION = 0.2


def stratified_indices(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * n_c)`` (at least 1) seeded picks from every class c."""
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(picked))


def split_indices(n: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Train and eval row indices of the lab's own split: stratified when there are class labels."""
    rng = np.random.default_rng(SPLIT_SEED)
    if labels is None:  # regression: plain random split
        eval_idx = np.sort(rng.permutation(n)[: round(EVAL_FRACTION * n)])
    else:
        eval_idx = stratified_indices(labels, EVAL_FRACTION, rng)
    mask = np.zeros(n, bool)
    mask[eval_idx] = True
    return np.flatnonzero(~mask), eval_idx


def split(full: datasets.Dataset, labels: np.ndarray | None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``full`` divided by :func:`split_indices` into train and eval."""
    train_idx, eval_idx = split_indices(len(full), labels)
    return full.select(train_idx), full.select(eval_idx)


def subsample(
    train: datasets.Dataset,
    eval_: datasets.Dataset,
    regression: bool,
    seed: int,
    shots_per_class: int | None,
    train_fraction: float | None,
    max_train: int | None,
    max_eval: int | None,
) -> tuple[datasets.Dataset, datasets.Dataset, list[str]]:
    """Low-resource variants of the splits and a note per step taken; each step draws from its own seeded stream."""
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
            idx = stratified_indices(np.asarray(train["label"]), train_fraction, rng)
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
