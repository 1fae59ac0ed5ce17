"""Sparse-spectrum family (FourierFT, arXiv 2405.03003): ``n`` trainable coefficients at fixed 2-D frequencies.

    S[j, l] = sum_k w_k c_k cos(2 pi (u_k j / out + v_k l / in)),

i.e. ``S`` is the real part of an inverse 2-D DFT whose spectrum is zero except at ``n`` frequencies ``(u_k, v_k)``.
The frequencies are drawn once, from ``seed`` and the layer's shape, among the distinct real frequencies of an
``out x in`` matrix: ``(u, v)`` and ``(-u, -v)`` give the same cosine, so only one of each pair can be drawn
(FourierFT draws among all ``out * in`` entries, and two of its coefficients can then move ``S`` along one
direction). With ``w_k = sqrt(2 / (out in))`` (``1 / sqrt(out in)`` where ``(u, v) = (-u, -v)``) the ``n`` cosine
matrices are orthonormal: the coefficients are coordinates of ``S`` and ``||S||_F = ||c||``.

The product never forms ``S`` (PEFT's FourierFT builds it by a dense ``ifft2`` on every forward):
``S x = Re(sum_k w_k c_k e^{2 pi i u_k j / out} conj(X[v_k]))`` with ``X`` the real FFT of ``x``, so it is an
``rfft`` of ``x`` along ``in``, the ``n`` frequencies moved into the half spectrum along ``out`` and an
``irfft``: ``O((in + out) log + n)`` per token. The middle step is two real sparse (CSR) matmuls of the
frequency-major real and imaginary parts, with at most ``2n`` non-zeros, and its backward two more and two
sampled matmuls: no ``(tokens, n)`` intermediate is formed (a gather/scatter version that formed one was 27x
slower at ``n = 12288``, a complex sparse one about 2x).

The draw is a hash of ``(seed, index)`` written here (splitmix64), so it does not depend on numpy's or torch's
generators and their versions: the same seed and shape give the same frequencies everywhere, and the draw for
``n`` coefficients is the first ``n`` of the draw for more. The frequencies are a buffer of the module, saved
with its state; a saved draw that does not fit the layer is refused by name when it is loaded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fft import irfft, rfft

from .base import Shape, Structure, fft_dtype, fp32_island, positive_int

DEFAULT_COEFFICIENTS = 1000  # FourierFT's n_frequency
DEFAULT_SEED = 0


def frequency_count(in_features: int, out_features: int) -> int:
    """How many distinct real 2-D frequencies an ``out x in`` matrix has: the pairs ``{(u, v), (-u, -v)}``
    (Burnside: half of all ``out * in``, plus half of the ones equal to their own negative)."""
    fixed = (2 if out_features % 2 == 0 else 1) * (2 if in_features % 2 == 0 else 1)
    return (out_features * in_features + fixed) // 2


def canonical_frequencies(in_features: int, out_features: int) -> np.ndarray:
    """One ``(u, v)`` of each pair, ``(N, 2)``: ``v`` in ``0 .. in // 2`` (the half spectrum ``rfft`` gives), and in
    the columns that are their own negative (``v = 0``, ``v = in / 2``) ``u`` in ``0 .. out // 2``."""
    u, v = np.meshgrid(np.arange(out_features), np.arange(in_features // 2 + 1), indexing="ij")
    self_column = (v == 0) | (2 * v == in_features)
    keep = ~self_column | (u <= out_features // 2)
    return np.stack([u[keep], v[keep]], axis=1)


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on ``uint64`` arrays (wrapping arithmetic): a fixed, well-mixed hash."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x ^ (x >> np.uint64(31))


def draw_frequencies(in_features: int, out_features: int, coefficients: int, seed: int) -> torch.Tensor:
    """The ``(coefficients, 2)`` frequencies ``(u, v)`` of ``seed`` for an ``out x in`` layer, in draw order."""
    canon = canonical_frequencies(in_features, out_features)
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.array([seed], dtype=np.uint64))
        keys = _splitmix64(np.arange(len(canon), dtype=np.uint64) ^ salt)
    chosen = np.arange(len(canon))
    if coefficients < len(canon):
        chosen = np.argpartition(keys, coefficients - 1)[:coefficients]
    chosen = chosen[np.argsort(keys[chosen], kind="stable")]
    return torch.from_numpy(canon[chosen].astype(np.int64))


class SparseSpectrum(Structure):
    family = "sparse_spectrum"
    # An Adam step of lr per coefficient moves ||S||_F by about lr sqrt(n) (orthonormal basis), LoRA's order
    # at the same count; not tuned for this family.
    default_lr = 3e-3
    adapter_buffers = ("frequencies",)  # the draw travels with the adapter, not only its seed

    def __init__(
        self, in_features: int, out_features: int, coefficients: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__(in_features, out_features)
        hyper = self.resolve_hyper(in_features, out_features, coefficients=coefficients, seed=seed)
        self.coefficient_count, self.seed = hyper["coefficients"], hyper["seed"]
        self.register_buffer("frequencies", draw_frequencies(in_features, out_features, **hyper))
        self.coefficients = nn.Parameter(torch.zeros(self.coefficient_count))  # c = 0: S = 0

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        coefficients, seed = hyper.pop("coefficients", None), hyper.pop("seed", None)
        if hyper:
            raise ValueError(f"sparse_spectrum takes coefficients and seed, got {sorted(hyper)}")
        limit = frequency_count(in_features, out_features)
        n = min(DEFAULT_COEFFICIENTS, limit) if coefficients is None else positive_int("coefficients", coefficients)
        if n > limit:
            raise ValueError(
                f"coefficients={n} is out of range for the {out_features}x{in_features} layer: 1..{limit} "
                "(the distinct real 2-D frequencies of that shape)"
            )
        seed = DEFAULT_SEED if seed is None else seed
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
        return {"coefficients": n, "seed": seed}

    @classmethod
    def count(cls, in_features: int, out_features: int, coefficients: int, seed: int) -> int:  # type: ignore[override]
        return coefficients

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        for n in range(1, min(frequency_count(i, o) for o, i in shapes) + 1):
            yield {"coefficients": n, "seed": DEFAULT_SEED}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"coefficients": self.coefficient_count, "seed": self.seed}

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        """``w_k``: the scale that makes each cosine matrix of unit Frobenius norm."""
        u, v = self.frequencies.unbind(1)
        own_negative = ((2 * u) % self.out_features == 0) & ((2 * v) % self.in_features == 0)
        size = self.out_features * self.in_features
        return torch.where(own_negative, 1.0 / math.sqrt(size), math.sqrt(2.0 / size)).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.out_features
        with fp32_island(x):
            dtype = fft_dtype(x, self.coefficients)
            u, v = self.frequencies.unbind(1)
            cw = self.coefficients.to(dtype) * self.weights(dtype) / 2
            xf = rfft(x.reshape(-1, self.in_features).to(dtype), dim=-1)  # (M, F_in)
            # y = Re(sum_k c_k w_k conj(X[v_k]) e^{2 pi i u_k j / out}): the real part of a spectrum V is the
            # inverse real FFT of its Hermitian half, (V[f] + conj(V[-f])) / 2 for f <= out // 2: coefficient k
            # adds conj(X[v_k]) at row u_k and X[v_k] at row -u_k (where these rows are in the half). With A, B
            # the real sparse matrices of those two placements, the half spectrum is A conj(X) + B X =
            # (A + B) Re X + i (B - A) Im X: two real sparse matmuls of the frequency-major spectra.
            half, neg = rows // 2 + 1, (-u) % rows
            first, second = (u < half).nonzero().squeeze(1), (neg < half).nonzero().squeeze(1)
            pattern = Pattern(torch.cat([u[first], neg[second]]), torch.cat([v[first], v[second]]), half, xf.shape[1])
            placed = torch.cat([cw[first], cw[second]])
            values_re = pattern.gather(placed)  # A + B
            values_im = pattern.gather(torch.cat([-cw[first], cw[second]]))  # B - A
            re = SparseRows.apply(values_re, xf.real.T.contiguous(), pattern)
            im = SparseRows.apply(values_im, xf.imag.T.contiguous(), pattern)
            y = irfft(torch.complex(re, im).T, n=rows) * rows
        return y.reshape(*x.shape[:-1], rows).to(x.dtype)

    def dense(self) -> torch.Tensor:
        dtype = self.coefficients.dtype
        u, v = self.frequencies.unbind(1)
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        values = (self.coefficients * self.weights(dtype)).to(complex_dtype)
        grid = values.new_zeros(self.out_features, self.in_features).index_put((u, v), values, accumulate=True)
        return torch.fft.ifft2(grid).real * (self.out_features * self.in_features)

    def activation_flops(self, tokens: int) -> float:
        fft = sum(2.5 * d * math.log2(max(d, 2)) for d in (self.in_features, self.out_features))
        return tokens * (fft + 8.0 * self.coefficient_count)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "frequencies")
        if saved is not None:
            self.check_adapter_buffer("frequencies", saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_adapter_buffer(self, name: str, saved: torch.Tensor) -> None:
        """A saved draw must be ``n`` distinct canonical frequencies of this layer's shape."""
        if name != "frequencies":
            super().check_adapter_buffer(name, saved)
            return
        where = f"sparse_spectrum frequencies for the {self.out_features}x{self.in_features} layer"
        if saved.shape != self.frequencies.shape:
            raise ValueError(
                f"{where}: saved shape {list(saved.shape)}, expected {list(self.frequencies.shape)} "
                f"({self.coefficient_count} coefficients)"
            )
        u, v = saved.long().unbind(1)
        self_column = (v == 0) | (2 * v == self.in_features)
        valid = (u >= 0) & (u < self.out_features) & (v >= 0) & (2 * v <= self.in_features)
        valid &= ~self_column | (2 * u <= self.out_features)
        if not valid.all():
            bad = saved[~valid][0].tolist()
            raise ValueError(
                f"{where}: ({bad[0]}, {bad[1]}) is not one of its frequencies (u in 0..{self.out_features - 1}, "
                f"v in 0..{self.in_features // 2}, u <= {self.out_features // 2} where v is 0 or in/2)"
            )
        if torch.unique(u * (self.in_features // 2 + 1) + v).numel() != len(u):
            raise ValueError(f"{where}: a frequency is repeated; the {len(u)} frequencies must be distinct")


# -- the product ---------------------------------------------------------------------------------------------


class Pattern:
    """A fixed sparsity pattern of a ``(rows, cols)`` matrix from entries ``(row[e], col[e])`` (repeats summed),
    as CSR and as the CSR of its transpose."""

    def __init__(self, row: torch.Tensor, col: torch.Tensor, rows: int, cols: int) -> None:
        unique, self.inverse = torch.unique(row * cols + col, return_inverse=True)  # sorted: row-major order
        r, c = unique // cols, unique % cols
        self.shape = (rows, cols)
        self.crow, self.col = _crow(r, rows), c
        self.order_t = torch.argsort(c * rows + r)  # the entries in the transpose's row-major order
        self.crow_t, self.col_t = _crow(c[self.order_t], cols), r[self.order_t]

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-entry ``values`` summed into the pattern's non-zeros (in CSR order)."""
        return values.new_zeros(len(self.col)).index_add(0, self.inverse, values)

    def matrix(self, values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        with warnings.catch_warnings():  # torch calls CSR tensors beta; the products used here are tested
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            if transpose:
                shape = self.shape[::-1]
                return torch.sparse_csr_tensor(
                    self.crow_t, self.col_t, values[self.order_t], shape, check_invariants=False
                )
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)


def _crow(row: torch.Tensor, rows: int) -> torch.Tensor:
    crow = torch.zeros(rows + 1, dtype=torch.int64, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=rows), 0)
    return crow


class SparseRows(torch.autograd.Function):
    """``M x`` for a real sparse ``M`` (``values`` at ``pattern``) and a dense ``(cols, tokens)`` ``x``: a sparse
    matmul, with a sparse matmul by ``M^T`` and a sampled matmul ``g x^T`` in the backward, so no
    ``(non-zeros, tokens)`` intermediate is formed or saved."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, x: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        return pattern.matrix(values) @ x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        values, x = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        grad = grad.contiguous()
        dvalues = dx = None
        if ctx.needs_input_grad[0]:
            sampled = torch.sparse.sampled_addmm(pattern.matrix(values), grad, x.T.contiguous(), beta=0.0)
            dvalues = sampled.values().clone()
        if ctx.needs_input_grad[1]:
            dx = pattern.matrix(values, transpose=True) @ grad
        return dvalues, dx, None
