"""Every fine-tuning method the lab compares: a registry of ``Method`` records and ``prepare``.

Importing this package registers the built-in methods; ``METHODS`` lists them by kind: one
``surm-<family>`` per structure family, ``lora``, the PEFT baselines, the Houlsby adapter, the
selective methods and full fine-tuning. ``register_method`` adds another (see ``registry``).
"""

from . import adapter, peft_baselines, peft_structured, selective, surm  # noqa: F401  (importing registers the methods)
from .adapter import HoulsbyAdapter
from .peft_baselines import lokr_count
from .prepare import Prepared, head_parameter_names, prepare
from .registry import HEAD_LR, METHODS, Built, Method, Request, method_info, register_method
from .targets import preset_targets, summarize_layers

__all__ = [
    "HEAD_LR",
    "METHODS",
    "Built",
    "HoulsbyAdapter",
    "Method",
    "Prepared",
    "Request",
    "head_parameter_names",
    "lokr_count",
    "method_info",
    "prepare",
    "preset_targets",
    "register_method",
    "summarize_layers",
]
