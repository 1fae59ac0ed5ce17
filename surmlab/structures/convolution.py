"""Circulant, Toeplitz and symmetric-Toeplitz families: one mechanism, three kernels.

Each ``n x n`` block of these matrices is the top-left crop of a circulant matrix of size ``L``
built from a length-``L`` kernel ``k``: ``block[i, j] = k[(i - j) mod L]``. For a circulant block
``L = n`` and the kernel is the block's first column. A Toeplitz block ``T[i, j] = t[i - j]`` embeds
in a circulant of size ``L = 2n`` with kernel ``[t_0 .. t_{n-1}, 0, t_{-(n-1)} .. t_{-1}]``, so the
product is a zero-padded real FFT convolution followed by a crop. A rectangular layer is a grid of
``(out/n) x (in/n)`` such blocks, each with its own kernel.

The product runs in a custom autograd function: its backward uses the correlation theorem with real
FFTs only (autograd's generic rfft backward goes through a full complex FFT), and it saves the input
``x`` itself rather than its spectrum, which the frozen layer or the previous one keeps alive anyway.
Per frequency the block grid is a small complex matrix: a batched matmul over frequencies for a
real grid, a plain broadcast multiply when the grid has one block row or column.
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
    resolve_block_size,
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
        with fp32_island(x):
            kernel = self.kernel(self.weight.to(fft_dtype(x, self.weight)))
            y = BlockConvolutionProduct.apply(x, kernel, self.block_size)
        return y.to(x.dtype)

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


# -- the product ---------------------------------------------------------------------------------------


def _spectrum(v: torch.Tensor, blocks: int, n: int, L: int) -> torch.Tensor:
    """``(..., blocks * n)`` real ``->`` ``(M, blocks, L // 2 + 1)``: spectra of the zero-padded blocks."""
    return rfft(v.reshape(-1, blocks, n).to(fft_dtype(v)), n=L)


def _frequency_major(a: torch.Tensor) -> torch.Tensor:
    """``(M, blocks, F) -> (F, M, blocks)``, contiguous, for a matmul batched over frequencies."""
    return a.permute(2, 0, 1).contiguous()


def _batched(kf: torch.Tensor) -> bool:
    """A grid with several block rows and columns contracts by ``bmm``; a single row or column by a
    broadcast multiply (no transposes, and its temporary is no larger than the input or output)."""
    return kf.shape[0] > 1 and kf.shape[1] > 1


def _correlate(gt: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """``sum_m gt[f, m, a] conj(xt[f, m, b])`` ``-> (F, p, q)`` as one real batched matmul: a complex
    ``bmm`` with a conjugated operand would copy it batch by batch."""
    (F, _, p), q = gt.shape, xt.shape[-1]
    prod = torch.bmm(torch.view_as_real(gt).flatten(2).transpose(1, 2), torch.view_as_real(xt).flatten(2))
    prod = prod.view(F, p, 2, q, 2)  # [f, a, re/im of g, b, re/im of x]
    real = prod[:, :, 0, :, 0] + prod[:, :, 1, :, 1]
    imag = prod[:, :, 1, :, 0] - prod[:, :, 0, :, 1]
    return torch.complex(real, imag)


class BlockConvolutionProduct(torch.autograd.Function):
    """``x @ S.T`` for ``S`` a grid of blocks ``block_ab[i, j] = kernel[a, b, (i - j) mod L]`` (``i, j < n``)
    given by a ``(p, q, L)`` kernel: ``y_a = crop_n(irfft(sum_b X_b K_ab))``, in fp32 (fp64 operands: fp64)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, n: int) -> torch.Tensor:
        p, q, L = kernel.shape
        kf = rfft(kernel, n=L)  # (p, q, F)
        xf = _spectrum(x, q, n, L)  # (M, q, F)
        if _batched(kf):
            yf = torch.bmm(_frequency_major(xf), kf.permute(2, 1, 0)).permute(1, 2, 0).contiguous()
        else:
            yf = (xf.unsqueeze(1) * kf).sum(dim=2)
        ctx.save_for_backward(x, kf)
        ctx.n, ctx.L = n, L
        return irfft(yf, n=L)[..., :n].reshape(*x.shape[:-1], p * n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        # Correlation theorem: the adjoint of convolving with k is correlating with k (conj(K)).
        x, kf = ctx.saved_tensors
        n, L = ctx.n, ctx.L
        p, q, _ = kf.shape
        gf = _spectrum(grad, p, n, L)  # (M, p, F)
        dx = dk = None
        if _batched(kf):
            gt = _frequency_major(gf)  # (F, M, p)
            if ctx.needs_input_grad[0]:
                kc = torch.conj_physical(kf).permute(2, 0, 1).contiguous()  # (F, p, q)
                dxf = torch.bmm(gt, kc).permute(1, 2, 0).contiguous()
            if ctx.needs_input_grad[1]:
                dkf = _correlate(gt, _frequency_major(_spectrum(x, q, n, L))).permute(1, 2, 0)
        else:
            if ctx.needs_input_grad[0]:
                dxf = (gf.unsqueeze(2) * kf.conj()).sum(dim=1)
            if ctx.needs_input_grad[1]:
                dkf = (gf.unsqueeze(2) * _spectrum(x, q, n, L).conj().unsqueeze(1)).sum(dim=0)
        if ctx.needs_input_grad[0]:
            dx = irfft(dxf, n=L)[..., :n].reshape(x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dk = irfft(dkf, n=L)
        return dx, dk, None
