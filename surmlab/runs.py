"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json`` and saved weights.

Every file but the append-only metrics log is written atomically (temp file + rename), so a crash
never leaves a half-written JSON behind. ``list_runs`` turns a folder of runs into a DataFrame.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from .fileio import atomic_write, read_json, write_json

__all__ = ["RunDir", "atomic_write", "list_runs", "pid_alive", "read_json", "write_json"]

STATUSES = ("running", "completed", "stopped", "failed")
# A "running" run whose trainer is gone: its process ended on this machine, or (another machine) its
# heartbeat is older than this. ``list_runs`` shows it as "interrupted"; ``--resume`` continues it.
HEARTBEAT_STALE_S = 600.0


def pid_alive(pid: int | None, token: str | None = None) -> bool:
    """Whether ``pid`` runs and is not a zombie; on Linux also that its command line names ``token``
    (a recycled pid then does not count as our job)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            if token and token.encode() not in proc.joinpath("cmdline").read_bytes():
                return False
        except (OSError, IndexError):
            return False
    return True


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

    def truncate_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` records (a resumed run drops what it logged after its checkpoint)."""
        if not self.metrics_file.exists():
            return
        kept = self.metrics_file.read_text().splitlines(keepends=True)[:lines]
        atomic_write(self.metrics_file, lambda tmp: Path(tmp).write_text("".join(kept)))

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

    # -- liveness ------------------------------------------------------------------------------------
    def mark_alive(self) -> dict[str, Any]:
        """Record this process as the run's trainer, with a fresh heartbeat."""
        return self.update_summary(pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())

    def trainer_alive(self, summary: dict[str, Any] | None = None) -> bool:
        """Whether a "running" run still has a live trainer (see ``HEARTBEAT_STALE_S``)."""
        summary = self.summary() if summary is None else summary
        if summary.get("status") != "running":
            return False
        if summary.get("host") == socket.gethostname():
            return pid_alive(summary.get("pid"))
        return time.time() - float(summary.get("heartbeat") or 0) < HEARTBEAT_STALE_S

    # -- checkpoints -----------------------------------------------------------------------------------
    # checkpoint/step-<N>/ holds one complete checkpoint; checkpoint/latest.json names the newest. A
    # checkpoint is written into a hidden folder and renamed into place before latest.json moves, so a
    # crash at any point leaves the previous checkpoint intact and named.
    def write_checkpoint(self, step: int, write: Any) -> Path:
        """``write(folder)`` fills a new checkpoint for ``step``; then it becomes the latest."""
        root = self.checkpoint_dir
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:09d}"
        for stale in root.glob(".step-*.partial"):  # left by a crash or a full disk
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".{name}.partial"
        partial.mkdir()
        try:
            write(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        write_json(root / "latest.json", {"step": step, "folder": name})
        for old in root.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, if any (a run folder of an older layout: ``checkpoint/``)."""
        root = self.checkpoint_dir
        pointer = root / "latest.json"
        if pointer.exists():
            folder = root / read_json(pointer)["folder"]
            return folder if folder.is_dir() else None
        return root if (root / "state.json").exists() else None


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
        status, reason = s.get("status"), s.get("reason")
        if status == "running" and not RunDir(summary_file.parent).trainer_alive(s):
            status, reason = "interrupted", "the trainer ended without recording an outcome; --resume continues it"
        rows.append(
            {
                "run": summary_file.parent.name,
                "status": status,
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
                "reason": reason,
                "path": str(summary_file.parent),
            }
        )
    columns = [
        "run", "status", "backbone", "task", "method", "mode", "targets", "trainable_params", "total_params",
        "metric", "best", "final", "wall_time_s", "reason", "path",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).iloc[::-1].reset_index(drop=True)
