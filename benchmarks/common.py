"""What the layer and model benchmarks share: dtypes and the run's environment record.

Timing and peak memory come from ``surmlab.timing`` (the speed experiment measures with the same
functions); machine, packages and commit from ``surmlab.provenance``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from surmlab.provenance import environment as machine_environment
from surmlab.timing import memory_method

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, packages and code version of this run, and how its peak memory was measured."""
    return {**machine_environment(device), "memory_method": memory_method(device)}


def fwd_bwd(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward+backward of ``model`` on ``x`` (give ``x`` a gradient, so the frozen layers' backward runs
    too), clearing the gradients after it: the step the layer benchmarks time."""

    def run() -> None:
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        x.grad = None

    return run
