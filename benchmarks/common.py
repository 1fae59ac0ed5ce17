"""Timing, peak memory and environment metadata shared by the layer and model benchmarks.

Times are medians over repetitions that are *interleaved* across the methods of one group (each
round runs every method once, in a rotating order), so load from other processes on a shared
machine hits every method alike. A ratio against a baseline of the same group is the median over
rounds of the per-round ratio, which cancels load that changes between rounds.

Peak memory is the highest amount of tensor memory allocated above the level at the start of the
measured call: on CUDA from ``torch.cuda.max_memory_allocated``; on the CPU from the allocation and
free events that ``torch.profiler`` records with ``profile_memory=True`` (a running sum over time,
so transient buffers count, not only tensors saved for backward).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler quiet while it measures memory

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PACKAGES = ("torch", "numpy", "peft", "timm", "transformers", "surmlab")
ROOT = Path(__file__).resolve().parents[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: int = 5, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median and spread of the wall time of each ``fn``, interleaving the repetitions."""
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


def summarise(ts: list[float]) -> dict[str, Any]:
    ts = [round(t, 7) for t in ts]
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "reps": len(ts), "times_s": ts}


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
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for event in events:
        level += event.nbytes()
        peak = max(peak, level)
    return int(peak)


MEMORY_METHOD = {
    "cpu": "torch.profiler memory events (profile_memory=True): peak of the running allocation sum",
    "cuda": "torch.cuda.max_memory_allocated above the level at the start",
}


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def paired_ratio(times: dict[str, Any], base: dict[str, Any]) -> float | None:
    """Median over rounds of ``time / baseline time`` in the same round: load that comes and goes
    between rounds cancels out (falls back to the ratio of medians without per-round times)."""
    ts, bs = times.get("times_s"), base.get("times_s")
    if ts and bs and len(ts) == len(bs):
        return statistics.median(t / b for t, b in zip(ts, bs, strict=True))
    return ratio(times["median_s"], base["median_s"])


# -- metadata ------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, packages and code version of this run."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "load_average_start": load_average(),
        "memory_method": MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"],
    }
