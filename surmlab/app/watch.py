"""Cheap reads of run folders for a UI that polls every second.

``MetricsCache`` reads only the bytes appended to ``metrics.jsonl`` since the last call; the
fingerprints (size and mtime of a few files) tell the UI whether anything changed at all, so an
idle tick costs a handful of ``stat`` calls and re-renders nothing.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runs import RunDir, RunSummary


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class MetricsCache:
    """``rows(run_dir)``: every record of the run's ``metrics.jsonl``, reading only what was appended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int, list[dict[str, Any]]]] = {}  # path -> (inode, offset, rows)

    def rows(self, run_dir: str | Path) -> list[dict[str, Any]]:
        path = os.path.join(run_dir, "metrics.jsonl")
        try:
            st = os.stat(path)
        except OSError:
            return []
        with self._lock:
            inode, offset, rows = self._files.get(path, (st.st_ino, 0, []))
            if inode != st.st_ino or st.st_size < offset:  # replaced or truncated: start over
                offset, rows = 0, []
            if st.st_size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(st.st_size - offset)
                complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
                rows = rows + _parse(chunk[:complete])
                offset += complete
            self._files[path] = (st.st_ino, offset, rows)
            return rows

    def forget(self, run_dir: str | Path) -> None:
        with self._lock:
            self._files.pop(os.path.join(run_dir, "metrics.jsonl"), None)


def _parse(chunk: bytes) -> list[dict[str, Any]]:
    rows = []
    for line in chunk.decode("utf-8", "replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
    return rows


def read_summary(run_dir: str | Path) -> RunSummary:
    """The run's summary; an empty one (``status`` None) while it is missing or half-readable."""
    try:
        return RunDir(run_dir).summary()
    except (OSError, ValueError, TypeError):
        return RunSummary(run_dir=str(run_dir))


def history_stamp(runs_dir: str | Path) -> tuple:
    """Changes whenever a run appears, disappears or rewrites its summary."""
    try:
        entries = sorted(e.name for e in os.scandir(runs_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return ()
    return tuple((name, file_stamp(os.path.join(runs_dir, name, "summary.json"))) for name in entries)


def run_stamp(run_dir: str | Path | None) -> tuple:
    if not run_dir:
        return ()
    return (str(run_dir), file_stamp(Path(run_dir) / "metrics.jsonl"), file_stamp(Path(run_dir) / "summary.json"))


@dataclass
class Progress:
    """Where a run stands, from its summary and the last records of its metrics."""

    step: int = 0
    total_steps: int | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    loss: float | None = None
    metric: str | None = None
    metric_value: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


def progress(summary: RunSummary, rows: list[dict[str, Any]]) -> Progress:
    p = Progress(total_steps=summary.total_steps, metric=summary.metric)
    train = [r for r in rows if "loss" in r]
    if train:
        last = train[-1]
        p.step, p.loss, p.elapsed_s = int(last.get("step", 0)), last.get("loss"), last.get("elapsed_s")
    evals = [r for r in rows if p.metric and f"eval_{p.metric}" in r]
    if evals:
        p.metric_value = evals[-1][f"eval_{p.metric}"]
    if summary.finished:
        p.step = int(summary.step or p.step)
        p.elapsed_s = summary.wall_time_s if summary.wall_time_s is not None else p.elapsed_s
        p.remaining_s = 0.0
    elif p.elapsed_s and p.step and p.total_steps:
        p.remaining_s = p.elapsed_s / p.step * max(0, p.total_steps - p.step)
    return p


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
