"""The command behind a run: a ``TrainConfig`` as the ``surmlab train`` line, a JSON config file and a
Python cell, each giving back the same config (``parse_command`` reads the line with the CLI's parser).

Only the options that differ from ``TrainConfig``'s defaults are written, so each form reads as what
was chosen.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .train_config import TrainConfig


@dataclass(frozen=True)
class Command:
    """One config three ways; each is copied into a shell, a file or a notebook as it is."""

    line: str  # surmlab train --backbone ... (one line, shell-quoted)
    json: str  # the options for ``surmlab train --config FILE``
    python: str  # a notebook cell that trains the same run


def changed_options(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from the defaults, in field order."""
    default = TrainConfig()
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    return {name: value for name, value in values.items() if value != getattr(default, name)}


def _flag_words(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if value is None:
        return [flag, "none"]  # an optional number unset (the CLI reads "none")
    if isinstance(value, dict):
        return [flag, json.dumps(value)]
    if isinstance(value, list):
        return [flag, *map(str, value)]
    text = repr(value) if isinstance(value, float) else str(value)
    return [f"{flag}={text}"] if text.startswith("-") else [flag, text]  # "-x" would read as a flag


def command_line(config: TrainConfig) -> str:
    """``surmlab train`` with a flag for every changed option."""
    words = ["surmlab", "train"]
    for name, value in changed_options(config).items():
        words += _flag_words(name, value)
    return shlex.join(words)


def config_json(config: TrainConfig) -> str:
    return json.dumps(changed_options(config), indent=2)


def python_cell(config: TrainConfig) -> str:
    options = changed_options(config)
    body = "".join(f"    {name}={value!r},\n" for name, value in options.items())
    return (
        "from surmlab.train import train\n"
        "from surmlab.train_config import TrainConfig\n\n"
        f"config = TrainConfig(\n{body})\n"
        "summary = train(config)\n"
        "print(summary.run_dir, summary.status, summary.best)\n"
    )


def build_command(config: TrainConfig) -> Command:
    return Command(command_line(config), config_json(config), python_cell(config))


def parse_command(line: str) -> TrainConfig:
    """The ``TrainConfig`` a ``surmlab train ...`` line trains, read by the CLI's own parser."""
    from .cli import _train_config, build_parser

    words = shlex.split(line)
    if words[:2] != ["surmlab", "train"]:
        raise ValueError(f"not a surmlab train line: {line[:60]!r}")
    args = build_parser().parse_args(words[1:])
    return _train_config(args)


def run_command(run_dir: str | Path) -> tuple[TrainConfig, Command]:
    """A past run's training options (its ``config.json``) and the command that trains it again."""
    config = TrainConfig.load(Path(run_dir) / "config.json")
    return config, build_command(config)
