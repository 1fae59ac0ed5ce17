"""Low-displacement-rank family: each block is ``sum_{i<r} C(g_i) Z(h_i)``.

``C(g)`` is circulant (``C[i, j] = g[(i - j) mod n]``) and ``Z(h)`` skew-circulant (``Z[i, j] =
h[i - j]`` for ``i >= j``, ``-h[i - j + n]`` above the diagonal: the ``f``-circulant with ``f = -1``,
diagonalised by ``eta = exp(i pi / n)``, a root of ``x^n + 1``). Such a block ``M`` satisfies
``rank(Z_1 M - M Z_{-1}) <= r``. Both products run on real FFTs: ``Z(h) x`` is the difference of the
two halves of a zero-padded linear convolution, ``C(g) z`` a plain circular one.
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
    resolve_rank,
    split_blocks,
)


def skew_kernel(h: torch.Tensor) -> torch.Tensor:
    """Kernel of ``Z(h)`` as the crop of a circulant of size ``2n``: ``[h_0 .. h_{n-1}, 0, -h_1 .. -h_{n-1}]``."""
    return torch.cat([h, h.new_zeros(*h.shape[:-1], 1), -h[..., 1:]], dim=-1)


class LowDisplacementRank(Structure):
    family = "ldr"

    def __init__(
        self, in_features: int, out_features: int, block_size: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(in_features, out_features)
        hyper = self.resolve_hyper(in_features, out_features, block_size=block_size, rank=rank)
        n, r = hyper["block_size"], hyper["rank"]
        self.block_size, self.rank = n, r
        self.grid = (out_features // n, in_features // n)
        # g = 0 makes S = 0; a random h keeps the gradient with respect to g non-zero.
        self.g = nn.Parameter(torch.zeros(*self.grid, r, n))
        self.h = nn.Parameter(torch.randn(*self.grid, r, n) / math.sqrt(n))

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        block_size, rank = hyper.pop("block_size", None), hyper.pop("rank", None)
        if hyper:
            raise ValueError(f"ldr takes block_size and rank, got {sorted(hyper)}")
        n = resolve_block_size(in_features, out_features, block_size)
        return {"block_size": n, "rank": resolve_rank(rank, 1, n, f"block_size={n}")}

    @classmethod
    def count(cls, in_features: int, out_features: int, block_size: int, rank: int) -> int:  # type: ignore[override]
        return (out_features // block_size) * (in_features // block_size) * 2 * rank * block_size

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        # Larger blocks first: at an equal count, fewer and bigger blocks leave the rank less restricted.
        for n in reversed(common_divisors([d for shape in shapes for d in shape])):
            for r in range(1, n + 1):
                yield {"block_size": n, "rank": r}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "rank": self.rank}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.block_size
        with fp32_island(x):
            xf = torch.fft.rfft(split_blocks(x.float(), self.grid[1], n), n=2 * n)  # (..., q, n+1)
            hf = torch.fft.rfft(skew_kernel(self.h.float()), n=2 * n)  # (p, q, r, n+1)
            z = torch.fft.irfft(xf[..., None, :, None, :] * hf, n=2 * n)[..., :n]  # (..., p, q, r, n)
            gf = torch.fft.rfft(self.g.float(), n=n)  # (p, q, r, F)
            yf = torch.einsum("...pqrf,pqrf->...pf", torch.fft.rfft(z, n=n), gf)
            y = torch.fft.irfft(yf, n=n)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dense(self) -> torch.Tensor:
        n, device = self.block_size, self.g.device
        c = self.g[..., circulant_index(n, n, device)]  # (p, q, r, n, n)
        z = skew_kernel(self.h)[..., circulant_index(n, 2 * n, device)]
        return blocks_to_matrix((c @ z).sum(dim=2))

    def activation_flops(self, tokens: int) -> float:
        p, q = self.grid
        n, r = self.block_size, self.rank
        fft_n, fft_2n = 2.5 * n * math.log2(max(n, 2)), 5.0 * n * math.log2(max(2 * n, 2))
        return tokens * (q * fft_2n + p * q * r * (fft_2n + fft_n + 8.0 * n) + p * fft_n)
