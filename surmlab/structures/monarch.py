"""Monarch family (MoRe, arXiv 2408.17383): ``S = P2 blockdiag(R) P1 blockdiag(L)``.

``L`` holds ``k`` blocks ``L_i`` of shape ``r x in/k`` and ``R`` holds ``k`` blocks ``R_j`` of shape
``out/k x r`` (``k = nblocks``, ``r = block_rank``). The middle permutation ``P1`` reads the ``k r``
outputs of the first factor, laid out block by block (``i r + s``), as an ``r x k`` matrix and hands
its column ``j`` to ``R_j``; ``P2`` interleaves the outputs (row ``o`` of ``R_j`` is output ``o k + j``).
This is the layout of the block-diagonal butterfly multiply MoRe builds on, written from its definition.

The count is ``r (in + out)``, LoRA's at rank ``r``, while ``rank(S)`` reaches ``min(k r, in, out)``.
The product is two batched matmuls with one transpose between them; ``S`` is never formed.
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
    block_count_preference,
    block_rank_limit,
    common_divisors,
    matmul_dtype,
    positive_int,
    resolve_block_count,
)

DEFAULT_NBLOCKS = 4  # MoRe's setting
DEFAULT_BLOCK_RANK = 8  # LoRA's default rank: the same count, four times the attainable rank


class Monarch(Structure):
    family = "monarch"
    default_lr = 3e-3  # lowrank's: the same count and factor scales; not tuned for this family

    def __init__(
        self, in_features: int, out_features: int, nblocks: int | None = None, block_rank: int | None = None
    ) -> None:
        super().__init__(in_features, out_features)
        hyper = self.resolve_hyper(in_features, out_features, nblocks=nblocks, block_rank=block_rank)
        k, r = hyper["nblocks"], hyper["block_rank"]
        self.nblocks, self.block_rank = k, r
        # R = 0 makes S = 0; a Kaiming-uniform L (fan-in in/k, as LoRA's A) keeps the gradient of R non-zero.
        self.left = nn.Parameter(torch.empty(k, r, in_features // k))
        bound = 1.0 / math.sqrt(in_features // k)
        nn.init.uniform_(self.left, -bound, bound)
        self.right = nn.Parameter(torch.zeros(k, out_features // k, r))

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        nblocks, block_rank = hyper.pop("nblocks", None), hyper.pop("block_rank", None)
        if hyper:
            raise ValueError(f"monarch takes nblocks and block_rank, got {sorted(hyper)}")
        nblocks = resolve_block_count("nblocks", nblocks, in_features, out_features, DEFAULT_NBLOCKS)
        limit = block_rank_limit(in_features, out_features, nblocks)
        block_rank = min(DEFAULT_BLOCK_RANK, limit) if block_rank is None else block_rank
        positive_int("block_rank", block_rank)
        if block_rank > limit:
            raise ValueError(
                f"block_rank={block_rank} is out of range for nblocks={nblocks} on the {out_features}x{in_features} "
                f"layer: nblocks * block_rank may not exceed {min(in_features, out_features)}, so 1..{limit}"
            )
        return {"nblocks": nblocks, "block_rank": block_rank}

    @classmethod
    def count(cls, in_features: int, out_features: int, nblocks: int, block_rank: int) -> int:  # type: ignore[override]
        return block_rank * (in_features + out_features)

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        # The count depends on block_rank only: for each, every block count in order of preference.
        ks = sorted(
            common_divisors([d for shape in shapes for d in shape]),
            key=lambda k: block_count_preference(k, DEFAULT_NBLOCKS),
        )
        top = max(min(block_rank_limit(i, o, k) for o, i in shapes) for k in ks)
        for r in range(1, top + 1):
            for k in ks:
                if all(r <= block_rank_limit(i, o, k) for o, i in shapes):
                    yield {"nblocks": k, "block_rank": r}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"nblocks": self.nblocks, "block_rank": self.block_rank}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = matmul_dtype(x)
        k, r = self.nblocks, self.block_rank
        t = x.to(dtype).reshape(-1, k, self.in_features // k).transpose(0, 1)  # (k, M, in/k)
        t = torch.bmm(t, self.left.to(dtype).transpose(1, 2))  # (k, M, r): block i's outputs
        # P1: the k*r values, block-major, read as an r x k matrix; column j feeds R_j.
        t = t.transpose(0, 1).reshape(-1, r, k).permute(2, 0, 1)  # (k, M, r)
        y = torch.bmm(t, self.right.to(dtype).transpose(1, 2))  # (k, M, out/k)
        # P2: output o of R_j is row o * k + j.
        return y.permute(1, 2, 0).reshape(*x.shape[:-1], self.out_features)

    def dense(self) -> torch.Tensor:
        k, r = self.nblocks, self.block_rank
        # Column j*r + a of the middle is row a*k + j of blockdiag(L): the rows R_j reads, in its order.
        left = torch.block_diag(*self.left)  # (k r, in)
        middle = left.reshape(r, k, self.in_features).transpose(0, 1)  # (k, r, in): what R_j multiplies
        out = torch.bmm(self.right, middle)  # (k, out/k, in): block j's outputs o
        return out.transpose(0, 1).reshape(self.out_features, self.in_features)

    def activation_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.block_rank * (self.in_features + self.out_features)
