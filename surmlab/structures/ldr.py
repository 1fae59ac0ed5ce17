"""Low-displacement-rank family: each block is ``sum_{i<r} C(g_i) Z(h_i)``.

``C(g)`` is circulant (``C[i, j] = g[(i - j) mod n]``) and ``Z(h)`` skew-circulant (``Z[i, j] =
h[i - j]`` for ``i >= j``, ``-h[i - j + n]`` above the diagonal: the ``f``-circulant with ``f = -1``,
diagonalised by ``eta = exp(i pi / n)``, a root of ``x^n + 1``). Such a block ``M`` satisfies
``rank(Z_1 M - M Z_{-1}) <= r``. Both products run on real FFTs: ``Z(h) x`` is the difference of the
two halves of a zero-padded linear convolution, ``C(g) z`` a plain circular one.

The activation product loops over the rank, so its temporaries are ``r`` times smaller than the
``(..., p, q, r, n)`` intermediate, and its backward recomputes ``Z(h) x`` instead of saving it: only
``x`` (kept alive by the network anyway) and the small parameter spectra are saved.
"""

from __future__ import annotations

import functools
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
    resolve_block_size,
    resolve_rank,
)

# Below this block size dense() multiplies the gathered matrices (exact and as fast); above, it uses the
# O(n^2 log n + r n^2) displacement formula of ldr_blocks (8x faster for n = 768, r = 8).
DISPLACEMENT_DENSE_MIN_BLOCK = 64


def ldr_blocks(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The ``(..., n, n)`` blocks ``sum_r C(g_r) Z(h_r)`` for ``g, h`` of shape ``(..., r, n)``, without ``r``
    full-size intermediates.

    With ``F`` the DFT, ``D = diag(eta^j)`` and ``eta = exp(i pi / n)``: ``C(g) = F^-1 diag(F g) F`` and
    ``Z(h) = D^-1 F^-1 diag(F D h) F D``, so ``M = F^-1 (Q * K) F D`` where ``K = sum_r (F g_r)(F D h_r)^T``
    and ``Q = F D^-1 F^-1`` is circulant: ``Q[k, l] = (2 / n) / (1 - exp(-i pi (2 ((k - l) mod n) + 1) / n))``.
    """
    real = fft_dtype(g, h)
    return LdrBlocks.apply(g.to(real), h.to(real)).to(torch.promote_types(g.dtype, h.dtype))


class LdrBlocks(torch.autograd.Function):
    """``ldr_blocks`` with a hand-written adjoint: the backward saves only ``g`` and ``h`` (autograd would
    keep two complex ``n x n`` intermediates per block) and costs what the forward costs."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        eta, q = _displacement_constants(g.shape[-1], g.dtype, g.device)
        k = torch.fft.fft(g, dim=-1).transpose(-1, -2) @ torch.fft.fft(h * eta, dim=-1)
        ctx.save_for_backward(g, h)
        return (torch.fft.ifft(torch.fft.fft(q * k, dim=-1), dim=-2) * eta).real

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, h = ctx.saved_tensors
        n = g.shape[-1]
        eta, q = _displacement_constants(n, g.dtype, g.device)
        gf, hf = torch.fft.fft(g, dim=-1), torch.fft.fft(h * eta, dim=-1)  # (..., r, n)
        # Adjoints in reverse order: M = Re(F^-1 A F D), A = Q * K, K = gf^T hf, gf = F g, hf = F (eta h).
        grad_a = torch.fft.ifft(torch.fft.fft(grad * eta.conj(), dim=-2), dim=-1)
        grad_k = q.conj() * grad_a
        grad_gf = (grad_k @ hf.conj().transpose(-1, -2)).transpose(-1, -2)
        grad_hf = gf.conj() @ grad_k
        grad_g = (n * torch.fft.ifft(grad_gf, dim=-1)).real
        grad_h = (n * torch.fft.ifft(grad_hf, dim=-1) * eta.conj()).real
        return grad_g, grad_h


@functools.lru_cache(maxsize=8)
def _displacement_constants(n: int, real: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``eta^j`` and the circulant ``Q`` of ``ldr_blocks``: constants of ``n``, built once (no autograd)."""
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    j = torch.arange(n, device=device, dtype=torch.float64)
    eta = torch.polar(torch.ones_like(j), math.pi * j / n).to(cplx)
    q = ((2.0 / n) / (1 - torch.polar(torch.ones_like(j), -math.pi * (2 * j + 1) / n))).to(cplx)
    return eta, q[circulant_index(n, n, device)]


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
        with fp32_island(x):
            dtype = fft_dtype(x, self.g)
            y = LdrProduct.apply(x, self.g.to(dtype), skew_kernel(self.h.to(dtype)))
        return y.to(x.dtype)

    def dense(self) -> torch.Tensor:
        n = self.block_size
        if n < DISPLACEMENT_DENSE_MIN_BLOCK:  # small blocks: the exact O(r n^3) product costs nothing
            c = self.g[..., circulant_index(n, n, self.g.device)]  # (p, q, r, n, n)
            z = skew_kernel(self.h)[..., circulant_index(n, 2 * n, self.h.device)]
            return blocks_to_matrix((c @ z).sum(dim=2))
        return blocks_to_matrix(ldr_blocks(self.g, self.h))

    def activation_flops(self, tokens: int) -> float:
        p, q = self.grid
        n, r = self.block_size, self.rank
        fft_n, fft_2n = 2.5 * n * math.log2(max(n, 2)), 5.0 * n * math.log2(max(2 * n, 2))
        return tokens * (q * fft_2n + p * q * r * (fft_2n + fft_n + 8.0 * n) + p * fft_n)


class LdrProduct(torch.autograd.Function):
    """``x @ S.T`` for LDR blocks ``sum_r C(g_r) Z(h_r)``; ``skew`` is ``skew_kernel(h)``, ``(p, q, r, 2n)``.

    Per rank: ``z = crop_n(skew (*)_2n x)`` then ``y += g (*)_n z`` (``(*)_L``: circular convolution
    of length ``L``). The backward uses the correlation theorem for both convolutions.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
        p, q, rank, n = g.shape
        gf, hf = rfft(g, n=n), rfft(skew, n=2 * n)
        xf = rfft(x.reshape(-1, 1, q, n).to(g.dtype), n=2 * n)  # (M, 1, q, n + 1)
        yf = 0
        for r in range(rank):
            yf = yf + (LdrProduct._inner(xf, hf[:, :, r], n) * gf[:, :, r]).sum(dim=2)
        ctx.save_for_backward(x, gf, hf)
        ctx.n, ctx.dtype = n, g.dtype
        return irfft(yf, n=n).reshape(*x.shape[:-1], p * n)

    @staticmethod
    def _inner(xf: torch.Tensor, hf_r: torch.Tensor, n: int) -> torch.Tensor:
        """Spectrum (length ``n``) of ``z = Z(h_r) x`` for every block: ``(M, p, q, n // 2 + 1)``."""
        return rfft(irfft(xf * hf_r, n=2 * n)[..., :n], n=n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, gf, hf = ctx.saved_tensors
        (p, q, rank, _), n = gf.shape, ctx.n
        xf = rfft(x.reshape(-1, 1, q, n).to(ctx.dtype), n=2 * n)  # (M, 1, q, n + 1)
        gyf = rfft(grad.reshape(-1, p, 1, n).to(ctx.dtype), n=n)  # (M, p, 1, F)
        need_x, need_g, need_h = ctx.needs_input_grad
        dxf, dgf, dhf = 0, [], []
        for r in range(rank):
            if need_g:
                dgf.append((gyf * LdrProduct._inner(xf, hf[:, :, r], n).conj()).sum(dim=0))
            if need_x or need_h:
                dz = irfft(gyf * gf[:, :, r].conj(), n=n)  # adjoint of the circulant: (M, p, q, n)
                dzf = rfft(dz, n=2 * n)  # zero-padded: adjoint of the crop
                if need_x:
                    dxf = dxf + (dzf * hf[:, :, r].conj()).sum(dim=1)
                if need_h:
                    dhf.append((dzf * xf.conj()).sum(dim=0))
        dx = irfft(dxf, n=2 * n)[..., :n].reshape(x.shape).to(x.dtype) if need_x else None
        dg = irfft(torch.stack(dgf, dim=2), n=n) if need_g else None
        dh = irfft(torch.stack(dhf, dim=2), n=2 * n) if need_h else None
        return dx, dg, dh
