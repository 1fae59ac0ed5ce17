"""Scores of generated text: exact match (on the final number where a task names an answer) and perplexity."""

from __future__ import annotations

import math
import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(text: str) -> str:
    """Lower case, single spaces, no trailing full stop: ``" Fresh. "`` and ``"fresh"`` match."""
    return " ".join(text.lower().split()).rstrip(".").strip()


def final_number(text: str) -> str | None:
    found = NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def exact_match(generated: str, response: str, answer: str = "") -> bool:
    """With an ``answer``: the last number of ``generated`` equals it (how GSM8K is scored); without one,
    the normalised generation equals the normalised ``response``."""
    if answer:
        return final_number(generated) == answer.strip()
    return normalise(generated) == normalise(response)


def perplexity(mean_loss: float) -> float:
    """``exp`` of the mean token loss (in nats); ``inf`` rather than an overflow."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf
