"""Decoder language models: causal-LM backbones, instruction tasks, generation and their metrics.

- :mod:`.backbones`: ``smollm2-135m`` (the real offline decoder) and random ``tiny-<arch>`` stand-ins,
  registered with the lab's backbone registry; ``lm:<hub id or folder>`` for any causal LM;
- :mod:`.assets`: the SmolLM2 GGUF read once by transformers and cached as safetensors;
- :mod:`.chat_tokenizer`: the character-level chat tokenizer the stand-ins use (built in code, nothing read);
- :mod:`.data`: instruction tasks (CSV/JSONL, the seeded arithmetic task), chat formatting, loss masks;
- :mod:`.generate`: generation options and batched generation;
- :mod:`.metrics`: exact match and perplexity;
- :mod:`.kind`: the task kind the training loop uses for these tasks (loss, evaluation, batching).

This package is imported lazily by the lab's registries; importing it does not load torch models.
"""
