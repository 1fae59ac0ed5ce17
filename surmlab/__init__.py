"""surmlab: parameter-efficient fine-tuning with structured unrestricted-rank matrices (SURM)."""

from .budget import BudgetError, BudgetPlan, Target, parse_budget, solve
from .config import SurmConfig
from .export import from_pretrained, push_to_hub, save_pretrained
from .layer import SurmLinear
from .lora_export import export_lora
from .structures import FAMILIES, make
from .tuner import (
    delete_adapter,
    disable_adapter,
    inject,
    load_adapter,
    merge,
    plan_for,
    save_adapter,
    set_adapter,
    summary,
    trainable_parameters,
    unload,
    unmerge,
)

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "BudgetError",
    "BudgetPlan",
    "SurmConfig",
    "SurmLinear",
    "Target",
    "__version__",
    "delete_adapter",
    "disable_adapter",
    "export_lora",
    "from_pretrained",
    "inject",
    "load_adapter",
    "make",
    "merge",
    "parse_budget",
    "plan_for",
    "push_to_hub",
    "save_adapter",
    "save_pretrained",
    "set_adapter",
    "solve",
    "summary",
    "trainable_parameters",
    "unload",
    "unmerge",
]
