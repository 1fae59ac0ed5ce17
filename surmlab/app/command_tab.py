"""The Command tab: the ``surmlab train`` line, the JSON config and a Python cell behind the training
form (``surmlab.command``), each with a copy button; a past run's settings, its command, and "Load into
form" to train it again or change it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from ..command import Command, build_command, run_command
from ..train_config import TrainConfig
from .handlers import Form
from .readout import pinned_hyper


def form_command(lab: Any, values: dict[str, Any]) -> tuple[Command | None, str]:
    """The command the form's Start would queue (the readout's pinned setting under "nearest"), or why not."""
    form = Form(**values)
    try:
        config = form.to_config(lab.runs_dir)
    except ValueError as err:
        return None, f"**Cannot build the command:** {err}"
    if form.nearest and config.budget is not None:
        readout = lab.plan(form)
        if not readout.ok:
            return None, f"**Cannot build the command:** {readout.message}"
        config = replace(config, budget=None, hyper=pinned_hyper(config.method, readout.hyper))
    return build_command(config), "What **Start** runs, as a command line, a config file and a notebook cell."


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The training form's fields for ``config`` (what "Load into form" sets)."""
    targets = config.targets
    hyper = ", ".join(f"{k}={v}" for k, v in (config.hyper or {}).items())
    return {
        "backbone": config.backbone,
        "task": config.task,
        "method": config.method,
        "mode": config.mode,
        "budget": "" if config.budget is None else str(config.budget),
        "targets": ", ".join(targets) if isinstance(targets, list) else (targets or ""),
        "epochs": config.epochs,
        "lr": "" if config.lr is None else repr(config.lr),
        "seed": config.seed,
        "max_train": config.max_train,
        "max_eval": config.max_eval,
        "max_length": config.max_length,
        "batch_size": config.batch_size,
        "name": config.name or "",
        "max_steps": config.max_steps or 0,
        "eval_every": config.eval_every,
        "schedule": config.schedule,
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "hyper": hyper,
        "nearest": False,
        "text_column": config.text_column or "",
        "label_column": config.label_column or "",
        "text_pair_column": config.text_pair_column or "",
    }


def past_run(lab: Any, name: str | None) -> tuple[TrainConfig | None, Command | None, str]:
    if not name or name != Path(name).name or name.startswith("."):
        return None, None, "Choose a run."
    path = lab.runs_dir / name
    if not (path / "config.json").is_file() or path.is_symlink():
        return None, None, f"{name} has no config.json."
    try:
        config, command = run_command(path)
    except ValueError as err:
        return None, None, f"**Cannot read {name}:** {err}"
    again = f"surmlab train --config {lab.runs_dir.name}/{name}/config.json"
    return config, command, f"Settings of **{name}**. To train it again as it was: `{again}`"


def build(page: Any) -> None:
    lab, form = page.lab, page.form
    gr.Markdown("### The current form")
    show = gr.Button("Show the command for the form", variant="primary")
    said = gr.Markdown(elem_id="command-message")
    line = gr.Code(label="surmlab train", language="shell", lines=2, interactive=False, elem_id="command-line")
    with gr.Row(equal_height=False):
        config_json = gr.Code(label="config.json (surmlab train --config FILE)", language="json", interactive=False)
        cell = gr.Code(label="Python cell", language="python", interactive=False, elem_id="command-python")

    names = list(form)

    def on_show(*values):
        command, message = form_command(lab, dict(zip(names, values, strict=True)))
        if command is None:
            return message, "", "", ""
        return message, command.line, command.json, command.python

    show.click(on_show, inputs=list(form.values()), outputs=[said, line, config_json, cell])

    gr.Markdown("### A past run")
    with gr.Row():
        run = gr.Dropdown([], value=None, label="Past run", scale=3, elem_id="command-run")
        load = gr.Button("Load into form", scale=1)
    page.run_choices.append(run)
    run_said = gr.Markdown()
    run_line = gr.Code(label="its command", language="shell", lines=2, interactive=False)
    run_json = gr.Code(label="its settings", language="json", interactive=False)

    def on_run(name):
        _, command, message = past_run(lab, name)
        return message, command.line if command else "", command.json if command else ""

    run.change(on_run, inputs=run, outputs=[run_said, run_line, run_json])

    def on_load(name):
        config, _, message = past_run(lab, name)
        if config is None:
            return message, *[gr.skip() for _ in names]
        values = form_values(config)
        return (
            f"Loaded the settings of **{name}** into the Train tab.",
            *[values.get(k, gr.skip()) for k in names],
        )

    load.click(on_load, inputs=run, outputs=[run_said, *form.values()])
