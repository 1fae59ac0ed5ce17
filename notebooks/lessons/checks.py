"""The lessons' check cells: each says whether an exercise's answer is right, and fails with a hint if not.

Every check computes the right answer its own way (a dense matrix built entry by entry, scipy, numpy's
rank), never from the lesson's code, so a check cannot agree with a wrong answer by sharing its mistake.
An answer left as ``None`` prints "not answered yet" and passes, so the lesson still runs top to bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg


class WrongAnswer(AssertionError):
    """A check cell's verdict on a wrong answer: the message says what was expected."""


def _answered(exercise: str, answer: Any) -> bool:
    if answer is None:
        print(f"{exercise}: not answered yet (replace None above, run the cell, then this one)")
        return False
    return True


def _right(exercise: str) -> None:
    print(f"{exercise}: right.")


def lesson1_circulant_matvec(answer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None) -> None:
    exercise = "Exercise 1 (circulant product)"
    if not _answered(exercise, answer):
        return
    rng = np.random.default_rng(1)
    for n in (1, 5, 8, 13):
        c, v = rng.standard_normal(n), rng.standard_normal(n)
        dense = np.array([[c[(i - j) % n] for j in range(n)] for i in range(n)])  # the definition, entry by entry
        got = np.asarray(answer(c, v), dtype=complex)
        if got.shape != (n,) or not np.allclose(got, dense @ v, atol=1e-8):
            raise WrongAnswer(
                f"{exercise}: for n={n} the product differs from the dense C @ v; "
                "hint: the FFT of a circular convolution is the product of the FFTs"
            )
    _right(exercise)


def lesson1_kronecker_rank(answer: float | None) -> None:
    exercise = "Exercise 2 (rank of a Kronecker product)"
    if not _answered(exercise, answer):
        return
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 3)) @ rng.standard_normal((3, 4))  # rank 3
    b = rng.standard_normal((5, 2)) @ rng.standard_normal((2, 5))  # rank 2
    expected = np.linalg.matrix_rank(np.kron(a, b))
    if answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the singular values of A ⊗ B are products")
    _right(exercise)


def lesson1_toeplitz_parameters(answer: Callable[[int], int] | None) -> None:
    exercise = "Exercise 3 (free numbers of a Toeplitz matrix)"
    if not _answered(exercise, answer):
        return
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 10):
        # the dimension of the span of many random Toeplitz matrices (scipy builds them from column and row)
        samples = [scipy.linalg.toeplitz(rng.standard_normal(n), rng.standard_normal(n)).ravel() for _ in range(3 * n)]
        expected = np.linalg.matrix_rank(np.stack(samples))
        if answer(n) != expected:
            raise WrongAnswer(f"{exercise}: toeplitz_parameters({n}) = {answer(n)!r} is not it; hint: count diagonals")
    _right(exercise)


def lesson2_block_size(answer: int | None) -> None:
    exercise = "Exercise 1 (block size for 100k)"
    if not _answered(exercise, answer):
        return
    from surmlab import Target, solve

    plan = solve("circulant", [Target(f"layer{i}", 384, 384) for i in range(12)], 100_000)
    expected = plan.hyper["block_size"]
    if answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: 12 * 384^2 / b must not exceed 100,000")
    _right(exercise)


def lesson2_trainable(answer: int | None) -> None:
    exercise = "Exercise 2 (trainable parameters with a 3-class head)"
    if not _answered(exercise, answer):
        return
    import surmlab
    from surmlab.models import load_backbone

    bb = load_backbone("minilm-l6", 3, pretrained=False)  # the same shapes; no weights needed to count
    surmlab.inject(bb.model, surmlab.SurmConfig(family="circulant", budget="50k"))
    expected = sum(p.numel() for p in bb.model.parameters() if p.requires_grad)
    if answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the updates' count plus 384 x 3 weights and a bias")
    _right(exercise)


def lesson2_untouched_rows(answer: range | None) -> None:
    exercise = "Exercise 3 (rows of qkv the update leaves alone)"
    if not _answered(exercise, answer):
        return
    import timm
    import torch

    import surmlab
    from surmlab.tuner import surm_layers

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2)
    surmlab.inject(vit, surmlab.SurmConfig(family="circulant", budget="20k"))
    layer = surm_layers(vit)["blocks.0.attn.qkv"]
    with torch.no_grad():
        for p in layer.updates.parameters():
            p.normal_()
        zero = (layer.delta_weight().abs().amax(dim=1) == 0).nonzero().flatten().tolist()
    if not isinstance(answer, range) or list(answer) != zero:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the rows are q, then k, then v, 192 each")
    _right(exercise)


def lesson3_paired_interval(answer: Callable[[list[float], list[float]], tuple[float, float]] | None) -> None:
    exercise = "Exercise 1 (paired interval)"
    if not _answered(exercise, answer):
        return
    from scipy import stats

    rng = np.random.default_rng(4)
    for n in (3, 5, 10):
        a = rng.uniform(0.6, 0.8, n)
        b = a - rng.normal(0.01, 0.02, n)
        test = stats.ttest_rel(a, b)  # scipy's paired t-test and its interval, not our formula
        interval = test.confidence_interval(0.95)
        expected = ((interval.low + interval.high) / 2, (interval.high - interval.low) / 2)
        got = answer(list(a), list(b))
        if not np.allclose(got, expected, atol=1e-9):
            raise WrongAnswer(
                f"{exercise}: for {n} seeds got {got}, not the paired interval; hint: take the differences "
                "first, then a t-interval (n - 1 degrees of freedom) on their mean"
            )
    _right(exercise)


def lesson3_seeds_needed(answer: int | None) -> None:
    exercise = "Exercise 2 (seeds for a half-width below 0.005)"
    if not _answered(exercise, answer):
        return
    from scipy import stats

    def half_width(n: int) -> float:
        return stats.t.ppf(0.975, n - 1) * 0.01 / np.sqrt(n)

    expected = next(n for n in range(2, 1000) if half_width(n) < 0.005)
    if answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the t quantile shrinks too as n grows")
    _right(exercise)


def _rows(name: str) -> list[dict[str, Any]]:
    """The rows of the lab's committed cpu record ``docs/results/cpu/<name>.json``."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).resolve().parents[2] / "docs" / "results" / "cpu" / f"{name}.json").read_text())[
        "rows"
    ]


def lesson4_best_psd(answer: str | None) -> None:
    exercise = "Exercise 1 (best family on PSD targets at 1,024 parameters)"
    if not _answered(exercise, answer):
        return
    errors: dict[str, list[float]] = {}
    for row in _rows("approximation"):
        if row["target"] == "psd" and row["params"] == 1024:
            errors.setdefault(row["family"], []).append(row["error"])
    expected = min(errors, key=lambda family: sum(errors[family]) / len(errors[family]))
    if answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the psd table's row for 1024, its smallest value")
    _right(exercise)


def lesson4_weight_updates(answer: set[str] | None) -> None:
    exercise = "Exercise 2 (structure against low rank on real weight updates)"
    if not _answered(exercise, answer):
        return
    expected = {
        row["family"]
        for row in _rows("approximation")
        if row["target"] == "weight_update" and row["family"] != "lowrank" and row["beats_lowrank"]
    }
    if not isinstance(answer, set) or answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the nonzero entries of the weight_update row")
    _right(exercise)


def lesson4_low_resource(answer: set[int] | None) -> None:
    exercise = "Exercise 3 (where surm-circulant is above LoRA)"
    if not _answered(exercise, answer):
        return
    expected = {
        int(row["shots_per_class"])
        for row in _rows("low_resource")
        if row["method"] == "surm-circulant" and row["distinguishable"] and row["vs_baseline"] > 0
    }
    if not isinstance(answer, set) or answer != expected:
        raise WrongAnswer(f"{exercise}: {answer!r} is not it; hint: the rows whose verdict says 'above lora'")
    _right(exercise)
