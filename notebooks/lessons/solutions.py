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

SOLUTIONS = {**LESSON1}
