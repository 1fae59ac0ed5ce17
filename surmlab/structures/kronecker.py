"""Kronecker family: ``S = A (x) B`` with ``A`` of shape ``(m1, n1)`` and ``B`` of ``(out/m1, in/n1)``.

The product never forms ``S``: with ``x`` viewed as an ``n1 x n2`` matrix ``X`` (row-major),
``(A (x) B) vec(X) = vec(A X B^T)``, two small matmuls. A custom backward recomputes ``X B^T`` rather
than saving it, so the layer keeps no more activations than LoRA does (``x`` only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .base import Shape, Structure, divisors, matmul_dtype


def _cost(in_features: int, out_features: int, m1: int, n1: int) -> int:
    return m1 * n1 + (out_features // m1) * (in_features // n1)


class Kronecker(Structure):
    family = "kronecker"
    default_lr = 3e-3

    def __init__(self, in_features: int, out_features: int, factors: Sequence[int] | None = None) -> None:
        super().__init__(in_features, out_features)
        m1, n1 = self.resolve_hyper(in_features, out_features, factors=factors)["factors"]
        m2, n2 = out_features // m1, in_features // n1
        self.factors = (m1, n1)
        # B = 0 makes S = 0; a random A keeps the gradient with respect to B non-zero.
        self.a = nn.Parameter(torch.empty(m1, n1))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = nn.Parameter(torch.zeros(m2, n2))

    @staticmethod
    def default_factors(in_features: int, out_features: int) -> tuple[int, int]:
        """The factor shape with the fewest parameters; among those, the highest attainable rank
        ``min(m1, n1) * min(m2, n2)`` (a ``1 x n`` times ``n x 1`` split is only an outer product)."""

        def key(f: tuple[int, int]) -> tuple[int, int]:
            m1, n1 = f
            m2, n2 = out_features // m1, in_features // n1
            return _cost(in_features, out_features, m1, n1), -min(m1, n1) * min(m2, n2)

        return min(((m1, n1) for m1 in divisors(out_features) for n1 in divisors(in_features)), key=key)

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        factors = hyper.pop("factors", None)
        if hyper:
            raise ValueError(f"kronecker takes only factors=(m1, n1), got {sorted(hyper)}")
        if factors is None:
            return {"factors": list(cls.default_factors(in_features, out_features))}
        if len(factors) != 2 or not all(isinstance(f, int) and f >= 1 for f in factors):
            raise ValueError(f"factors must be two positive integers (m1, n1), got {factors!r}")
        m1, n1 = factors
        if out_features % m1 or in_features % n1:
            raise ValueError(
                f"factors=({m1}, {n1}) do not fit the {out_features}x{in_features} layer: m1 must divide "
                f"{out_features} (one of {divisors(out_features)}) and n1 must divide {in_features} "
                f"(one of {divisors(in_features)})"
            )
        return {"factors": [m1, n1]}

    @classmethod
    def count(cls, in_features: int, out_features: int, factors: Sequence[int]) -> int:  # type: ignore[override]
        return _cost(in_features, out_features, *factors)

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        def rank_bound(m1: int, n1: int) -> int:
            return min(min(m1, n1) * min(o // m1, i // n1) for o, i in shapes)

        options = [
            (m1, n1)
            for m1 in divisors(math.gcd(*[s[0] for s in shapes]))
            for n1 in divisors(math.gcd(*[s[1] for s in shapes]))
        ]
        for m1, n1 in sorted(options, key=lambda f: -rank_bound(*f)):
            yield {"factors": [m1, n1]}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"factors": list(self.factors)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One dtype inside the custom function (autocast's, if on): its backward runs outside autocast.
        dtype = matmul_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            return KroneckerProduct.apply(x.to(dtype), self.a.to(dtype), self.b.to(dtype))

    def dense(self) -> torch.Tensor:
        return torch.einsum("ij,kl->ikjl", self.a, self.b).reshape(self.out_features, self.in_features)

    def activation_flops(self, tokens: int) -> float:
        (m1, n1), (m2, n2) = self.a.shape, self.b.shape
        return 2.0 * tokens * (n1 * n2 * m2 + m1 * n1 * m2)


class KroneckerProduct(torch.autograd.Function):
    """``x @ (A (x) B).T`` by the vec trick; the backward recomputes ``X B^T`` instead of saving it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        (m1, n1), (m2, n2) = a.shape, b.shape
        t = x.reshape(-1, n1, n2) @ b.T  # (M, n1, m2)
        # bmm with a stride-0 batch: matmul's broadcasting would copy t twice (peak memory).
        y = torch.bmm(a.expand(t.shape[0], m1, n1), t)  # (M, m1, m2)
        ctx.save_for_backward(x, a, b)
        return y.reshape(*x.shape[:-1], m1 * m2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, a, b = ctx.saved_tensors
        (m1, n1), (m2, n2) = a.shape, b.shape
        g = grad.reshape(-1, m1, m2)
        xm = x.reshape(-1, n2)
        dx = da = db = None
        # Gradient of A first: its temporaries are freed before the gradient of X B^T is formed.
        if ctx.needs_input_grad[1]:
            da = torch.bmm(g, (xm @ b.T).view(-1, n1, m2).transpose(1, 2)).sum(dim=0)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            dt = torch.bmm(a.T.expand(g.shape[0], n1, m1), g).view(-1, m2)  # gradient of X B^T, (M * n1, m2)
            db = dt.T @ xm if ctx.needs_input_grad[2] else None
            dx = (dt @ b).reshape(x.shape) if ctx.needs_input_grad[0] else None
        return dx, da, db
