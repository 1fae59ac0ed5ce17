"""Generation from a decoder: options checked at the boundary, chat formatting, batched ``generate``.

Prompts are user messages put through the tokenizer's chat template (or full conversations). The
batch is padded on the left; greedy decoding is deterministic, sampling draws from a generator seeded
by ``GenerationOptions.seed`` (the global RNG is put back afterwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import is_real, is_whole
from .data import prompt_text, require_chat_template

MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode: greedy unless ``sample``; ``top_k`` 0 and ``top_p`` 1 switch those filters off."""

    max_new_tokens: int = 64
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (is_whole(self.max_new_tokens) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS):
            raise ValueError(
                f"max_new_tokens must be a whole number in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens!r}"
            )
        if not (is_real(self.temperature) and 0 < self.temperature < math.inf):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature!r}")
        if not (is_real(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (is_whole(self.top_k) and self.top_k >= 0):
            raise ValueError(f"top_k must be a whole number >= 0 (0: off), got {self.top_k!r}")
        if not is_whole(self.seed):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str  # the reply, special tokens dropped
    tokens: list[int]  # the new token ids, up to and including the end-of-turn token


def context_length(model: Any) -> int | None:
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def encode_prompts(tokenizer: Any, prompts: list[Any]) -> list[list[int]]:
    """A user message (``str``) or a conversation (list of ``{"role", "content"}``) per prompt, chat-formatted."""
    require_chat_template(tokenizer)
    texts = [prompt_text(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else p) for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _left_pad(ids: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


@torch.no_grad()
def generate_ids(
    model: Any, tokenizer: Any, prompt_ids: list[list[int]], options: GenerationOptions
) -> list[list[int]]:
    """New token ids per prompt (cut after the end-of-turn token); a prompt that leaves no room in the
    model's context for ``max_new_tokens`` is an error naming it."""
    limit = context_length(model)
    for i, ids in enumerate(prompt_ids):
        if limit is not None and len(ids) + options.max_new_tokens > limit:
            raise ValueError(
                f"prompt {i + 1} is {len(ids)} tokens (chat-formatted); with max_new_tokens {options.max_new_tokens} "
                f"that passes the model's context of {limit} tokens: shorten it or lower max_new_tokens"
            )
    device = next(model.parameters()).device
    input_ids, mask = _left_pad(prompt_ids, tokenizer.pad_token_id, device)
    kwargs: dict[str, Any] = {"max_new_tokens": options.max_new_tokens, "do_sample": options.sample}
    if options.sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    else:  # a model's generation_config may carry sampling defaults; greedy ignores them
        kwargs.update(temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **kwargs,
        )
    model.train(was_training)
    new = out[:, input_ids.shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos) + 1] if eos in row else row for row in new]


def generate(
    model: Any, tokenizer: Any, prompts: list[Any], options: GenerationOptions | None = None, batch_size: int = 16
) -> list[Generation]:
    """Replies to ``prompts`` (user messages or conversations), ``batch_size`` prompts at a time."""
    options = options or GenerationOptions()
    prompt_ids = encode_prompts(tokenizer, prompts)
    results = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        for prompt, tokens in zip(
            prompts[start : start + batch_size], generate_ids(model, tokenizer, chunk, options), strict=True
        ):
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(Generation(prompt if isinstance(prompt, str) else str(prompt), text.strip(), tokens))
    return results
