"""Structured matrix families. ``make(name, in_features, out_features, **hyper)`` builds one.

Pure math: nothing here knows about models or training.
"""

from __future__ import annotations

from typing import Any

from .base import Shape, Structure, divisors
from .blocklowrank import BlockLowRank
from .chain import CirculantChain
from .convolution import Circulant, SymmetricToeplitz, Toeplitz
from .kronecker import Kronecker
from .ldr import LowDisplacementRank
from .lowrank import LowRank
from .monarch import Monarch
from .spectrum import SparseSpectrum

# One line per family: a new family is its module and its line here.
FAMILIES: dict[str, type[Structure]] = {
    cls.family: cls
    for cls in (
        Circulant,
        Toeplitz,
        SymmetricToeplitz,
        LowDisplacementRank,
        Kronecker,
        LowRank,
        Monarch,
        BlockLowRank,
        CirculantChain,
        SparseSpectrum,
    )
}


def family(name: str) -> type[Structure]:
    """The class of family ``name``; a clear error lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown structure {name!r}; known: {', '.join(FAMILIES)}") from None


def make(name: str, in_features: int, out_features: int, **hyper: Any) -> Structure:
    """A zero-initialised structured matrix of shape ``(out_features, in_features)``."""
    cls = family(name)
    cls.resolve_hyper(in_features, out_features, **hyper)  # a clear ValueError for foreign or bad hyper
    return cls(in_features, out_features, **hyper)


__all__ = [
    "FAMILIES",
    "BlockLowRank",
    "Circulant",
    "CirculantChain",
    "Kronecker",
    "LowDisplacementRank",
    "LowRank",
    "Monarch",
    "Shape",
    "SparseSpectrum",
    "Structure",
    "SymmetricToeplitz",
    "Toeplitz",
    "divisors",
    "family",
    "make",
]
