"""Low-rank family ``S = B A`` (LoRA's update), the baseline inside the same machinery."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .base import Shape, Structure, resolve_rank


class LowRank(Structure):
    family = "lowrank"
    default_lr = 3e-3

    def __init__(self, in_features: int, out_features: int, rank: int | None = None) -> None:
        super().__init__(in_features, out_features)
        r = self.resolve_hyper(in_features, out_features, rank=rank)["rank"]
        self.rank = r
        # As in LoRA: A Kaiming-uniform, B zero.
        self.a = nn.Parameter(torch.empty(r, in_features))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = nn.Parameter(torch.zeros(out_features, r))

    @classmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        rank = hyper.pop("rank", None)
        if hyper:
            raise ValueError(f"lowrank takes only rank, got {sorted(hyper)}")
        limit = min(in_features, out_features)
        return {"rank": resolve_rank(rank, min(8, limit), limit, f"a {out_features}x{in_features} layer")}

    @classmethod
    def count(cls, in_features: int, out_features: int, rank: int) -> int:  # type: ignore[override]
        return rank * (in_features + out_features)

    @classmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        for r in range(1, min(min(s) for s in shapes) + 1):
            yield {"rank": r}

    @property
    def hyper(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.to(x.dtype).T) @ self.b.to(x.dtype).T

    def dense(self) -> torch.Tensor:
        return self.b @ self.a

    def activation_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.rank * (self.in_features + self.out_features)
