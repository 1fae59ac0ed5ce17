"""Block low-rank family (GraLoRA, BLAST): a ``k x k`` grid of independent low-rank blocks.

Block ``(i, j)`` of ``S`` (rows ``i out/k ..``, columns ``j in/k ..``) is ``B_ij A_ij`` with ``A_ij`` of shape
``r/k x in/k`` and ``B_ij`` of ``out/k x r/k``. The count is ``r (in + out)``, LoRA's at rank ``r``; each
block has rank ``r/k`` but ``S`` can reach rank ``k r``, and each input slice gets its own factors (LoRA's
single ``A`` makes every output feel every input through the same ``r`` directions).

The product is two batched matmuls over the grid; ``S`` is never formed.
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
    blocks_to_matrix,
    common_divisors,
    matmul_dtype,
    positive_int,
    resolve_block_count,
)

DEFAULT_GRID = 2  # GraLoRA's default k
DEFAULT_RANK = 8  # LoRA's default rank: the same count


class BlockLowRank(Structure):
    family = "block_lowrank"
    default_lr = 3e-3  # lowrank's: the same count and factor scales; not tuned for this family

    def __init__(self, in_features: int, out_features: int, grid: int | None = None, rank: int | None = None) -> None:
        super().__init__(in_features, out_features)
        hyper = self.resolve_hyper(in_features, out_features, grid=grid, rank=rank)
        k, r = hyper["grid"], hyper["rank"]
        self.grid, self.rank = k, r
        # B = 0 makes S = 0; Kaiming-uniform A_ij (fan-in in/k, as LoRA's A) keep the gradient of B non-zero.
        self.a = nn.Parameter(torch.empty(k, k, r // k, in_features // k))
        bound = 1.0 / math.sqrt(in_features // k)
        nn.init.uniform_(self.a, -bound, bound)
        self.b = nn.Parameter(torch.zeros(k, k, out_features // k, r // k))

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        grid, rank = hyper.pop("grid", None), hyper.pop("rank", None)
        if hyper:
            raise ValueError(f"block_lowrank takes grid and rank, got {sorted(hyper)}")
        blocks = f" into {grid}x{grid} blocks" if grid is not None else ""
        grid = resolve_block_count("grid", grid, in_features, out_features, DEFAULT_GRID, blocks)
        limit = block_rank_limit(in_features, out_features, grid)
        if rank is None:
            rank = grid * min(max(1, DEFAULT_RANK // grid), limit)
        positive_int("rank", rank)
        if rank % grid or rank // grid > limit:
            raise ValueError(
                f"rank={rank} is out of range for grid={grid} on the {out_features}x{in_features} layer: "
                f"the rank is shared by the {grid} blocks of a row, so it must be a multiple of {grid} "
                f"from {grid} to {grid * limit}"
            )
        return {"grid": grid, "rank": rank}

    @classmethod
    def count(cls, in_features: int, out_features: int, grid: int, rank: int) -> int:  # type: ignore[override]
        return rank * (in_features + out_features)

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        # The count depends on the rank only: ranks ascending, and for each the grids in order of preference.
        # A 1 x 1 grid is LoRA itself (the lowrank family): the solver offers it only where no grid divides.
        grids = common_divisors([d for shape in shapes for d in shape])
        options = [
            (k * s, block_count_preference(k, DEFAULT_GRID), k)
            for k in (grids[1:] or grids)
            for s in range(1, min(block_rank_limit(i, o, k) for o, i in shapes) + 1)
        ]
        for rank, _, k in sorted(options):
            yield {"grid": k, "rank": rank}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"grid": self.grid, "rank": self.rank}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = matmul_dtype(x)
        k, s = self.grid, self.rank // self.grid
        cols, rows = self.in_features // k, self.out_features // k
        xs = x.to(dtype).reshape(-1, k, cols).transpose(0, 1)  # (k_j, M, in/k)
        a = self.a.to(dtype).permute(1, 3, 0, 2).reshape(k, cols, k * s)  # [j, t, (i, s)]
        t = torch.bmm(xs, a)  # (k_j, M, k_i * s): A_ij x_j for every block
        t = t.reshape(k, -1, k, s).permute(2, 1, 0, 3).reshape(k, -1, k * s)  # (k_i, M, (j, s))
        b = self.b.to(dtype).transpose(2, 3).reshape(k, k * s, rows)  # [i, (j, s), o]
        y = torch.bmm(t, b)  # (k_i, M, out/k): sum_j B_ij A_ij x_j
        return y.transpose(0, 1).reshape(*x.shape[:-1], self.out_features)

    def dense(self) -> torch.Tensor:
        return blocks_to_matrix(self.b @ self.a)

    def activation_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.rank * (self.in_features + self.out_features)
