"""Study workers that cannot outlive their parent, and cells that cannot be trained twice at once.

- :func:`die_with_parent` runs first in every worker process: on Linux the kernel kills the worker the
  moment its parent dies, even by ``kill -9`` (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); everywhere a
  daemon thread also watches the parent's pid (a parent that died before the ``prctl``, other systems).
- :class:`CellLock` is an exclusive ``flock`` on ``<study>/locks/<cell key>.lock``, taken by whichever
  process trains the cell (a worker, or the study process itself with one worker) and held for the
  cell's life. The kernel drops it when that process exits or is killed, so no lock is ever stale, and a
  second ``surmlab study`` of the same folder leaves a cell alone while a live process holds it.
  Without ``fcntl`` (Windows) there is no lock: run one ``surmlab study`` per folder there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCKS_DIR = "locks"  # inside the study folder, beside runs/
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_EVERY_S = 1.0


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid`` (its parent) does; a worker pool's initializer."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the prctl took hold
        _kill_self()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCH_EVERY_S)
        _kill_self()

    threading.Thread(target=watch, name="surmlab-parent-watch", daemon=True).start()


class CellBusy(RuntimeError):
    """Another live process holds the cell."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"cell {key} is being trained by another process ({holder})")
        self.key = key
        self.holder = holder


def lock_path(folder: Path, key: str) -> Path:
    return Path(folder) / LOCKS_DIR / f"{key}.lock"


def _holder(handle: object) -> str:
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)  # type: ignore[attr-defined]
        text = handle.read().strip()  # type: ignore[attr-defined]
        if text:
            return text
    return "pid unknown"


class CellLock:
    """``with CellLock(folder, key):`` holds the cell for the block or raises :class:`CellBusy`.
    A holder is retried for ``patience_s`` first: another study only probes the lock for an instant."""

    def __init__(self, folder: Path, key: str, patience_s: float = 1.0) -> None:
        self.path = lock_path(folder, key)
        self.key = key
        self.patience_s = patience_s
        self._handle = None

    def __enter__(self) -> CellLock:
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held open for the cell's life
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(handle)
                    handle.close()
                    raise CellBusy(self.key, holder) from None
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else 'this host'}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None


def cell_holder(folder: Path, key: str) -> str | None:
    """Who holds the cell (``"pid N on HOST"``), or None when no live process does."""
    path = lock_path(folder, key)
    if fcntl is None or not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(handle)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None
