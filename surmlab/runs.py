"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json`` and saved weights.

Every file but the append-only metrics log is written atomically (temp file + rename), so a crash
never leaves a half-written JSON behind. ``summary.json`` is read and written as a ``RunSummary``,
``config.json`` as a ``RunConfig``; ``list_runs`` turns a folder of runs into a DataFrame.

Weights and checkpoints hold no pickles, so that opening a run folder someone sent cannot run code:
tensors go to safetensors files, optimiser and schedule state is read with
``torch.load(weights_only=True)``, loop state and RNG scalars are JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; one trainer per run folder is then up to the user
    fcntl = None

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from .fileio import atomic_write, read_json, write_json
from .status import RECORDED, RunStatus
from .train_config import TrainConfig
from .tuner import read_safetensors, save_adapter, surm_layers

__all__ = [
    "RunConfig",
    "RunDir",
    "RunStatus",
    "RunSummary",
    "SavedRng",
    "TaskInfo",
    "atomic_write",
    "list_runs",
    "load_checkpoint",
    "load_weights",
    "pid_alive",
    "read_json",
    "save_checkpoint",
    "save_weights",
    "trainable_state",
    "write_json",
]

log = logging.getLogger(__name__)

NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open() refuses a link where the platform can say so
CHECKPOINT_NAME = re.compile(r"step-\d{9}")


class UnsafeRunFolder(ValueError):
    """A run folder holds a link or a pointer that leads outside it."""


class RunBusy(ValueError):
    """Another live process holds the run's lock."""


def refuse_links(root: Path, paths: list[Path]) -> None:
    """Raise ``UnsafeRunFolder`` naming the first of ``paths`` that is a symbolic link."""
    for path in paths:
        if path.is_symlink():
            raise UnsafeRunFolder(f"{path} is a symbolic link; a run folder ({root.name}) holds only its own files")


# A "running" run whose trainer is gone: its process ended on this machine, or (another machine) its
# heartbeat is older than this. ``list_runs`` shows it as "interrupted"; ``--resume`` continues it.
HEARTBEAT_STALE_S = 600.0


# -- records ---------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """Everything ``summary.json`` holds: what the run is, where it stands and how it ended.

    ``from_dict`` reads files of any age: a missing key takes its default, and a key this version does
    not know is kept in ``extra`` and written back unchanged (a summary written before
    ``method_description`` existed held the description under ``method``). ``run_dir`` is where the
    summary was read from (or the run ``train`` just made); it is not stored in the file.
    """

    status: RunStatus | None = None  # what a trainer recorded (RECORDED); None before one wrote it
    reason: str | None = None  # why a run failed or stopped
    config: TrainConfig | None = None  # the run's training options
    metric: str | None = None  # the task's main metric, the key of best/final_metrics
    method: str | None = None  # the method's registry name, e.g. "surm-circulant"
    method_description: str | None = None  # the method as described to people: "surm-circulant (block_size=...)"
    targets: str | None = None  # the rows the method adapts, e.g. "blocks.*.attn.qkv[q,v] (x12)"
    hyper: dict[str, Any] | None = None
    trainable_params: int | None = None
    method_params: int | None = None  # the method's own parameters (the budget), head excluded
    head_params: int | None = None
    total_params: int | None = None
    backbone_pretrained: bool | None = None
    backbone_source: str | None = None
    task_description: str | None = None
    train_examples: int | None = None
    eval_examples: int | None = None
    world_size: int | None = None
    device: str | None = None
    device_name: str | None = None
    versions: dict[str, str] | None = None
    git_commit: str | None = None
    total_steps: int | None = None
    step: int | None = None
    final_metrics: dict[str, float] | None = None
    best_metrics: dict[str, float] | None = None
    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    param_checksums: list[float] | None = None  # one per process: equal iff gradients were synchronised
    pid: int | None = None  # the trainer's process, host and last sign of life
    host: str | None = None
    heartbeat: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys of a newer (or older) version
    run_dir: str | None = field(default=None, compare=False)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The keys of ``summary.json`` this version knows."""
        return frozenset(f.name for f in fields(cls)) - {"extra", "run_dir"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: str | Path | None = None) -> RunSummary:
        if not isinstance(data, dict):
            raise ValueError(f"a run summary is a JSON object, not {type(data).__name__}")
        known = cls.field_names()
        extra = {k: v for k, v in data.items() if k not in known}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("status") is not None:
            values["status"] = RunStatus(values["status"])
        if isinstance(values.get("config"), dict):
            values["config"] = TrainConfig.from_dict(values["config"]) if values["config"] else None
        if "method_description" not in data and values.get("method") is not None:  # written before it existed
            values["method_description"] = values["method"]
            values["method"] = values["config"].method if values.get("config") else None
        return cls(**values, extra=extra, run_dir=None if run_dir is None else str(run_dir))

    def to_dict(self) -> dict[str, Any]:
        """What ``summary.json`` holds (``extra`` merged back in, ``run_dir`` left out)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "run_dir")}
        data["config"] = None if self.config is None else asdict(self.config)
        data["status"] = None if self.status is None else self.status.value
        return {**self.extra, **data}

    def changes(self) -> dict[str, Any]:
        """The fields this record sets (not None): what it changes when laid over another."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("extra", "run_dir") and getattr(self, f.name) is not None
        }

    @property
    def finished(self) -> bool:
        """Whether a trainer recorded an outcome (completed, stopped or failed)."""
        return self.status is not None and self.status.finished

    @property
    def best(self) -> float | None:
        """The best evaluation's value of the run's metric."""
        return (self.best_metrics or {}).get(self.metric or "")

    @property
    def final(self) -> float | None:
        """The last evaluation's value of the run's metric."""
        return (self.final_metrics or {}).get(self.metric or "")

    # The training options the run table shows.
    @property
    def backbone(self) -> str | None:
        return self.config.backbone if self.config else None

    @property
    def task(self) -> str | None:
        return self.config.task if self.config else None

    @property
    def method_name(self) -> str | None:
        """The method's registry name (the same as ``method``; kept for older callers)."""
        return self.method

    @property
    def mode(self) -> str | None:
        return self.config.mode if self.config else None


@dataclass
class TaskInfo:
    """What prediction needs to know about the task a run trained on."""

    name: str
    modality: str
    num_labels: int
    label_names: list[str] | None = None
    metric: str | None = None


@dataclass
class RunConfig:
    """A run's ``config.json``: its training options, its task, and the layers its method changed
    (one row per layer, as ``Prepared.layers``)."""

    train: TrainConfig
    task: TaskInfo
    layers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict) or not isinstance(data.get("train"), dict) or "task" not in data:
            raise ValueError("a run's config.json is a JSON object with 'train' and 'task'")
        return cls(TrainConfig.from_dict(data["train"]), TaskInfo(**data["task"]), data.get("layers") or [])

    def to_dict(self) -> dict[str, Any]:
        return {"train": asdict(self.train), "task": asdict(self.task), "layers": self.layers}


# -- run folders -------------------------------------------------------------------------------------


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
    def final_dir(self) -> Path:
        """The latest weights (``final/``; ``adapter/`` in run folders written before it was renamed)."""
        old, new = self.path / "adapter", self.path / "final"
        return old if (old.is_dir() or old.is_symlink()) and not (new.exists() or new.is_symlink()) else new

    adapter_dir = final_dir  # the older name

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    def write_config(self, config: RunConfig) -> None:
        write_json(self.config_file, config.to_dict())

    def config(self) -> RunConfig:
        """The run's ``config.json``; a file that is not one is an error naming it."""
        try:
            return RunConfig.from_dict(read_json(self.config_file))
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{self.config_file} is not a run configuration: {err}") from None

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (a crash can lose at most the line being written); never through a link."""
        fd = os.open(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o644)
        with os.fdopen(fd, "a") as f:
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

    def summary(self) -> RunSummary:
        """The run's summary; an empty one (``status`` None) while none was written."""
        data = read_json(self.summary_file) if self.summary_file.exists() else {}
        return RunSummary.from_dict(data, run_dir=self.path)

    def update_summary(self, **changes: Any) -> RunSummary:
        """Set the named ``RunSummary`` fields and write the summary; a name it lacks is an error."""
        unknown = sorted(set(changes) - RunSummary.field_names())
        if unknown:
            raise ValueError(f"unknown summary fields {unknown}; known: {sorted(RunSummary.field_names())}")
        status = changes.get("status")
        if status is not None:
            if status not in RECORDED:
                known = ", ".join(s.value for s in RunStatus if s in RECORDED)
                raise ValueError(f"unknown run status {status!r}; known: {known}")
            changes["status"] = RunStatus(status)
        summary = replace(self.summary(), **changes)
        write_json(self.summary_file, summary.to_dict())
        return summary

    def request_stop(self) -> None:
        self.stop_file.touch()

    # -- liveness ------------------------------------------------------------------------------------
    def mark_alive(self) -> RunSummary:
        """Record this process as the run's trainer, with a fresh heartbeat."""
        return self.update_summary(**self._alive())

    def status(self, summary: RunSummary | None = None) -> RunStatus | None:
        """What the run's files say, with a "running" run whose trainer is gone read as interrupted."""
        summary = self.summary() if summary is None else summary
        if summary.status is RunStatus.RUNNING and not self.trainer_alive(summary):
            return RunStatus.INTERRUPTED
        return summary.status

    def trainer_alive(self, summary: RunSummary | None = None) -> bool:
        """Whether a "running" run still has a live trainer (see ``HEARTBEAT_STALE_S``)."""
        summary = self.summary() if summary is None else summary
        if summary.status is not RunStatus.RUNNING:
            return False
        if summary.host == socket.gethostname():
            return pid_alive(summary.pid)
        return time.time() - float(summary.heartbeat or 0) < HEARTBEAT_STALE_S

    # -- a trainer's three calls: start, checkpoint, finish ----------------------------------------------
    def start(
        self,
        description: RunSummary,
        config: RunConfig,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        main: bool = True,
    ) -> tuple[RunSummary, dict[str, Any] | None, SavedRng | None]:
        """Load the latest checkpoint into the model, optimiser and schedule (if there is one), keep the
        metrics it had logged, write ``config.json`` and record the run as running with ``description``.

        Returns the running summary, the checkpoint's loop state (None: the run starts at step 0) and
        its RNG, which the caller restores once its data iterator exists. Only the ``main`` process writes.
        """
        folder = self.latest_checkpoint()
        loop_state, rng = load_checkpoint(folder, model, optimizer, scheduler) if folder is not None else (None, None)
        summary = replace(self.summary(), **description.changes(), status=RunStatus.RUNNING, reason=None)
        if not main:
            return summary, loop_state, rng
        if loop_state is None and self.metrics():
            log.warning("%s has no usable checkpoint: it starts over at step 0 and its log with it", self.path.name)
            self.truncate_metrics(0)
        elif loop_state is not None and loop_state.get("metrics_lines") is not None:
            self.truncate_metrics(loop_state["metrics_lines"])  # drop what was logged after the checkpoint
        self.write_config(config)
        return self._record(replace(summary, **self._alive())), loop_state, rng

    def checkpoint(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loop_state: dict[str, Any],
    ) -> None:
        """Everything a resume needs, written so that a crash keeps the previous checkpoint; the latest
        weights in ``final/``; a fresh heartbeat."""
        self.write_checkpoint(step, lambda folder: save_checkpoint(folder, model, optimizer, scheduler, loop_state))
        save_weights(model, self.final_dir)
        self.mark_alive()

    def finish(self, summary: RunSummary) -> RunSummary:
        """Record how the run ended (``summary.status``: completed, stopped or failed)."""
        if summary.status not in RECORDED - {RunStatus.RUNNING}:
            raise ValueError(f"a run finishes completed, stopped or failed, not {summary.status!r}")
        return self._record(summary)

    def _record(self, summary: RunSummary) -> RunSummary:
        write_json(self.summary_file, summary.to_dict())
        return replace(summary, run_dir=str(self.path))

    @staticmethod
    def _alive() -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}

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
        """The newest complete checkpoint folder, if any (a run folder of an older layout: ``checkpoint/``).

        ``latest.json`` is read as untrusted: it must name a ``step-<N>`` folder right inside
        ``checkpoint/``, and neither that folder nor a file in it may be a link."""
        root = self.checkpoint_dir
        pointer = root / "latest.json"
        if pointer.is_symlink():
            raise UnsafeRunFolder(f"{pointer} is a symbolic link; a run folder holds only its own files")
        if pointer.exists():
            try:
                name = read_json(pointer)["folder"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{pointer} is not a checkpoint pointer ({type(err).__name__}: {err})") from None
            if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
                raise UnsafeRunFolder(f"{pointer} names {name!r}, not a checkpoint folder (step-<9 digits>)")
            folder = root / name
            if not folder.is_dir():
                return None
        elif (root / "state.json").exists():
            folder = root
        else:
            return None
        refuse_links(folder, [folder, *folder.iterdir()])
        return folder

    # -- safety: a run folder someone sent must not reach outside itself ----------------------------------
    def check_contained(self) -> None:
        """Refuse a run folder whose own files or folders are links (a trainer would write through them)."""
        names = ("config.json", "metrics.jsonl", "summary.json", "STOP", ".lock", "checkpoint", "final", "adapter",
                 "best")  # fmt: skip
        refuse_links(self.path, [self.path / name for name in names])
        for folder in (self.checkpoint_dir, self.final_dir, self.best_dir):
            if folder.is_dir():
                refuse_links(self.path, list(folder.iterdir()))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the run's lock (an OS file lock, released when the process ends however it ends): one
        trainer per run folder, so two ``--resume`` of one run cannot both train it."""
        self.check_contained()
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RunBusy(
                        f"{self.path.name} is being trained by another process; stop it before resuming"
                    ) from None
            yield
        finally:
            os.close(fd)


RUN_COLUMNS = [
    "run", "status", "backbone", "task", "method", "mode", "targets", "trainable_params", "total_params",
    "metric", "best", "final", "wall_time_s", "reason", "path",
]  # fmt: skip


def list_runs(root: str | Path = "runs") -> pd.DataFrame:
    """All runs under ``root`` as a pandas DataFrame, newest first (one row per run)."""
    rows = []
    for summary_file in sorted(Path(root).glob("*/summary.json")):
        run = RunDir(summary_file.parent)
        try:
            s = run.summary()
        except (OSError, ValueError, TypeError):  # unreadable, not JSON, or not a summary
            continue
        status, reason = run.status(s), s.reason
        if status is RunStatus.INTERRUPTED:
            reason = "the trainer ended without recording an outcome; --resume continues it"
        rows.append(
            {
                "run": run.path.name,
                "status": status,
                "backbone": s.backbone,
                "task": s.task,
                "method": s.method,
                "mode": s.mode,
                "targets": s.targets,
                "trainable_params": s.trainable_params,
                "total_params": s.total_params,
                "metric": s.metric,
                "best": s.best,
                "final": s.final,
                "wall_time_s": s.wall_time_s,
                "reason": reason,
                "path": str(run.path),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS).iloc[::-1].reset_index(drop=True)


# -- weights and checkpoints ------------------------------------------------------------------------------

WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
STATE_FILE = "state.json"
RNG_FILE = "rng.safetensors"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    """Trainable tensors (any method) and the portable adapter files: surmlab's for SURM, PEFT's own for
    the PEFT baselines."""
    from .methods.peft_baselines import save_peft_adapter

    folder.mkdir(parents=True, exist_ok=True)
    state = trainable_state(model)
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    if surm_layers(model):
        save_adapter(model, folder)
    else:
        save_peft_adapter(model, folder)


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    state = read_safetensors(folder / WEIGHTS_FILE)
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(f"saved weights {missing[:3]} do not exist in the rebuilt model")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop_state: dict[str, Any],
) -> None:
    """Everything a resume needs into ``folder``: weights, optimiser, schedule, RNG, and ``loop_state``
    (JSON) with the Python and NumPy RNG scalars added under ``"rng"``.

    Not accelerate's ``save_state``: it pickles the RNG and sampler state, and unpickling a run folder
    someone sent could run their code, so each piece is written here as data."""
    save_weights(model, folder)
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    write_json(folder / STATE_FILE, {**loop_state, "rng": write_rng_state(folder)})


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any], SavedRng | None]:
    """Load what ``save_checkpoint`` wrote; returns the loop state and the saved RNG (None if the
    checkpoint has none), which the caller restores when its data iterator exists."""
    load_weights(model, folder)
    optimizer.load_state_dict(load_plain(folder / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_plain(folder / SCHEDULER_FILE))
    loop_state = read_json(folder / STATE_FILE)
    rng = SavedRng.read(folder, loop_state.get("rng") or {}) if (folder / RNG_FILE).exists() else None
    return loop_state, rng


def load_plain(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: a crafted run folder must not run code, so a file that
    holds anything but tensors and plain values is refused, in one line naming it."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} holds more than tensors and plain values, and loading it could run code: refused "
            f"(Weights only load failed: {first})"
        ) from None


def write_rng_state(folder: Path) -> dict[str, Any]:
    """torch's (CPU and CUDA) generators as tensors into ``RNG_FILE``; returns Python's and NumPy's
    scalars (JSON) for the loop state."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = t
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    atomic_write(folder / RNG_FILE, lambda tmp: save_file(tensors, tmp))
    return {"python": random.getstate(), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}


@dataclass
class SavedRng:
    """The random-number state of a checkpoint: torch's tensors, Python's and NumPy's scalars."""

    tensors: dict[str, torch.Tensor]
    python: list[Any] | None = None
    numpy: list[Any] | None = None

    @classmethod
    def read(cls, folder: Path, scalars: dict[str, Any]) -> SavedRng:
        return cls(read_safetensors(folder / RNG_FILE), scalars.get("python"), scalars.get("numpy"))

    def restore(self) -> None:
        tensors = self.tensors
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        if self.python is not None:
            version, internal, gauss = self.python
            random.setstate((version, tuple(internal), gauss))
        if self.numpy is not None:
            kind, pos, has_gauss, gauss = self.numpy
            np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
