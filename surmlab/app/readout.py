"""The budget readout: what a method would train at a budget, before anything is trained.

The backbone is built with random weights (``pretrained=False``: the architecture is all a count
needs) once per (backbone, number of labels) and kept; each readout prepares a deep copy with
:func:`surmlab.methods.prepare`, the same call training makes, so the count shown is the count trained.
Invalid input comes back as a message, never as an exception.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..budget import BudgetError, parse_budget
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
    method_params: int | None = None


def read_budget(text: Any) -> str | None:
    """The form's budget as ``parse_budget`` reads it, with a precise message for what it does not:
    ``-5`` (negative), ``0``, ``1e5`` (read as 100000), ``2.5`` (not whole); empty -> None."""
    text = "" if text is None else str(text).strip().replace(",", "").replace("_", "")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        parse_budget(text)  # 50k, 1.5M, or its own message naming the value
        return text
    if not math.isfinite(number):
        raise BudgetError(f"budget {text!r} is not a count; write e.g. 50000, 50k or 1.5M")
    if number < 0:
        raise BudgetError(f"budget {text!r} is negative: a budget is a count of parameters, at least 1")
    if number < 1:
        raise BudgetError(f"budget {text!r} is below 1: a budget is a count of parameters, at least 1")
    if number != int(number):
        raise BudgetError(f"budget {text!r} is not a whole number of parameters; e.g. {int(number):,}")
    return str(int(number))


def parse_hyper(text: str | None) -> dict[str, Any]:
    """``"block_size=64, rank=8"`` -> ``{"block_size": 64, "rank": 8}`` (numbers read as numbers)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").replace(";", ",").split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"hyper-parameter {part!r}: write name=value, e.g. block_size=64 or rank=8")
        try:
            number = float(value)
            out[key] = int(number) if number == int(number) and "." not in value else number
        except ValueError:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def pinned_hyper(method: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """The resolved setting of a readout as explicit hyper-parameters that train the same count (a
    structure family's knobs; a baseline's ``hyper_keys``): how a "nearest" budget reaches training."""
    info = method_info(method)
    keep = (lambda k: k != "mode") if info.structure else (lambda k: k in info.hyper_keys)
    return {k: v for k, v in hyper.items() if keep(k)}


@dataclass
class Feasible:
    """The method counts a budget can reach next to ``budget``: the largest at or below, the smallest above."""

    method: str
    budget: int
    below: int | None
    above: int | None
    nearest: int | None
    note: str = ""


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
        hyper: dict[str, Any] | None = None,
        nearest: bool = False,
    ) -> Readout:
        hyper = dict(hyper or {})
        key = (backbone, task, method, mode, str(budget), tuple(targets) if targets else None, str(hyper), nearest)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        result = self._compute(backbone, task, method, mode, budget, targets, hyper, nearest)
        if result.ok:  # failures are cheap to redo, and some (the hub) are transient
            with self._lock:
                self._results[key] = result
                while len(self._results) > self.max_results:
                    self._results.popitem(last=False)
        return result

    def _compute(self, backbone, task, method, mode, budget, targets, hyper=None, nearest=False) -> Readout:
        backbone, task = (backbone or "").strip(), (task or "").strip()
        if not backbone:
            return Readout(False, "Choose a backbone.")
        try:
            info = method_info(method)
        except ValueError as err:
            return Readout(False, str(err))
        try:
            budget = read_budget(budget)
        except ValueError as err:
            return Readout(False, str(err))
        if not info.budgeted or hyper:
            budget = None
        elif budget is None and not info.takes_mode:
            return Readout(False, f"{method} needs a budget, e.g. 50k.")
        try:
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
                hyper=hyper or None,
                nearest=nearest,
            )
        except ValueError as err:  # BudgetError included: infeasible budget, bad targets, wrong mode
            return Readout(False, str(err), preset=preset)
        except Exception as err:
            return Readout(False, f"{type(err).__name__}: {err}", preset=preset)
        share = 100 * prepared.trainable / prepared.total
        hyper = ", ".join(f"{k}={v}" for k, v in prepared.hyper.items()) or "no size knob"
        budget_note = f" for a budget of {parse_budget(budget):,}" if budget is not None else ""
        if budget is not None and nearest and prepared.method_params > parse_budget(budget):
            budget_note += " (nearest: above the budget)"
        message = (
            f"**{prepared.trainable:,} trainable parameters** ({share:.3f}% of {prepared.total:,})"
            f"{budget_note}  \n{prepared.method_params:,} method + {prepared.head_params:,} head · "
            f"{method} ({hyper}) · default learning rate {info.lr:g}"
        )
        return Readout(
            True,
            message,
            prepared.layers,
            preset,
            prepared.trainable,
            prepared.total,
            prepared.hyper,
            info.lr,
            prepared.method_params,
        )

    def feasible(
        self, backbone: str, task: str, method: str, mode: str, budget: str | int, targets: list[str] | None = None
    ) -> Feasible:
        """The counts ``method`` reaches next to ``budget``, found with the same ``prepare`` that training
        calls: at or below is the plain solve, the nearest one is ``nearest=True``; the smallest above is
        found by moving a probe away from the one below, doubling the distance, until the nearest count
        changes (the first change is the next count up: the probe never passes it). Raises ValueError."""
        count = parse_budget(read_budget(budget) or "")
        if not method_info(method).budgeted:
            return Feasible(method, count, None, None, None, "no size knob: the budget does not apply")

        def method_count(at: int, nearest: bool) -> int | None:
            r = self(backbone, task, method, mode, str(at), targets, nearest=nearest)
            if r.ok:
                return r.method_params
            if "infeasible" in r.message or "no setting" in r.message:
                return None
            raise ValueError(r.message)

        below = method_count(count, False)
        nearest = method_count(count, True)
        above = nearest if nearest is not None and nearest > count else None
        if above is None and below is not None and below < (method_count(10**12, True) or 0):
            distance = max(1, 2 * (count - below))
            while above is None:  # ends: once the probe passes the midpoint, the next count up is nearest
                found = method_count(below + distance, True)
                above = found if found is not None and found > below else None
                distance *= 2
        note = "" if below is not None else "no count at or below the budget"
        return Feasible(method, count, below, above, nearest, note)


def method_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown: the structures first, then the baselines."""
    return [(f"{name} — {m.description}", name) for name, m in METHODS.items()]
