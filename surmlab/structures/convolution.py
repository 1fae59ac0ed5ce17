"""Circulant, Toeplitz and symmetric-Toeplitz families: one mechanism, three kernels.

Each ``n x n`` block of these matrices is the top-left crop of a circulant matrix of size ``L``
built from a length-``L`` kernel ``k``: ``block[i, j] = k[(i - j) mod L]``. For a circulant block
``L = n`` and the kernel is the block's first column. A Toeplitz block ``T[i, j] = t[i - j]`` embeds
in a circulant of size ``L = 2n`` with kernel ``[t_0 .. t_{n-1}, 0, t_{-(n-1)} .. t_{-1}]``, so the
product is a zero-padded real FFT convolution followed by a crop. A rectangular layer is a grid of
``(out/n) x (in/n)`` such blocks, each with its own kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .base import (
    Shape,
    Structure,
    blocks_to_matrix,
    circulant_index,
    common_divisors,
    fp32_island,
    resolve_block_size,
    split_blocks,
)


class BlockConvolution(Structure):
    """Shared machinery; subclasses say how many numbers a block has and how they form the kernel."""

    def __init__(self, in_features: int, out_features: int, block_size: int | None = None) -> None:
        super().__init__(in_features, out_features)
        n = resolve_block_size(in_features, out_features, block_size)
        self.block_size = n
        self.grid = (out_features // n, in_features // n)
        self.weight = nn.Parameter(torch.zeros(*self.grid, self.block_numbers(n)))

    # -- what a subclass defines ---------------------------------------------------------------
    @staticmethod
    def block_numbers(n: int) -> int:
        raise NotImplementedError

    @staticmethod
    def period(n: int) -> int:
        """``L``: size of the circulant whose crop is one block."""
        raise NotImplementedError

    @staticmethod
    def kernel(weight: torch.Tensor) -> torch.Tensor:
        """``(..., block_numbers) -> (..., L)``."""
        raise NotImplementedError

    # -- hyper-parameters -----------------------------------------------------------------------
    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        block_size = hyper.pop("block_size", None)
        if hyper:
            raise ValueError(f"{cls.family} takes only block_size, got {sorted(hyper)}")
        return {"block_size": resolve_block_size(in_features, out_features, block_size)}

    @classmethod
    def count(cls, in_features: int, out_features: int, block_size: int) -> int:  # type: ignore[override]
        return (out_features // block_size) * (in_features // block_size) * cls.block_numbers(block_size)

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        for n in common_divisors([d for shape in shapes for d in shape]):
            yield {"block_size": n}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"block_size": self.block_size}

    # -- products ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, L = self.block_size, self.period(self.block_size)
        with fp32_island(x):
            xf = torch.fft.rfft(split_blocks(x.float(), self.grid[1], n), n=L)  # (..., q, F)
            kf = torch.fft.rfft(self.kernel(self.weight.float()), n=L)  # (p, q, F)
            yf = torch.einsum("...qf,pqf->...pf", xf, kf)
            y = torch.fft.irfft(yf, n=L)[..., :n]
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dense(self) -> torch.Tensor:
        n = self.block_size
        idx = circulant_index(n, self.period(n), self.weight.device)
        return blocks_to_matrix(self.kernel(self.weight)[..., idx])

    def activation_flops(self, tokens: int) -> float:
        p, q = self.grid
        L = self.period(self.block_size)
        fft = 2.5 * L * math.log2(max(L, 2))
        return tokens * ((p + q) * fft + 4.0 * p * q * (L // 2 + 1))


class Circulant(BlockConvolution):
    """``C[i, j] = c[(i - j) mod n]``: ``n`` numbers per block."""

    family = "circulant"

    @staticmethod
    def block_numbers(n: int) -> int:
        return n

    @staticmethod
    def period(n: int) -> int:
        return n

    @staticmethod
    def kernel(weight: torch.Tensor) -> torch.Tensor:
        return weight


class Toeplitz(BlockConvolution):
    """``T[i, j] = t[i - j]``: ``2n - 1`` numbers per block, stored as ``[t_0..t_{n-1}, t_{1-n}..t_{-1}]``."""

    family = "toeplitz"

    @staticmethod
    def block_numbers(n: int) -> int:
        return 2 * n - 1

    @staticmethod
    def period(n: int) -> int:
        return 2 * n

    @staticmethod
    def kernel(weight: torch.Tensor) -> torch.Tensor:
        n = (weight.shape[-1] + 1) // 2
        gap = weight.new_zeros(*weight.shape[:-1], 1)
        return torch.cat([weight[..., :n], gap, weight[..., n:]], dim=-1)


class SymmetricToeplitz(BlockConvolution):
    """``T[i, j] = t[|i - j|]``: ``n`` numbers per block."""

    family = "symmetric_toeplitz"

    @staticmethod
    def block_numbers(n: int) -> int:
        return n

    @staticmethod
    def period(n: int) -> int:
        return 2 * n

    @staticmethod
    def kernel(weight: torch.Tensor) -> torch.Tensor:
        gap = weight.new_zeros(*weight.shape[:-1], 1)
        return torch.cat([weight, gap, weight[..., 1:].flip(-1)], dim=-1)
