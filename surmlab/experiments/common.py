"""What every experiment shares: typed parameters per profile, their checks, seeds and result files.

An experiment module declares its parameters as a dataclass whose defaults are the ``smoke`` profile,
``PROFILES = {"smoke": Params(), "cpu": Params(...), "paper": Params(...)}``, a ``validate(p)`` that
raises ``ValueError`` on bad values, and its computation decorated with ``@experiment``::

    @common.experiment(NAME, PROFILES, validate)
    def run(p: Params, out: Path) -> pd.DataFrame: ...

The decorated ``run(profile="smoke", out_dir=None, **params)`` resolves the profile plus the caller's
overrides (``None`` = profile default; papermill's strings converted by each field's type), validates
them before any work (a typo stops the notebook in its first cell), makes the output folder, times the
computation and writes ``<name>.json`` / ``<name>.csv``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
from torch import nn

from ..data import SPECS, list_tasks
from ..fileio import atomic_write, read_json, write_json
from ..methods import method_info, prepare
from ..models import load_backbone, resolve_backbone
from ..provenance import environment as machine_environment
from ..study import StudySpec, study
from ..study.spec import SPEC_FILE
from ..train import train
from ..train_config import TrainConfig
from ..tuner import surm_layers, unload

PROFILE_NAMES = ("smoke", "cpu", "paper")
COMMAND_ENV = "SURMLAB_COMMAND"  # set by surmlab.reproduce so result files name the batch command

P = TypeVar("P")


# -- parameters ------------------------------------------------------------------------------------------


def parameter_names(params: Any) -> list[str]:
    """The parameters an experiment takes: the fields of its parameter dataclass (type or instance)."""
    return [f.name for f in fields(params)]


def as_list(value: Any) -> list[Any]:
    """``"a,b"`` or ``"a"`` or ``["a", "b"]`` -> a list (papermill ``-p`` values arrive as strings)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def convert(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the field type ``kind``: ``"a,b"`` -> a tuple, ``"3"`` -> 3, ``4096`` -> ``"4096"``."""
    if value is None:
        return None
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # X | None
        return convert(name, value, args[0])
    if typing.get_origin(kind) is tuple:
        return tuple(convert(name, v, args[0]) for v in as_list(value))
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return kind(value) if kind in (int, float, str) and not isinstance(value, bool) else value
    except ValueError:
        raise ValueError(f"{name} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}") from None


def resolve(profiles: Mapping[str, P], profile: str, params: Mapping[str, Any]) -> P:
    """The profile's parameters overridden by every non-``None`` entry of ``params``, converted to the
    types of the parameter dataclass; unknown names and profiles raise ``ValueError`` naming the known ones."""
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(profiles)}")
    defaults = profiles[profile]
    known = parameter_names(defaults)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this experiment takes: {', '.join(known)}")
    hints = typing.get_type_hints(type(defaults))
    return replace(defaults, **{k: convert(k, v, hints[k]) for k, v in params.items() if v is not None})


# -- checks ----------------------------------------------------------------------------------------------


def check_choice(what: str, values: Iterable[Any], known: Iterable[Any]) -> None:
    known = list(known)
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; known: {', '.join(map(str, known))}")


def check_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_seeds(seeds: Iterable[Any]) -> None:
    """``seeds`` means the same everywhere: the list of seeds to run (``0,1,2``), not a count."""
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of seeds >= 0 such as 0,1,2, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {seeds!r}")


def check_tasks(tasks: Iterable[str]) -> None:
    check_choice("task", [t for t in tasks if ":" not in t], list_tasks())


def check_backbone(name: str) -> None:
    resolve_backbone(name)  # raises ValueError naming the known backbones


def check_methods(methods: Iterable[str]) -> None:
    for method in methods:
        method_info(method)  # an unknown name is an error listing the known ones (older names resolve)


def num_labels(task: str, default: int = 2) -> int:
    """The task's label count where the registry knows it (``hf:``/``folder:`` tasks: ``default``)."""
    return SPECS[task].num_labels if task in SPECS else default


def check_budgets(backbone: str, labels: int, methods: Iterable[str], budget: Any, mode: str = "lora") -> None:
    """Prepare each budgeted method on a randomly initialised ``backbone`` (no weights loaded): an
    infeasible budget raises ``BudgetError`` here, before any data is read or any step is trained."""
    for method in methods:
        info = method_info(method)
        if not info.budgeted or budget is None:
            continue
        bb = load_backbone(backbone, labels, pretrained=False)
        prepare(method, bb.model, head=bb.head, budget=budget, mode=info.mode_for(mode))


def merged(model: nn.Module) -> nn.Module:
    """The model as plain layers: SURM (``surmlab.unload``) and PEFT (``merge_and_unload``) updates folded
    into the base weights; a model without updates as it is."""
    if surm_layers(model):
        return unload(model, merge=True)
    if hasattr(model, "merge_and_unload"):  # PEFT
        return model.merge_and_unload()
    return model


def check_grid(backbone: str, tasks: Iterable[str], methods: Iterable[str]) -> None:
    """Check the backbone, tasks and methods of a training grid."""
    check_backbone(backbone)
    check_tasks(tasks)
    check_methods(methods)


# -- runs and results ------------------------------------------------------------------------------------


def output_dir(out_dir: str | os.PathLike | None, name: str) -> Path:
    path = Path(out_dir) if out_dir else Path("results") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment() -> dict[str, Any]:
    """The machine, packages and commit (``surmlab.provenance.environment``)."""
    return machine_environment()


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


@dataclass(frozen=True)
class Experiment(Generic[P]):
    """One reproduced experiment: its parameters per profile, their checks and its computation.

    Calling it runs the shared prologue and epilogue around ``compute``; ``compute(p, out)`` is only
    the experiment's own work and returns its table."""

    name: str
    profiles: Mapping[str, P]
    validate: Callable[[P], None]
    compute: Callable[[P, Path], pd.DataFrame]

    def params(self, profile: str = "smoke", **params: Any) -> P:
        """The checked parameters of ``profile`` with ``params`` overriding its defaults."""
        p = resolve(self.profiles, profile, params)
        self.validate(p)
        return p

    def __call__(self, profile: str = "smoke", out_dir: str | os.PathLike | None = None, **params: Any) -> pd.DataFrame:
        started = start()
        p = self.params(profile, **params)
        out = output_dir(out_dir, self.name)
        table = self.compute(p, out)
        write_results(table, out, self.name, profile, asdict(p), started)
        return table


def experiment(
    name: str, profiles: Mapping[str, P], validate: Callable[[P], None]
) -> Callable[[Callable[[P, Path], pd.DataFrame]], Experiment[P]]:
    """Decorate an experiment's computation into its ``run(profile="smoke", out_dir=None, **params)``."""
    return lambda compute: Experiment(name, profiles, validate, compute)


def study_name(*parts: Any) -> str:
    """A study folder name from its parts (``hf:``/``glue/`` names made folder-safe; empty parts dropped)."""
    return "-".join(str(p) for p in parts if p not in (None, "")).replace("/", "-").replace(":", "-")


def baseline(methods: Iterable[str]) -> str:
    """The method a study compares every other with: ``lora`` where it is in the grid, else the first."""
    methods = tuple(methods)
    return "lora" if "lora" in methods else methods[0]


def train_options(**options: Any) -> dict[str, Any]:
    """A study's ``train`` options: the ones set (``None`` is ``TrainConfig``'s default)."""
    return {k: v for k, v in options.items() if v is not None}


def own_folder(spec: StudySpec, root: Path) -> StudySpec:
    """``spec``, renamed ``<name>-<fingerprint>`` where ``root/<name>`` holds a study with other settings:
    a notebook run again with a changed setting writes a new study beside the old one (and a run with
    either setting again continues its own) instead of stopping."""
    file = root / spec.name / SPEC_FILE
    if not file.exists():
        return spec
    saved = json.loads(json.dumps(StudySpec.from_dict(read_json(file)).to_dict()))
    if saved == json.loads(json.dumps(spec.to_dict())):
        return spec
    renamed = replace(spec, name=f"{spec.name}-{spec.fingerprint()[:8]}")
    print(f"studies/{spec.name} holds other settings: this study is studies/{renamed.name}")
    return renamed


def run_study(spec: StudySpec, out: Path, workers: int, **columns: Any) -> pd.DataFrame:
    """Run (or continue) ``spec`` in ``out/studies`` and return its summary (one row per method, budget
    and lr: mean, interval, paired comparison), with the backbone, task, ``columns`` and study folder.
    Changed settings go to a new study folder (``own_folder``)."""
    spec = own_folder(spec, out / "studies")
    result = study(spec, root=out / "studies", workers=workers, progress=False)  # no bars in reports
    return result.summary.assign(backbone=spec.backbone, task=spec.task, **columns, study=str(result.folder))


def train_row(**config: Any) -> dict[str, Any]:
    """Train one ``TrainConfig`` and flatten its summary into a table row."""
    cfg = TrainConfig(**config)
    summary = train(cfg, progress=False)
    return {
        "backbone": cfg.backbone,
        "task": cfg.task,
        "method": cfg.method,
        "mode": cfg.mode if method_info(cfg.method).takes_mode else "",  # shown only where a method has a mode
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
