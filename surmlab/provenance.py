"""What code and machine produced a result: package versions, the git commit, the environment.

Run summaries, experiment records and benchmark files all record these, from this one module.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("surmlab", "torch", "timm", "transformers", "peft", "accelerate", "datasets")
SOURCE_DIR = Path(__file__).resolve().parent


def package_versions() -> dict[str, str]:
    """Python's and each installed package's version (packages that are not installed are left out)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git(*args: str) -> str | None:
    """``git ARGS`` in the source checkout; ``None`` where git or a checkout is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    return git("rev-parse", "HEAD") or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Machine, packages and code version, captured when a run, experiment or benchmark starts."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "git_dirty": bool(status) if status is not None else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": load_average(),
    }
