"""Backbones: timm (image) and transformers (text) classifiers by name, with offline real assets."""

from .backbones import (
    Backbone,
    ImageClassifier,
    TextClassifier,
    cache_dir,
    convert_vit_s14_onnx,
    hub_offline,
    hub_reachable,
    list_backbones,
    load_backbone,
    mean_pool,
    minilm_path,
    onnx_vit_s14_features,
    vit_s14_onnx_path,
    vit_s14_state_dict,
)

__all__ = [
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
    "vit_s14_onnx_path",
    "vit_s14_state_dict",
]
