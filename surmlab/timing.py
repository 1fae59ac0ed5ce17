"""Wall time and peak memory of callables, measured fairly on a shared machine.

Times are medians over repetitions that are *interleaved* across the functions of one group (each
round runs every function once, in a rotating order), so load from other processes hits every
function alike. A ratio against a baseline of the same group is the median over rounds of the
per-round ratio, which cancels load that changes between rounds.

Peak memory is the highest amount of tensor memory allocated above the level at the start of the
measured call: on CUDA from ``torch.cuda.max_memory_allocated``; on the CPU from the allocation and
free events that ``torch.profiler`` records with ``profile_memory=True`` (a running sum over time,
so transient buffers count, not only tensors saved for backward).

The speed experiment and the benchmark suite in ``benchmarks/`` both measure with these.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler quiet while it measures memory

MEMORY_METHOD = {
    "cpu": "torch.profiler memory events (profile_memory=True): peak of the running allocation sum",
    "cuda": "torch.cuda.max_memory_allocated above the level at the start",
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(ts: list[float]) -> dict[str, Any]:
    ts = [round(t, 7) for t in ts]
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "reps": len(ts), "times_s": ts}


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: int = 5, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Median and spread of the wall time of each ``fn`` after ``warmup`` calls, interleaving the repetitions."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: summarise(ts) for name, ts in times.items()}


def no_grad_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], None]:
    """``fn(*args, **kwargs)`` without autograd, as a call to time (an inference forward)."""

    def call() -> None:
        with torch.no_grad():
            fn(*args, **kwargs)

    return call


def peak_memory(fn: Callable[[], Any], device: torch.device, setup: Callable[[], Any] | None = None) -> int:
    """Bytes of tensor memory allocated at the peak of ``fn()`` above the level before it.

    ``setup`` runs first, unmeasured: drop what a previous call left behind (gradients) there, so
    that freeing it does not count as a negative allocation inside the measurement.
    """
    if setup is not None:
        setup()
    if device.type == "cuda":
        synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for event in events:
        level += event.nbytes()
        peak = max(peak, level)
    return int(peak)


@torch.no_grad()
def randomize_updates(model: torch.nn.Module, std: float = 0.01) -> None:
    """Non-zero update weights, as after training (LoRA's B and SURM's kernels start at zero, and a zero
    update would merge trivially): what merged and unmerged inference are timed on."""
    for name, q in model.named_parameters():
        if q.requires_grad and (".updates." in name or "lora_B" in name):
            q.normal_(0, std)


def memory_method(device: torch.device) -> str:
    """How ``peak_memory`` measures on ``device`` (recorded next to the numbers)."""
    return MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"]


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def paired_ratio(times: dict[str, Any], base: dict[str, Any]) -> float | None:
    """Median over rounds of ``time / baseline time`` in the same round: load that comes and goes
    between rounds cancels out (falls back to the ratio of medians without per-round times)."""
    ts, bs = times.get("times_s"), base.get("times_s")
    if ts and bs and len(ts) == len(bs):
        return statistics.median(t / b for t, b in zip(ts, bs, strict=True))
    return ratio(times["median_s"], base["median_s"])
