"""The reproduced experiments: every module here with a ``run`` is one.

A module declares its parameters as a frozen dataclass ``Params`` (defaults: the ``smoke`` profile),
``PROFILES`` (``smoke``, ``cpu``, ``paper``: instances), a ``validate(p)``, its computation decorated
with ``@common.experiment``, ``figures(table, out_dir)`` for its notebook and ``summarize(table) -> str``,
the result in words (``words`` holds the shared phrasing), shown after the run cell. The decorated
``run(profile="smoke", out_dir=None, **params) -> pandas.DataFrame`` validates the parameters first,
then computes, writes ``<name>.json`` and ``<name>.csv`` into ``out_dir`` and returns the table.
Each has a thin notebook ``notebooks/<name>.ipynb`` (parameters, one ``run`` call, ``figures``) that
``surmlab reproduce <name>`` executes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

ORDER = (
    "tour", "approximation", "pinwheel", "image_classification", "low_resource", "glue_adapters",
    "tradeoff", "weight_analysis", "speed",
)  # fmt: skip


def names() -> list[str]:
    """Experiment names, in the order ``reproduce --all`` runs them (runs feeding ``tradeoff`` first)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        if callable(getattr(importlib.import_module(f"{__name__}.{info.name}"), "run", None)):
            found.append(info.name)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda n: (rank.get(n, len(rank)), n))


def get(name: str) -> ModuleType:
    if name not in names():
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")
