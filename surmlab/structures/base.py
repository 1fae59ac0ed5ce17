"""The interface every structured family implements, and helpers shared by the block families."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

Shape = tuple[int, int]  # (out_features, in_features), the layout of nn.Linear.weight


class Structure(nn.Module, ABC):
    """A structured matrix ``S`` of shape ``(out_features, in_features)``.

    Two equivalent products are offered: ``forward(x)`` computes ``x @ S.T`` in activation space
    (FFTs, reshapes; never materialising ``S``) and ``dense()`` returns ``S`` itself. ``S`` is zero
    at construction while its gradient is not, so an injected model starts exactly at the
    pretrained one and still learns.
    """

    family: ClassVar[str]
    # The learning rate ``surm-<family>`` trains with unless told otherwise. Measured on MiniLM / Rotten
    # Tomatoes (README "Learning rates"): circulant 2e-3 -> 73.5%, 5e-3 -> 72.6%, 2e-2 -> 58.5%. Unlike
    # PEFT's C3A (scaled by 1/in_features), these updates are unscaled: one kernel entry moves a whole
    # diagonal of S, so they want smaller steps than LoRA's factors.
    default_lr: ClassVar[float] = 2e-3
    # Buffers that belong in the adapter file with the parameters: fixed data the update needs that is not
    # trained (sparse_spectrum's drawn frequencies). A loader checks each with ``check_adapter_buffer``.
    adapter_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"layer sizes must be positive, got {out_features}x{in_features}")
        self.in_features = in_features
        self.out_features = out_features

    def check_adapter_buffer(self, name: str, saved: torch.Tensor) -> None:
        """Refuse a saved ``adapter_buffers`` entry that does not fit this layer, naming what would."""
        own = getattr(self, name)
        if saved.shape != own.shape:
            raise ValueError(
                f"{self.family} {name} for the {self.out_features}x{self.in_features} layer: saved shape "
                f"{list(saved.shape)}, expected {list(own.shape)}"
            )

    # -- hyper-parameters -------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def resolve_hyper(cls, in_features: int, out_features: int, **hyper: Any) -> dict[str, Any]:
        """Validate ``hyper`` for this layer shape and fill in defaults; raise ``ValueError``."""

    @classmethod
    @abstractmethod
    def count(cls, in_features: int, out_features: int, **hyper: Any) -> int:
        """Closed-form number of trainable parameters (hyper already resolved)."""

    @classmethod
    @abstractmethod
    def candidates(cls, shapes: Sequence[Shape]) -> Iterator[dict[str, Any]]:
        """Every hyper-parameter setting valid for all ``shapes`` at once, complete (as ``resolve_hyper``
        returns it: the solver counts each with ``count``), in order of preference among equal parameter
        counts (for the budget solver)."""

    @classmethod
    def num_parameters(cls, in_features: int, out_features: int, **hyper: Any) -> int:
        return cls.count(in_features, out_features, **cls.resolve_hyper(in_features, out_features, **hyper))

    @property
    @abstractmethod
    def hyper(self) -> dict[str, Any]:
        """The resolved hyper-parameters (JSON-serialisable)."""

    # -- products ------------------------------------------------------------------------------
    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ S.T`` for ``x`` of shape ``(..., in_features)``, in activation space."""

    @abstractmethod
    def dense(self) -> torch.Tensor:
        """``S`` materialised, shape ``(out_features, in_features)``."""

    def activation_flops(self, tokens: int) -> float:
        """Rough floating-point work of ``forward`` on ``tokens`` rows (used by the ``auto`` path)."""
        return 2.0 * tokens * self.in_features * self.out_features

    def extra_repr(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{self.out_features}x{self.in_features}, {hyper}"


# -- helpers ---------------------------------------------------------------------------------------


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def common_divisors(values: Sequence[int]) -> list[int]:
    return divisors(math.gcd(*values))


def resolve_block_size(in_features: int, out_features: int, block_size: int | None) -> int:
    """The block size tiling an ``out x in`` layer; default: the largest that divides both sides."""
    g = math.gcd(in_features, out_features)
    if block_size is None:
        return g
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if in_features % block_size or out_features % block_size:
        valid = ", ".join(map(str, divisors(g)))
        raise ValueError(
            f"block_size={block_size} does not divide the {out_features}x{in_features} layer; "
            f"block sizes that divide both sides: {valid}"
        )
    return block_size


def block_count_preference(k: int, default: int) -> tuple[int, int]:
    """Among block counts, the order of preference: ``default`` first, then the nearest (smaller first)."""
    return abs(k - default), k


def resolve_block_count(
    name: str, value: int | None, in_features: int, out_features: int, default: int, blocks: str = ""
) -> int:
    """A number of blocks ``k`` that divides both sides of an ``out x in`` layer (Monarch's ``nblocks``, a
    block low-rank ``grid``): ``value``, or where it is ``None`` the one nearest ``default`` (smaller first).
    ``blocks`` says in the error how the layer is cut (e.g. ``" into 2x2 blocks"``)."""
    shared = divisors(math.gcd(in_features, out_features))
    if value is None:
        return min(shared, key=lambda k: block_count_preference(k, default))
    positive_int(name, value)
    if value not in shared:
        raise ValueError(
            f"{name}={value} does not divide the {out_features}x{in_features} layer{blocks}; "
            f"counts that divide both sides: {', '.join(map(str, shared))}"
        )
    return value


def block_rank_limit(in_features: int, out_features: int, blocks: int) -> int:
    """The largest useful rank of one of ``blocks`` blocks along each side: beyond it the blocks' ranks
    add up to more than the layer's smaller side."""
    return min(in_features, out_features) // blocks


def positive_int(name: str, value: Any) -> int:
    """``value`` itself when it is a positive integer; else a ``ValueError`` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def resolve_rank(rank: int | None, default: int, limit: int, what: str) -> int:
    rank = default if rank is None else rank
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if rank > limit:
        raise ValueError(f"rank={rank} exceeds {limit}, the largest useful rank for {what}")
    return min(rank, limit)


@contextmanager
def fp32_island(x: torch.Tensor) -> Iterator[None]:
    """Run FFT work in fp32 even under fp16/bf16 autocast (half FFTs are inexact or unsupported)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's when it is on for ``x``'s device (float64 excepted,
    as autocast leaves it), else ``x``'s own."""
    device = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def fft_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The real dtype FFT work runs in: float64 if any operand is, else float32 (never half)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def blocks_to_matrix(blocks: torch.Tensor) -> torch.Tensor:
    """``(p, q, n, n)`` block grid ``->`` ``(p * n, q * n)`` matrix."""
    p, q, n, m = blocks.shape
    return blocks.permute(0, 2, 1, 3).reshape(p * n, q * m)


def circulant_index(n: int, period: int, device: torch.device | None = None) -> torch.Tensor:
    """``idx[i, j] = (i - j) mod period``: gathers an ``n x n`` crop of a circulant of size ``period``."""
    ar = torch.arange(n, device=device)
    return (ar[:, None] - ar[None, :]) % period
