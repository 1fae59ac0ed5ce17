"""Circulant-diagonal chains (CDVFT, IJCAI 2025, arXiv 2505.00580): per ``n x n`` block,

    S_block = C(c_0) diag(a_1) C(c_1) diag(a_2) C(c_2) ... diag(a_{m-1}) C(c_{m-1}),

``m`` circulants with ``m - 1`` diagonals between them: ``(2m - 1) n`` numbers per block, and ``m = 1`` is the
circulant family. Any ``n x n`` matrix is such a product for a long enough chain (Huhtanen and Peramaki), so
``m`` trades parameters for expressiveness while the product stays ``O(m n log n)`` per block.

A rectangular layer is a grid of ``(out/n) x (in/n)`` blocks, each with its own chain. The product runs on
real FFTs: each circulant is a multiply in the spectrum, each diagonal one in the signal, and the outermost
circulant and the sum over a block row are taken in the spectrum, so each block row costs one inverse FFT.
A one-factor chain is the circulant family's product itself (``BlockConvolutionProduct``).

The inner factors are stored as offsets from the identity: the parameters are ``c_0`` and, for ``j >= 1``,
``a_j - 1`` and ``sqrt(n) (c_j - e_0)``. All start at zero, so ``S = 0`` with the inner factors identities and
the gradient of ``c_0`` the circulant family's; weight decay pulls the inner factors towards the identity
rather than collapsing the chain to zero. The ``sqrt(n)`` puts both inner factors on one scale: an offset
of size ``s`` per entry moves a diagonal's entries, and a circulant's eigenvalues, by about ``s``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.fft import irfft, rfft

from .base import (
    Shape,
    Structure,
    blocks_to_matrix,
    circulant_index,
    common_divisors,
    fft_dtype,
    fp32_island,
    positive_int,
    resolve_block_size,
)
from .convolution import BlockConvolutionProduct

DEFAULT_CHAIN_LENGTH = 2  # the shortest chain that is not a circulant


def chain_length_limit(n: int) -> int:
    """The longest useful chain: beyond it ``(2m - 1) n`` exceeds the ``n^2`` entries of the block."""
    return (n + 1) // 2


class CirculantChain(Structure):
    family = "circulant_chain"
    default_lr = 2e-3  # the circulant family's (a one-factor chain is one); not tuned for longer chains

    def __init__(
        self, in_features: int, out_features: int, block_size: int | None = None, chain_length: int | None = None
    ) -> None:
        super().__init__(in_features, out_features)
        hyper = self.resolve_hyper(in_features, out_features, block_size=block_size, chain_length=chain_length)
        n, m = hyper["block_size"], hyper["chain_length"]
        self.block_size, self.chain_length = n, m
        self.grid = (out_features // n, in_features // n)
        # kernels[:, :, 0] is c_0, kernels[:, :, j] is sqrt(n) (c_j - e_0) and diagonals[:, :, j - 1] is a_j - 1:
        # all zero, so S = 0 and the inner factors start as identities.
        self.kernels = nn.Parameter(torch.zeros(*self.grid, m, n))
        self.diagonals = nn.Parameter(torch.zeros(*self.grid, m - 1, n)) if m > 1 else None

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        block_size, chain_length = hyper.pop("block_size", None), hyper.pop("chain_length", None)
        if hyper:
            raise ValueError(f"circulant_chain takes block_size and chain_length, got {sorted(hyper)}")
        n = resolve_block_size(in_features, out_features, block_size)
        limit = chain_length_limit(n)
        m = min(DEFAULT_CHAIN_LENGTH, limit) if chain_length is None else positive_int("chain_length", chain_length)
        if m > limit:
            raise ValueError(
                f"chain_length={m} is out of range for block_size={n}: 1..{limit} (a longer chain has more "
                f"numbers, (2m - 1) n, than the n x n block it forms)"
            )
        return {"block_size": n, "chain_length": m}

    @classmethod
    def count(cls, in_features: int, out_features: int, block_size: int, chain_length: int) -> int:  # type: ignore[override]
        blocks = (out_features // block_size) * (in_features // block_size)
        return blocks * (2 * chain_length - 1) * block_size

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        # Larger blocks first: at an equal count, fewer and bigger blocks mix more of the input.
        for n in reversed(common_divisors([d for shape in shapes for d in shape])):
            for m in range(1, chain_length_limit(n) + 1):
                yield {"block_size": n, "chain_length": m}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "chain_length": self.chain_length}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = self.block_size, self.chain_length
        (p, q) = self.grid
        with fp32_island(x):
            dtype = fft_dtype(x, self.kernels)
            kernels = self.kernels.to(dtype)
            if m == 1:
                y = BlockConvolutionProduct.apply(x, kernels[:, :, 0], n)
                return y.to(x.dtype)
            diagonals = self.diagonals.to(dtype)
            kf = rfft(kernels, dim=-1)  # (p, q, m, n // 2 + 1)
            kf = torch.cat([kf[:, :, :1], kf[:, :, 1:] / math.sqrt(n) + 1], dim=2)  # the spectrum of e_0: ones
            diagonals = diagonals + 1
            zf = rfft(x.reshape(-1, 1, q, n).to(dtype), dim=-1) * kf[:, :, m - 1]  # (M, p, q, F)
            for j in range(m - 1, 0, -1):  # diag(a_j), then C(c_{j-1})
                zf = rfft(irfft(zf, n=n) * diagonals[:, :, j - 1], dim=-1) * kf[:, :, j - 1]
            y = irfft(zf.sum(dim=2), n=n)  # (M, p, n)
        return y.reshape(*x.shape[:-1], p * n).to(x.dtype)

    def dense(self) -> torch.Tensor:
        n = self.block_size
        circulants = self.kernels[..., circulant_index(n, n, self.kernels.device)]  # (p, q, m, n, n)
        eye = torch.eye(n, dtype=circulants.dtype, device=circulants.device)
        blocks = circulants[:, :, 0]
        for j in range(1, self.chain_length):
            inner = circulants[:, :, j] / math.sqrt(n) + eye
            blocks = (blocks * (1 + self.diagonals[:, :, j - 1]).unsqueeze(-2)) @ inner
        return blocks_to_matrix(blocks)

    def activation_flops(self, tokens: int) -> float:
        (p, q), n, m = self.grid, self.block_size, self.chain_length
        fft = 2.5 * n * math.log2(max(n, 2))
        return tokens * (q * fft + p * q * (m - 1) * (2 * fft + 5.0 * n) + 4.0 * p * q * (n // 2 + 1) + p * fft)
