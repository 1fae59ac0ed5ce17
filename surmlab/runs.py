"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json`` and saved weights.

Every file but the append-only metrics log is written atomically (temp file + rename), so a crash
never leaves a half-written JSON behind. ``list_runs`` turns a folder of runs into a DataFrame.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .fileio import atomic_write, read_json, write_json

__all__ = ["RunDir", "atomic_write", "list_runs", "read_json", "write_json"]

STATUSES = ("running", "completed", "stopped", "failed")
PACKAGES = ("surmlab", "torch", "timm", "transformers", "peft", "accelerate", "datasets")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


class RunDir:
    """One run's folder. Create it with ``RunDir.create`` only once the run is known to be valid."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{slug(name)}"
        for i in range(1000):
            candidate = root / (base if i == 0 else f"{base}-{i}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return cls(candidate)
        raise RuntimeError(f"could not create a run directory under {root}")

    # -- files ---------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def stop_file(self) -> Path:
        """Create this file to ask a running job to stop gracefully."""
        return self.path / "STOP"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def config(self) -> dict[str, Any]:
        return read_json(self.config_file)

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (a crash can lose at most the line being written)."""
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        rows = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return rows

    def summary(self) -> dict[str, Any]:
        return read_json(self.summary_file) if self.summary_file.exists() else {}

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        status = fields.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; known: {', '.join(STATUSES)}")
        summary = {**self.summary(), **fields}
        write_json(self.summary_file, summary)
        return summary

    def request_stop(self) -> None:
        self.stop_file.touch()


def list_runs(root: str | Path = "runs"):
    """All runs under ``root`` as a pandas DataFrame, newest first (one row per run)."""
    import pandas as pd

    rows = []
    for summary_file in sorted(Path(root).glob("*/summary.json")):
        try:
            s = read_json(summary_file)
        except (OSError, json.JSONDecodeError):
            continue
        cfg = s.get("config", {})
        rows.append(
            {
                "run": summary_file.parent.name,
                "status": s.get("status"),
                "backbone": cfg.get("backbone"),
                "task": cfg.get("task"),
                "method": cfg.get("method"),
                "mode": cfg.get("mode"),
                "targets": s.get("targets"),
                "trainable_params": s.get("trainable_params"),
                "total_params": s.get("total_params"),
                "metric": s.get("metric"),
                "best": (s.get("best_metrics") or {}).get(s.get("metric") or ""),
                "final": (s.get("final_metrics") or {}).get(s.get("metric") or ""),
                "wall_time_s": s.get("wall_time_s"),
                "reason": s.get("reason"),
                "path": str(summary_file.parent),
            }
        )
    columns = [
        "run", "status", "backbone", "task", "method", "mode", "targets", "trainable_params", "total_params",
        "metric", "best", "final", "wall_time_s", "reason", "path",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).iloc[::-1].reset_index(drop=True)
