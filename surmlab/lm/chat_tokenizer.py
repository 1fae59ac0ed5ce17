"""A character-level chat tokenizer built in code: the stand-in decoders' vocabulary (nothing downloaded).

One token per printable ASCII character and newline, plus the ChatML markers SmolLM2 uses, so prompts
go through a real ``apply_chat_template`` and responses end with a real end-of-turn token.
"""

from __future__ import annotations

import functools
from typing import Any

PAD, UNK, START, END = "<pad>", "<unk>", "<|im_start|>", "<|im_end|>"
SPECIALS = (PAD, UNK, START, END)
CHARACTERS = tuple(chr(i) for i in range(32, 127)) + ("\n",)
# SmolLM2's template without its default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _backend() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIALS + CHARACTERS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIALS))
    return tokenizer


def char_chat_tokenizer(chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A fresh ``PreTrainedTokenizerFast`` (``chat_template=None``: one without a template, for tests)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_backend(), pad_token=PAD, unk_token=UNK, eos_token=END, padding_side="left"
    )
    tokenizer.chat_template = chat_template
    return tokenizer
