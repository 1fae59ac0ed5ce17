"""The decoder task kind: instruction tasks batched with a loss mask, scored by loss, perplexity and
exact match of greedy generations. Registered with :mod:`surmlab.task_kinds` on import.

The training loss weighs every example equally: the mean token loss of each reply, averaged over the
batch. So ``k`` accumulated batches of ``b`` examples give the gradient of one batch of ``k b``
(what ``grad_accum`` promises), whatever the replies' lengths. The evaluation loss is the mean over
all reply tokens of the split (perplexity is its exponential).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data.collate import Collate
from ..memory import MemoryDefaults
from ..task_kinds import register_task_kind
from .data import (
    IGNORE,
    LmTask,
    encode,
    is_lm_task,
    load_lm_task,
    messages_of,
    prompt_text,
    reply_end,
    require_chat_template,
)
from .generate import GenerationOptions, generate
from .metrics import exact_match, perplexity

EVAL_MARGIN = 4  # evaluation generates this many tokens past the longest eval reply


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss per target token, mask of counted tokens)``, each (B, T - 1): token t predicts token t + 1."""
    target = labels[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
    return losses, target != IGNORE


def response_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of each example's mean reply-token loss."""
    losses, mask = token_losses(logits, labels)
    return ((losses * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def check_prompts(tokenizer: Any, rows: Any, max_length: int, where: str) -> None:
    """Before any training: every prompt leaves room for a reply token in ``max_length`` (one line naming the
    first that does not)."""
    texts = [prompt_text(tokenizer, messages_of(r)) for r in rows]
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        if len(ids) >= max_length:
            raise ValueError(
                f"{where} row {i}: its prompt is {len(ids)} tokens, but max_length is {max_length}; the prompt and at "
                "least one reply token must fit: raise max_length or shorten the prompt"
            )


class LmKind:
    name = "lm"
    memory_defaults = MemoryDefaults(length_bucketing=True, bf16_on_gpu=True)

    def claims(self, task: str) -> bool:
        return is_lm_task(task)

    def load(self, config: Any) -> LmTask:
        return load_lm_task(config.task, seed=config.seed, max_train=config.max_train, max_eval=config.max_eval)

    def collate(self, task: LmTask, backbone: Any, config: Any, train: bool) -> Collate:
        """Right-padded ``input_ids``/``attention_mask`` and ``labels`` (``IGNORE`` off the reply). Binds the
        backbone's tokenizer to ``task`` for evaluation's generations."""
        tokenizer = backbone.tokenizer
        require_chat_template(tokenizer, backbone.name)
        end, max_length = reply_end(tokenizer), config.max_length
        task.tokenizer = tokenizer
        replies = [len(tokenizer(r + end, add_special_tokens=False)["input_ids"]) for r in task.eval["response"]]
        task.max_new_tokens = max(replies, default=1) + EVAL_MARGIN
        split = "train" if train else "eval"
        check_prompts(tokenizer, task.train if train else task.eval, max_length, f"{task.name} {split}")

        def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
            encoded = [
                encode(tokenizer, r, max_length, end, f"{task.name} {split} row {r.get('index', '?')}") for r in rows
            ]
            ids = [e.input_ids for e in encoded]
            return {
                "input_ids": pad_right(ids, tokenizer.pad_token_id),
                "attention_mask": pad_right([[1] * len(x) for x in ids], 0),
                "labels": pad_right([e.labels for e in encoded], IGNORE),
            }

        return Collate(collate)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], task: LmTask) -> torch.Tensor:
        labels = batch.pop("labels")
        return response_loss(model(**batch).logits, labels)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader: Any, accelerator: Any, task: LmTask) -> dict[str, float]:
        """Mean reply-token loss and perplexity under teacher forcing; exact match of greedy replies
        (every process generates for the whole split: the split is small, the answer is the same)."""
        model.eval()
        total, count = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for batch in loader:
            labels = batch.pop("labels")
            losses, mask = token_losses(model(**batch).logits, labels)
            sums = accelerator.gather_for_metrics(torch.stack([(losses * mask).sum(), mask.sum()]).double()[None])
            total, count = total + sums[:, 0].sum().cpu(), count + sums[:, 1].sum().cpu()
        rows = list(task.eval)
        options = GenerationOptions(max_new_tokens=task.max_new_tokens)
        replies = generate(accelerator.unwrap_model(model), task.tokenizer, [messages_of(r) for r in rows], options,
                           batch_size=loader.batch_size or 16)  # fmt: skip
        hits = [exact_match(g.text, r["response"], r["answer"]) for g, r in zip(replies, rows, strict=True)]
        model.train()
        mean_loss = float(total / count.clamp(min=1))
        return {"exact_match": sum(hits) / max(1, len(hits)), "loss": mean_loss, "perplexity": perplexity(mean_loss)}


register_task_kind(LmKind())
