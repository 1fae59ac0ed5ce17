"""What every experiment shares: profiles, parameter validation, seeds and result files.

An experiment module defines ``PROFILES = {"smoke": {...}, "cpu": {...}, "paper": {...}}`` (its
parameters and their defaults per profile) and ``run(profile="smoke", out_dir=None, **params)``.
``resolve`` turns the profile plus the caller's overrides (``None`` = profile default) into the final
parameters and rejects unknown names, so a typo stops the notebook in its first cell.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..fileio import atomic_write, write_json
from ..provenance import git_commit, package_versions

PROFILE_NAMES = ("smoke", "cpu", "paper")
COMMAND_ENV = "SURMLAB_COMMAND"  # set by surmlab.reproduce so result files name the batch command


def resolve(profiles: Mapping[str, Mapping[str, Any]], profile: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's defaults overridden by every non-``None`` entry of ``params``."""
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(profiles)}")
    defaults = dict(profiles[profile])
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this experiment takes: {', '.join(defaults)}")
    return {**defaults, **{k: v for k, v in params.items() if v is not None}}


def as_list(value: Any) -> list[Any]:
    """``"a,b"`` or ``"a"`` or ``["a", "b"]`` -> a list (papermill ``-p`` values arrive as strings)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def check_choice(what: str, values: Iterable[Any], known: Iterable[Any]) -> None:
    known = list(known)
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; known: {', '.join(map(str, known))}")


def check_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_tasks(tasks: Iterable[str]) -> None:
    from ..data import list_tasks

    check_choice("task", [t for t in tasks if ":" not in t], list_tasks())


def check_backbone(name: str) -> None:
    from ..models import _resolve

    _resolve(name)  # raises ValueError naming the known backbones


def check_methods(methods: Iterable[str]) -> None:
    from ..methods import METHODS

    check_choice("method", methods, METHODS)


def check_budgets(backbone: str, num_labels: int, methods: Iterable[str], budget: Any, mode: str = "lora") -> None:
    """Prepare each budgeted method on a randomly initialised ``backbone`` (no weights loaded): an
    infeasible budget raises ``BudgetError`` here, before any data is read or any step is trained."""
    from ..methods import METHODS, prepare
    from ..models import load_backbone

    for method in methods:
        if not METHODS[method].budgeted or budget is None:
            continue
        bb = load_backbone(backbone, num_labels, pretrained=False)
        prepare(method, bb.model, head=bb.head, budget=budget, mode=mode if method.startswith("surm-") else "lora")


def output_dir(out_dir: str | os.PathLike | None, name: str) -> Path:
    path = Path(out_dir) if out_dir else Path("results") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment() -> dict[str, Any]:
    return {
        "packages": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@dataclass(frozen=True)
class Started:
    """When an experiment began and with what code: a long run outlives commits made while it works."""

    time: float
    environment: dict[str, Any]


def start() -> Started:
    return Started(time.time(), environment())


def command() -> str:
    return os.environ.get(COMMAND_ENV) or " ".join(shlex.quote(a) for a in sys.argv)


def relative_paths(table: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """Paths under ``root`` (run folders) made relative to it, so a results folder can move or be shared."""
    prefix = str(Path(root).resolve()) + os.sep

    def relative(value: Any) -> Any:
        return value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else value

    return table.map(relative)


def write_results(
    table: pd.DataFrame, out_dir: Path, name: str, profile: str, params: Mapping[str, Any], started: Started
) -> dict[str, Path]:
    """``<name>.csv`` (the table) and ``<name>.json`` (table + command, parameters, environment)."""
    table = relative_paths(table, out_dir)
    csv_path = atomic_write(out_dir / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    record = {
        "experiment": name,
        "profile": profile,
        "parameters": dict(params),
        "command": command(),
        "environment": started.environment,
        "wall_time_s": round(time.time() - started.time, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": table.to_dict(orient="records"),
    }
    json_path = write_json(out_dir / f"{name}.json", record)
    return {"csv": csv_path, "json": json_path}


def train_row(**config: Any) -> dict[str, Any]:
    """Train one ``TrainConfig`` and flatten its summary into a table row."""
    from ..methods import method_info
    from ..train import TrainConfig, train

    cfg = TrainConfig(**config)
    summary = train(cfg, progress=False)
    return {
        "backbone": cfg.backbone,
        "task": cfg.task,
        "method": cfg.method,
        "mode": cfg.mode if method_info(cfg.method).takes_mode else "",  # mode is a SURM setting
        "seed": cfg.seed,
        "hyper": str(summary.hyper),
        "targets": summary.targets,
        "method_params": summary.method_params,
        "trainable_params": summary.trainable_params,
        "metric": summary.metric,
        "final": summary.final,
        "best": summary.best,
        "wall_time_s": summary.wall_time_s,
        "run_dir": summary.run_dir,
    }


def check_grid(p: dict[str, Any]) -> None:
    """Normalise and check the backbone x tasks x methods x seeds parameters of a training grid."""
    p["tasks"], p["methods"] = as_list(p["tasks"]), as_list(p["methods"])
    p["seeds"] = [int(s) for s in as_list(p["seeds"])]
    check_backbone(p["backbone"])
    check_tasks(p["tasks"])
    check_methods(p["methods"])
