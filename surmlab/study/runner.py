"""Run a study's cells: skip finished ones, resume interrupted ones, record failures, in parallel.

Each cell is an ordinary run in the study's run store (``<study>/runs``), named by its key, so
``surmlab runs --runs-dir <study>/runs`` lists them and ``--resume`` works on any of them. With several
workers, cells run in worker processes (one per GPU where there are GPUs; on CPU the cores are shared
out), so even a worker killed outright fails only its cell; the parent alone writes the study's files.
With one worker, cells run in this process, one after another (an exception still fails only its cell).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..fileio import write_json
from ..methods import method_info, prepare
from ..models import load_backbone
from ..runs import RunDir, RunStatus
from ..train import train
from ..train_config import TrainConfig
from .guard import CellBusy, CellLock, cell_holder, die_with_parent
from .raystart import start_ray
from .spec import Cell, StudySpec

CELLS_FILE = "cells.json"


@dataclass
class CellOutcome:
    """What became of one cell: its run folder (relative to the study), status and, if failed, why."""

    key: str
    status: RunStatus  # completed | failed | interrupted | stopped | pending
    run: str | None = None
    reason: str | None = None
    wall_time_s: float | None = None


def check_budgets(spec: StudySpec) -> None:
    """Prepare every budgeted method at every budget, and every method in ``spec.hyper`` at its
    hyper-parameters, on a randomly initialised backbone (no weights read): an infeasible budget or
    setting fails here, naming method and budget, before any training starts."""
    settings = [(m, {"budget": b}) for m in spec.methods if spec.sized(m) for b in spec.budgets]
    settings += [(m, {"hyper": h}) for m, h in spec.hyper.items()]
    for method, setting in settings:
        backbone = load_backbone(spec.backbone, 2, pretrained=False)
        mode = method_info(method).mode_for(spec.mode)
        try:
            prepare(method, backbone.model, head=backbone.head, mode=mode, **setting)
        except ValueError as err:  # a BudgetError keeps its type
            where = f"budget {setting['budget']}" if "budget" in setting else f"hyper {setting['hyper']}"
            raise type(err)(f"study {spec.name}: {method} at {where}: {err}") from None


def find_run(runs_dir: Path, key: str) -> Path | None:
    """The newest run folder whose configuration is named ``key``."""
    found = []
    for config_file in runs_dir.glob("*/config.json"):
        try:
            if RunDir(config_file.parent).config().train.name == key:
                found.append(config_file.parent)
        except (OSError, ValueError, TypeError):
            continue
    return max(found, key=lambda p: p.name) if found else None


def cell_state(runs_dir: Path, key: str) -> tuple[RunStatus, Path | None]:
    """``(status, run folder)`` of a cell from its run store: pending when it never started;
    interrupted when its trainer died (or died before it recorded anything)."""
    run = find_run(runs_dir, key)
    if run is None:
        return RunStatus.PENDING, None
    return RunDir(run).status() or RunStatus.INTERRUPTED, run


def _work(config: dict[str, Any], folder: str, threads: int | None, device: str | None) -> dict[str, Any]:
    """One cell (in a worker process, or here); every failure comes back as data, never as a dead pool.
    The cell's lock is held while it trains, and its state is read again under the lock: whether to
    resume or start it is decided by the one process that holds it."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.time()
    key = config["name"]
    try:
        with CellLock(Path(folder), key):
            status, run = cell_state(Path(config["runs_dir"]), key)
            if status is RunStatus.COMPLETED:  # finished by another study since this one looked
                return {"status": status, "reason": None, "wall_time_s": 0.0}
            if status is RunStatus.RUNNING:  # a trainer outside any study, e.g. a --resume by hand
                reason = f"{run.name} is being trained by another process; run the study again when it ends"
                return {"status": status, "reason": reason, "wall_time_s": 0.0}
            resume = str(run) if run is not None and status.resumable else None
            summary = train(TrainConfig(**config), resume=resume, progress=False)
        return {"status": summary.status, "reason": summary.reason, "wall_time_s": time.time() - started}
    except CellBusy as err:
        return {"status": RunStatus.RUNNING, "reason": f"{err}; run the study again when it ends", "wall_time_s": 0.0}
    except Exception as err:  # recorded by the parent; the other cells go on
        reason = f"{type(err).__name__}: {err}"
        return {"status": RunStatus.FAILED, "reason": reason, "wall_time_s": time.time() - started}


class InlinePool:
    """One worker: each cell runs in this process as it is submitted (no process start-up)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


class RayPool:
    """Cells as Ray tasks, on a cluster (``address``: ``auto`` or ``host:port``) or on a Ray instance
    started here (``local``). The study folder must be on storage every node shares."""

    def __init__(self, address: str, workers: int) -> None:
        ray = start_ray(address, workers)  # lean; a failure is one line naming --workers
        self.ray = ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(_work)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self.task.remote(*args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


def run_cells(
    spec: StudySpec, folder: Path, workers: int = 1, progress: bool = True, ray: str | None = None
) -> list[CellOutcome]:
    """Run every cell not yet completed (resuming interrupted ones); returns every cell's outcome.
    ``workers`` processes run at once (at most one per GPU; one: in this process); ``ray`` hands the
    cells to Ray instead."""
    runs_dir = folder / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    cells = spec.cells()
    outcomes: dict[str, CellOutcome] = {}
    queue: list[Cell] = []
    for cell in cells:
        status, run = cell_state(runs_dir, cell.key)
        outcomes[cell.key] = CellOutcome(cell.key, status, str(run.relative_to(folder)) if run else None)
        if (holder := cell_holder(folder, cell.key)) is not None:  # another `surmlab study` trains it now
            outcomes[cell.key].status = RunStatus.RUNNING
            outcomes[cell.key].reason = f"being trained by another process ({holder})"
        elif status is not RunStatus.COMPLETED:  # a failed cell is tried again; an interrupted one resumed
            queue.append(cell)
    save_outcomes(folder, outcomes)
    gpus = 0 if ray else torch.cuda.device_count()
    workers = max(1, min(workers, gpus or workers))
    inline = workers == 1 and not ray
    threads = None if inline else max(1, (os.cpu_count() or 1) // workers)
    devices: list[str | None] = [str(i) for i in range(workers)] if gpus and not inline else [None] * workers
    bar = tqdm(total=len(cells), initial=len(cells) - len(queue), desc=spec.name, disable=not progress, unit="cell")
    running: dict[Future, tuple[Cell, str | None, Any]] = {}

    def new_pool() -> Any:
        if inline:
            return InlinePool()
        if ray:
            return RayPool(ray, workers)
        return ProcessPoolExecutor(  # workers die with this process, even when it is killed outright
            workers, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
        )

    pool = new_pool()
    try:
        while queue or running:
            while queue and devices:  # one cell per free worker (per GPU)
                cell = queue.pop(0)
                device = devices.pop(0)
                config = spec.train_config(cell, runs_dir)
                future = pool.submit(_work, config, str(folder), threads, device)
                running[future] = (cell, device, pool)
                outcomes[cell.key].status = RunStatus.RUNNING
            bar.set_postfix(running=len(running), left=len(queue))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                cell, device, used = running.pop(future)
                devices.append(device)
                try:
                    result = future.result()
                except Exception as err:  # the worker itself died: killed, out of memory, crashed
                    reason = f"the worker process died ({type(err).__name__}: {err})"
                    result = {"status": RunStatus.FAILED, "reason": reason, "wall_time_s": None}
                    if isinstance(err, BrokenProcessPool) and used is pool:  # the other cells need a new pool
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                _, run = cell_state(runs_dir, cell.key)
                outcomes[cell.key] = CellOutcome(
                    cell.key,
                    RunStatus(result["status"]),
                    str(run.relative_to(folder)) if run else None,
                    result["reason"],
                    result["wall_time_s"],
                )
                save_outcomes(folder, outcomes)
                bar.update(1)
    finally:
        pool.shutdown()
    bar.close()
    return [outcomes[c.key] for c in cells]


def save_outcomes(folder: Path, outcomes: dict[str, CellOutcome]) -> None:
    write_json(folder / CELLS_FILE, [asdict(o) for o in outcomes.values()])


def load_outcomes(folder: Path) -> list[CellOutcome]:
    file = folder / CELLS_FILE
    rows = json.loads(file.read_text()) if file.exists() else []
    return [CellOutcome(**{**row, "status": RunStatus(row["status"])}) for row in rows]
