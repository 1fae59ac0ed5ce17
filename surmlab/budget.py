"""Trainable-parameter counts per layer shape, and a solver that meets a parameter budget.

All layers of one plan share the family's hyper-parameters (one block size, one rank, one
Kronecker factor shape), so the plan is a single point that can be written down and reproduced;
``overrides`` (from ``SurmConfig.hyper_pattern``) fix the setting of named layers, which the solver
counts as spent and leaves out of its search.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .structures import family as structure_family

MODES = ("lora", "adapter")


class BudgetError(ValueError):
    """The requested budget cannot be met."""


@dataclass(frozen=True)
class Target:
    """One structured update: its layer name and the shape of ``S`` (out, in)."""

    name: str
    out_features: int
    in_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features


@dataclass
class BudgetPlan:
    family: str
    mode: str
    hyper: dict[str, Any]
    total: int
    per_layer: list[tuple[Target, dict[str, Any], int]] = field(default_factory=list)
    budget: int | None = None

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"layer": t.name, "shape": f"{t.out_features}x{t.in_features}", **hyper, "params": n}
            for t, hyper, n in self.per_layer
        ]

    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the plan; with per-layer overrides, one more line per overridden layer."""
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        head = f"{self.family} ({self.mode}) with {hyper}: {self.total:,} trainable parameters"
        if self.budget is not None:
            head += f" for a budget of {self.budget:,}"
        lines = [head]
        for t, resolved, n in self.per_layer:
            if t.name in self.overrides:
                setting = ", ".join(f"{k}={v}" for k, v in resolved.items())
                lines.append(f"  {t.name} ({t.out_features}x{t.in_features}): {setting}: {n:,} parameters")
        return "\n".join(lines)


def parse_budget(value: int | str) -> int:
    """``50000``, ``"50k"``, ``"1.5M"``, ``"1e5"`` -> an integer count."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise BudgetError(f"budget must be positive, got {value}")
        return value
    m = re.fullmatch(r"\s*(-?)([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmM]?)\s*", str(value))
    if not m or not isinstance(value, str):
        raise BudgetError(f"cannot read budget {value!r}; write e.g. 50000, 50k, 1.5M or 5e4")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(3).lower()]
    count = round(float(m.group(2)) * scale)
    if m.group(1) or count < 1:
        raise BudgetError(f"budget must be positive, got {value!r}")
    return count


def layer_count(family: str, target: Target, hyper: dict[str, Any], mode: str = "lora") -> int:
    """Exact trainable parameters one target adds (the adapter mode also has a bias of size out)."""
    cls = structure_family(family)
    n = cls.num_parameters(target.in_features, target.out_features, **hyper)
    return n + (target.out_features if mode == "adapter" else 0)


def plan(
    family: str,
    targets: Sequence[Target],
    hyper: dict[str, Any],
    mode: str = "lora",
    overrides: dict[str, dict[str, Any]] | None = None,
) -> BudgetPlan:
    """The plan for fixed hyper-parameters (empty hyper: each family's defaults, per layer); a target named
    in ``overrides`` takes its own setting instead."""
    overrides = overrides or {}
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "adapter" and any(t.out_features != t.in_features for t in targets):
        raise ValueError("adapter mode needs square targets (S acts on the layer output h)")
    cls = structure_family(family)
    per_layer = []
    for t in targets:
        try:
            resolved = cls.resolve_hyper(t.in_features, t.out_features, **overrides.get(t.name, hyper))
        except ValueError as err:
            raise ValueError(f"layer {t.name}: {err}") from None
        per_layer.append((t, resolved, layer_count(family, t, resolved, mode)))
    free = [h for t, h, _ in per_layer if t.name not in overrides]
    first = free[0] if free else {}
    shared = first if all(h == first for h in free) else dict(hyper)
    return BudgetPlan(family, mode, shared, sum(n for *_, n in per_layer), per_layer, overrides=dict(overrides))


def solve(
    family: str,
    targets: Sequence[Target],
    budget: int | str,
    mode: str = "lora",
    nearest: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> BudgetPlan:
    """Hyper-parameters whose total count is closest to ``budget`` without exceeding it
    (``nearest=True``: closest on either side, so a budget beyond the achievable range gets the
    nearest end). Raises ``BudgetError`` when no setting fits."""
    if not targets:
        raise BudgetError("no target layers: nothing to spend the budget on")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    budget = parse_budget(budget)
    overrides = overrides or {}
    if overrides:  # the overridden layers' count is spent; the rest share the setting the solver picks
        fixed = plan(family, [t for t in targets if t.name in overrides], {}, mode, overrides)
        free = [t for t in targets if t.name not in overrides]
        if not free or fixed.total >= budget:
            if not free and (nearest or fixed.total <= budget):
                result = plan(family, targets, {}, mode, overrides)
                result.budget = budget
                return result
            raise BudgetError(
                f"the per-layer settings alone take {fixed.total:,} parameters, leaving nothing of a budget of "
                f"{budget:,} for the other {len(free)} layers"
            )
        solved = solve(family, free, budget - fixed.total, mode, nearest)
        result = plan(family, targets, solved.hyper, mode, overrides)
        result.budget = budget
        return result
    cls = structure_family(family)
    # Candidates are complete, valid settings (the Structure contract), so each is counted by its closed form
    # once per distinct layer shape; the chosen one is resolved and checked by plan() below. A family with a
    # count-only knob (sparse_spectrum's coefficients) has as many candidates as a layer has entries / 2.
    shapes = Counter(t.shape for t in targets)
    bias = sum(t.out_features for t in targets) if mode == "adapter" else 0
    options = [
        (sum(k * cls.count(i, o, **hyper) for (o, i), k in shapes.items()) + bias, hyper)
        for hyper in cls.candidates(list(shapes))
    ]
    if not options:
        raise BudgetError(f"{family} has no hyper-parameters that fit all {len(targets)} target layers")
    total, hyper = closest(options, budget, nearest, f"{family} ({mode}) on {len(targets)} layers")
    result = plan(family, targets, hyper, mode)
    result.budget = budget
    assert result.total == total
    return result


def closest(
    options: Sequence[tuple[int, dict[str, Any]]], budget: int | str, nearest: bool = False, what: str = "this method"
) -> tuple[int, dict[str, Any]]:
    """The ``(count, hyper)`` option closest to ``budget`` without exceeding it (``nearest``: on either
    side). The one selection rule of the lab: structure families and every baseline's size knob use it.
    Among equal counts the first option wins, so callers list options in order of preference."""
    budget = parse_budget(budget)
    low, high = min(n for n, _ in options), max(n for n, _ in options)
    if not nearest and not low <= budget <= high:
        raise BudgetError(
            f"a budget of {budget:,} is infeasible for {what}: achievable counts range from {low:,} to {high:,}"
        )
    fits = options if nearest else [o for o in options if o[0] <= budget]
    return min(fits, key=lambda o: abs(budget - o[0]))
