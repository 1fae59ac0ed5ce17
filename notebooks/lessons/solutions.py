"""Solutions to the lessons' exercises. Try each exercise first: the check cells tell you when you are right."""

from __future__ import annotations

import numpy as np

# -- Lesson 1: structured matrices -------------------------------------------------------------------------


def circulant_matvec(c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exercise 1: C(c) v is the circular convolution of c and v; the FFT turns it into a product."""
    return np.fft.ifft(np.fft.fft(c) * np.fft.fft(v)).real


kronecker_rank = 6  # Exercise 2: rank(A ⊗ B) = rank(A) rank(B) = 3 * 2


def toeplitz_parameters(n: int) -> int:
    """Exercise 3: one number per diagonal, and an n x n matrix has 2n - 1 diagonals."""
    return 2 * n - 1


LESSON1 = {
    "lesson1_circulant_matvec": circulant_matvec,
    "lesson1_kronecker_rank": kronecker_rank,
    "lesson1_toeplitz_parameters": toeplitz_parameters,
}

# -- Lesson 2: injection and budgets -----------------------------------------------------------------------

# Exercise 1: counts are 12 * 384^2 / b for b dividing 384; b = 16 gives 110,592 (too many), b = 24 gives 73,728.
block_size_for_100k = 24
# Exercise 2: the updates do not depend on the head: 36,864, plus the head's 384 * 3 + 3 = 1,155.
trainable_with_3_classes = 36_864 + 384 * 3 + 3
# Exercise 3: q is rows 0-191, k rows 192-383, v rows 384-575; the preset adapts q and v.
untouched_rows = range(192, 384)

LESSON2 = {
    "lesson2_block_size": block_size_for_100k,
    "lesson2_trainable": trainable_with_3_classes,
    "lesson2_untouched_rows": untouched_rows,
}
SOLUTIONS = {**LESSON1, **LESSON2}
