"""The budget readout: what a method would train at a budget, before anything is trained.

The backbone is built with random weights (``pretrained=False``: the architecture is all a count
needs) once per (backbone, number of labels) and kept; each readout prepares a deep copy with
:func:`surmlab.methods.prepare`, the same call training makes, so the count shown is the count trained.
Invalid input comes back as a message, never as an exception.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..budget import parse_budget
from ..config import SurmConfig
from ..data import SPECS, USER_FORMS, list_tasks
from ..methods import METHODS, method_info, prepare
from ..models import load_backbone
from ..tuner import resolve_config


@dataclass
class Readout:
    ok: bool
    message: str  # markdown: the plan's headline, or what is wrong
    rows: list[dict[str, Any]] = field(default_factory=list)  # per adapted layer
    preset: list[str] | None = None  # the backbone family's default targets for this method and mode
    trainable: int | None = None
    total: int | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None


def takes_mode(method: Any) -> bool:
    """Whether ``method`` (any value: a form's choice, a run table's cell) names a method that offers
    SURM's ``lora``/``adapter`` modes; an unknown name does not."""
    try:
        return method_info(str(method)).takes_mode
    except ValueError:
        return False


def takes_targets(method: Any) -> bool:
    """Whether ``method`` adapts layers the form chooses (an unknown name is left to the readout's error)."""
    try:
        return method_info(str(method)).takes_targets
    except ValueError:
        return True


def effective_mode(method: str, mode: str) -> str:
    """Where ``method`` puts its layers (``Method.placement``); an unknown name: on the linear layers."""
    try:
        return method_info(method).placement(mode)
    except ValueError:
        return "lora"


def parse_targets(text: str | None) -> list[str] | None:
    """``"query, value"`` -> ``["query", "value"]``; empty -> ``None`` (the preset)."""
    names = [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]
    return names or None


def task_shape(task: str) -> tuple[int, str | None]:
    """(number of labels, modality) of a task without loading its data; raises ValueError if unknown."""
    if task in SPECS:
        return SPECS[task].num_labels, SPECS[task].modality
    prefix, _, rest = task.partition(":")
    if prefix in ("folder", "csv", "tsv") and rest:
        return 2, "image" if prefix == "folder" else "text"  # the head size only shifts the head count
    raise ValueError(f"unknown task {task!r}; known: {', '.join(list_tasks())}; or your data: {', '.join(USER_FORMS)}")


class BudgetReadout:
    """``readout(backbone, task, method, mode, budget, targets)`` with cached backbones and results."""

    def __init__(self, max_backbones: int = 3, max_results: int = 64) -> None:
        self._backbones: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._results: OrderedDict[tuple, Readout] = OrderedDict()
        self._lock = threading.Lock()
        self.max_backbones, self.max_results = max_backbones, max_results

    def backbone(self, name: str, num_labels: int):
        key = (name, num_labels)
        with self._lock:
            if key not in self._backbones:
                self._backbones[key] = load_backbone(name, num_labels, pretrained=False)
                while len(self._backbones) > self.max_backbones:
                    self._backbones.popitem(last=False)
            self._backbones.move_to_end(key)
            return self._backbones[key]

    def __call__(
        self,
        backbone: str,
        task: str,
        method: str,
        mode: str = "lora",
        budget: str | int | None = None,
        targets: list[str] | None = None,
    ) -> Readout:
        key = (backbone, task, method, mode, str(budget), tuple(targets) if targets else None)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        result = self._compute(backbone, task, method, mode, budget, targets)
        if result.ok:  # failures are cheap to redo, and some (the hub) are transient
            with self._lock:
                self._results[key] = result
                while len(self._results) > self.max_results:
                    self._results.popitem(last=False)
        return result

    def _compute(self, backbone, task, method, mode, budget, targets) -> Readout:
        backbone, task = (backbone or "").strip(), (task or "").strip()
        if not backbone:
            return Readout(False, "Choose a backbone.")
        try:
            info = method_info(method)
        except ValueError as err:
            return Readout(False, str(err))
        budget = None if budget is None or str(budget).strip() == "" else str(budget).strip()
        if not info.budgeted:
            budget = None
        elif budget is None and not info.takes_mode:
            return Readout(False, f"{method} needs a budget, e.g. 50k.")
        try:
            if budget is not None:
                parse_budget(budget)
            num_labels, modality = task_shape(task)
        except ValueError as err:
            return Readout(False, str(err))
        mode = info.mode_for(mode)
        try:
            bb = self.backbone(backbone, num_labels)
        except Exception as err:  # unknown name, hub unreachable, bad folder: all end up as a message
            return Readout(False, f"Cannot build backbone {backbone!r}: {err}")
        if modality is not None and bb.modality != modality:
            return Readout(False, f"{backbone} reads {bb.modality}, but {task} is an {modality} task.")
        preset = None
        if takes_targets(method):
            try:
                cfg = resolve_config(bb.model, SurmConfig(mode=effective_mode(method, mode), qkv_slices={}))
                preset = list(cfg.target_modules)
            except ValueError:
                preset = None  # no preset for this architecture: the user must name targets
        try:
            prepared = prepare(
                method,
                copy.deepcopy(bb.model),
                head=bb.head,
                budget=budget,
                mode=mode,
                targets=targets if takes_targets(method) else None,
            )
        except ValueError as err:  # BudgetError included: infeasible budget, bad targets, wrong mode
            return Readout(False, str(err), preset=preset)
        except Exception as err:
            return Readout(False, f"{type(err).__name__}: {err}", preset=preset)
        share = 100 * prepared.trainable / prepared.total
        hyper = ", ".join(f"{k}={v}" for k, v in prepared.hyper.items()) or "no size knob"
        budget_note = f" for a budget of {parse_budget(budget):,}" if budget is not None else ""
        message = (
            f"**{prepared.trainable:,} trainable parameters** ({share:.3f}% of {prepared.total:,})"
            f"{budget_note}  \n{prepared.method_params:,} method + {prepared.head_params:,} head · "
            f"{method} ({hyper}) · default learning rate {info.lr:g}"
        )
        return Readout(
            True, message, prepared.layers, preset, prepared.trainable, prepared.total, prepared.hyper, info.lr
        )


def method_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown: the structures first, then the baselines."""
    return [(f"{name} — {m.description}", name) for name, m in METHODS.items()]
