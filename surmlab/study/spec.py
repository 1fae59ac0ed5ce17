"""A study's specification: one backbone and task, a grid of methods x budgets x learning rates x seeds.

Everything is checked before any training starts: unknown methods, an empty seed list, training
options that are not ``TrainConfig`` fields, a budget some method cannot meet, and a study folder
that was written by a different spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..budget import parse_budget
from ..fileio import read_json, write_json
from ..methods import method_info
from ..train_config import TrainConfig

SPEC_FILE = "spec.json"
# TrainConfig fields a study sets per cell; the spec's ``train`` options may set any other field.
CELL_FIELDS = ("backbone", "task", "method", "budget", "hyper", "seed", "lr", "runs_dir", "name", "mode")


@dataclass(frozen=True)
class Cell:
    """One run of the grid. ``budget`` is None for a method without a size knob (or with fixed
    hyper-parameters); ``lr`` None is the method's default."""

    method: str
    budget: str | None
    seed: int
    lr: float | None = None

    @property
    def key(self) -> str:
        """The cell's name, which is also its run's ``TrainConfig.name`` in the study's run store."""
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        return f"{self.method}-{self.budget or 'fixed'}{lr}-seed{self.seed}"


@dataclass(frozen=True)
class StudySpec:
    name: str
    backbone: str
    task: str
    methods: tuple[str, ...]
    budgets: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float | None, ...] = (None,)
    baseline: str = "lora"  # the method every other is compared with, paired by seed, at the same budget
    mode: str = "lora"  # SURM's mode for surm-* methods
    # methods run at fixed hyper-parameters instead of the budgets, e.g. {"adapter": {"bottleneck": 64}};
    # an empty mapping is the method's defaults (a SURM adapter's one full-size block)
    hyper: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # further TrainConfig fields, e.g. max_steps

    def __post_init__(self) -> None:
        for name in ("methods", "budgets", "seeds", "lrs"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple([value] if isinstance(value, str | int | float) else value))
        object.__setattr__(self, "budgets", tuple(str(b) for b in self.budgets))
        if not self.name or "/" in self.name:
            raise ValueError(f"study name must be a non-empty folder name, got {self.name!r}")
        if not self.methods:
            raise ValueError("the study names no method")
        for method in (*self.methods, self.baseline):
            method_info(method)  # a clear error listing the known methods
        if self.baseline not in self.methods:
            raise ValueError(f"baseline {self.baseline!r} is not among the methods {list(self.methods)}")
        if not self.seeds:
            raise ValueError("the seed list is empty: give at least one seed (three or more for intervals)")
        if any(not isinstance(s, int) or isinstance(s, bool) for s in self.seeds) or len(set(self.seeds)) < len(
            self.seeds
        ):
            raise ValueError(f"seeds must be distinct whole numbers, got {list(self.seeds)}")
        for budget in self.budgets:
            parse_budget(budget)
        stray = sorted(set(self.hyper) - set(self.methods))
        if stray:
            raise ValueError(f"hyper names {stray}, which are not among the methods {list(self.methods)}")
        for method, values in self.hyper.items():
            if not isinstance(values, dict):
                raise ValueError(f"hyper of {method!r} must be a mapping, e.g. {{}} or {{'bottleneck': 64}}")
            method_info(method).check_hyper(values)
        if any(self.sized(m) for m in self.methods) and not self.budgets:
            raise ValueError("budgeted methods need at least one budget (or fixed hyper-parameters in hyper)")
        if not self.lrs:
            raise ValueError("lrs is empty: give learning rates, or None for each method's default")
        known = {f.name for f in fields(TrainConfig)} - set(CELL_FIELDS)
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown} in the study spec; known: {sorted(known)}")
        for cell in self.cells():  # the values too, before a folder is claimed (not once per failing cell)
            try:
                TrainConfig(**self.train_config(cell, "runs"))
            except (TypeError, ValueError) as err:
                raise ValueError(f"study {self.name}: {err}") from None

    # -- the grid -----------------------------------------------------------------------------------------
    def sized(self, method: str) -> bool:
        """Whether ``method`` runs once per budget (it has a size knob and no fixed hyper-parameters)."""
        return method_info(method).budgeted and method not in self.hyper

    def cells(self) -> list[Cell]:
        """Every run of the grid; a method without a size knob (or in ``hyper``) once per seed and lr. Seeds are the
        outermost loop, so a study stopped part-way still compares every method on the seeds it finished."""
        out: list[Cell] = []
        for seed, lr, method in itertools.product(self.seeds, self.lrs, self.methods):
            budgets: tuple[str | None, ...] = self.budgets if self.sized(method) else (None,)
            out.extend(Cell(method, budget, seed, lr) for budget in budgets)
        return out

    def train_config(self, cell: Cell, runs_dir: str | Path) -> dict[str, Any]:
        """The ``TrainConfig`` fields of one cell."""
        return {
            **self.train,
            "backbone": self.backbone,
            "task": self.task,
            "method": cell.method,
            "budget": cell.budget,
            "hyper": dict(self.hyper.get(cell.method, {})),
            "seed": cell.seed,
            "lr": cell.lr,
            "mode": method_info(cell.method).mode_for(self.mode),
            "runs_dir": str(runs_dir),
            "name": cell.key,
        }

    # -- files --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown study spec keys {unknown}; known: {sorted(known)}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        if missing := [k for k in required if k not in data]:
            raise ValueError(f"the study spec lacks {missing}; required: {required}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        """A spec from a JSON or YAML file."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)  # safe: a !!python tag is refused, never executed
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ValueError(f"{path} is not a valid YAML study spec{where}: {problem}") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                where = f"line {err.lineno}, column {err.colno}"
                raise ValueError(f"{path} is not a valid JSON study spec at {where}: {err.msg}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of spec keys, got {type(data).__name__}")
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def claim(self, folder: Path) -> None:
        """Write the spec into a new study folder, or check that ``folder`` was written by this spec."""
        file = folder / SPEC_FILE
        if file.exists():
            # read through from_dict: a key added since the folder was written takes its default
            saved = json.loads(json.dumps(StudySpec.from_dict(read_json(file)).to_dict()))
            mine = json.loads(json.dumps(self.to_dict()))
            if saved != mine:
                changed = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
                raise ValueError(
                    f"{folder} holds a study with a different spec (differs in {', '.join(changed)}); "
                    "use another folder or name, or the spec saved there"
                )
            return
        folder.mkdir(parents=True, exist_ok=True)
        write_json(file, self.to_dict())
