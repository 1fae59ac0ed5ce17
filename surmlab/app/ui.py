"""The page: a training form with a live budget readout, the live run, the queue, and the run history
(table, trade-off plot, comparison, download and delete). Components are Python variables wired to
the handlers in :mod:`surmlab.app.handlers`; the timer sends only what changed since its last tick.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import gradio as gr
import pandas as pd

from ..data import available_offline, list_tasks
from ..methods import METHODS
from ..models import list_backbones
from . import plots
from .handlers import ALL_RUNS, BUDGETS, TABLE_COLUMNS, Form, Lab, Tick, device_label
from .readout import method_choices, takes_mode, takes_targets

POLL_SECONDS = 1.0
THEME = gr.themes.Default(
    primary_hue="indigo",
    # System fonts only: the lab runs offline, and a web font would be one more request to fail.
    font=[gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), "sans-serif"],
    font_mono=[gr.themes.Font("ui-monospace"), "monospace"],
)
CSS = """
.surm-readout table { font-size: 0.85rem; }
footer { display: none !important; }
"""
INTRO = """# surmlab lab
Fine-tune a backbone with a **structured** update (circulant, Toeplitz, Kronecker, LDR, ...) or a baseline
(LoRA, adapters, BitFit, ...) at a parameter budget, watch it train, and see each finished run land on the
trade-off plot next to the others."""


def _skip(value: Any) -> Any:
    return gr.skip() if value is None else value


def task_choices() -> list[tuple[str, str]]:
    """``(label, value)`` for the task dropdown: what runs here first, hub-only tasks marked as such."""
    offline = [name for name in list_tasks() if available_offline(name)]
    hub = [name for name in list_tasks() if name not in offline]
    return [(name, name) for name in offline] + [(f"{name} (needs the hub)", name) for name in hub]


def _form_fields() -> list[str]:
    return [f.name for f in fields(Form)]


def build(lab: Lab) -> gr.Blocks:
    defaults = Form()
    with gr.Blocks(title="surmlab lab", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"**Device:** {device_label()} · **runs folder:** `{lab.runs_dir.name}/`")
        preset = gr.State(None)  # the targets preset the form shows, to tell it from user edits
        seen = gr.State(None)  # what this page has already been sent (per browser tab)
        saved_form = gr.BrowserState({}, storage_key="surmlab-lab-form")  # the last started setup

        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=340):
                gr.Markdown("### Setup")
                backbone = gr.Dropdown(
                    list_backbones(),
                    value=defaults.backbone,
                    allow_custom_value=True,
                    label="Backbone",
                    info="offline assets first; timm:<name> and hf:<id> reach the hub when online; a local "
                    "model folder (hf:<path>) under " + ", ".join(f"`{r}`" for r in lab.data_roots),
                )
                task = gr.Dropdown(
                    task_choices(),
                    value=defaults.task,
                    allow_custom_value=True,
                    label="Task",
                    info="or your data: folder:<path>, csv:<path>, tsv:<path>, under "
                    + ", ".join(f"`{r}`" for r in lab.data_roots),
                )
                method = gr.Dropdown(method_choices(), value=defaults.method, label="Method / structure")
                mode = gr.Radio(
                    ["lora", "adapter"],
                    value=defaults.mode,
                    label="Mode",
                    info="lora: y = Wx + αSx · adapter: h ← h + act(Sh) + b (SURM only)",
                )
                targets = gr.Textbox(
                    label="Target modules",
                    placeholder="preset of the backbone family",
                    info="comma-separated module-name suffixes; clear it to get the preset back",
                )
                budget = gr.Dropdown(
                    BUDGETS,
                    value=defaults.budget,
                    allow_custom_value=True,
                    label="Budget",
                    info="trainable parameters the method adds (the head is extra): 5000, 50k, 1.5M",
                )
                with gr.Row():
                    epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, minimum=1)
                    lr = gr.Textbox(label="Learning rate", placeholder="method default", info="e.g. 1e-3")
                    seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0)
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        max_train = gr.Number(
                            defaults.max_train,
                            label="Max train examples",
                            precision=0,
                            info="empty: the whole training split",
                        )
                        max_eval = gr.Number(defaults.max_eval, label="Max eval examples", precision=0)
                    with gr.Row():
                        max_length = gr.Number(defaults.max_length, label="Max length (tokens)", precision=0)
                        batch_size = gr.Number(defaults.batch_size, label="Batch size", precision=0, minimum=1)
                    name = gr.Textbox(label="Run name", placeholder="method-backbone-task")
                with gr.Row():
                    start = gr.Button("Start", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
                    cancel = gr.Button("Cancel queued", variant="secondary")
                message = gr.Markdown()

            with gr.Column(scale=3, min_width=420):
                gr.Markdown("### Budget readout")
                readout_md = gr.Markdown("…", elem_classes=["surm-readout"])
                readout_rows = gr.Dataframe(
                    label="Per adapted layer",
                    interactive=False,
                    max_height=220,
                    elem_classes=["surm-readout"],
                    elem_id="readout-layers",
                )
                gr.Markdown("### Live run")
                status = gr.HTML()
                with gr.Row():
                    loss_plot = gr.Plot(label="Training loss", show_label=False)
                    metric_plot = gr.Plot(label="Eval metric", show_label=False)
                gr.Markdown("### Jobs")
                queue = gr.Markdown()

        gr.Markdown("## Runs")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                group = gr.Dropdown([ALL_RUNS], value=ALL_RUNS, label="Trade-off plot for")
                tradeoff = gr.Plot(label="Trade-off", show_label=False, elem_id="tradeoff")
            with gr.Column(scale=2):
                compare_runs = gr.Dropdown([], value=[], multiselect=True, label="Compare runs")
                compare_plot = gr.Plot(plots.compare([]), label="Comparison", show_label=False)
        history = gr.Dataframe(
            headers=TABLE_COLUMNS,
            label="All runs (click a row to pick it)",
            interactive=False,
            max_height=360,
            wrap=False,
            elem_id="history",
        )
        with gr.Row():
            run = gr.Dropdown([], value=None, label="Run", scale=3)
            download = gr.DownloadButton("Download adapter", value=None, interactive=False, scale=1)
            delete = gr.Button("Delete run", variant="stop", scale=1)
        run_message = gr.Markdown()
        timer = gr.Timer(POLL_SECONDS)

        # -- the form and its readout ------------------------------------------------------------------
        form = {
            "backbone": backbone,
            "task": task,
            "method": method,
            "mode": mode,
            "budget": budget,
            "targets": targets,
            "epochs": epochs,
            "lr": lr,
            "seed": seed,
            "max_train": max_train,
            "max_eval": max_eval,
            "max_length": max_length,
            "batch_size": batch_size,
            "name": name,
        }
        assert list(form) == _form_fields()
        plan_inputs = {k: form[k] for k in ("backbone", "task", "method", "mode", "budget", "targets")}

        def on_plan(backbone, task, method, mode, budget, targets, preset):
            form = Form(backbone=backbone, task=task, method=method, mode=mode, budget=budget, targets=targets)
            first = lab.plan(form)
            text = (targets or "").strip()
            untouched = not text or (preset is not None and text == ", ".join(preset))
            if first.preset is not None and untouched and text != ", ".join(first.preset):
                form.targets = ", ".join(first.preset)  # follow the preset until the user edits it
                readout = lab.plan(form)
            else:
                readout = first
            rows = pd.DataFrame(readout.rows or [{"layer": "(no per-layer structure: see the headline)"}])
            surm = takes_mode(method)
            budgeted = METHODS[method].budgeted if method in METHODS else True
            return (
                readout.message if readout.ok else f"**Cannot use this setup:** {readout.message}",
                rows,
                gr.update(value=form.targets or "", interactive=takes_targets(method)),
                readout.preset,
                gr.update(interactive=surm),
                gr.update(interactive=budgeted),
            )

        plan_outputs = [readout_md, readout_rows, targets, preset, mode, budget]
        plan_kwargs = {**plan_inputs, "preset": preset}
        for component in (backbone, task, method, mode, budget):
            component.change(
                on_plan,
                inputs_kwargs=plan_kwargs,
                outputs=plan_outputs,
                trigger_mode="always_last",
                show_progress="minimal",
            )
        for event in (targets.submit, targets.blur):
            event(
                on_plan,
                inputs_kwargs=plan_kwargs,
                outputs=plan_outputs,
                trigger_mode="always_last",
                show_progress="minimal",
            )

        # -- jobs ----------------------------------------------------------------------------------------
        def on_start(preset, **values):
            return lab.start(Form(**values), preset), values

        def on_restore(saved):
            """After a reload, show the setup of the last Start (the live panel re-attaches by itself)."""
            saved = saved if isinstance(saved, dict) else {}
            return tuple(gr.update(value=saved[k]) if k in saved else gr.skip() for k in form)

        start.click(on_start, inputs_kwargs={**form, "preset": preset}, outputs=[message, saved_form])
        stop.click(lambda: lab.stop(), outputs=message)
        cancel.click(lambda: lab.cancel_queued(), outputs=message)
        demo.load(on_restore, inputs=saved_form, outputs=list(form.values())).then(
            on_plan, inputs_kwargs=plan_kwargs, outputs=plan_outputs
        )

        # -- polling: only what changed ----------------------------------------------------------------
        tick_outputs = [seen, status, loss_plot, metric_plot, queue, history, tradeoff, group, compare_runs, run]

        def on_tick(seen, group):
            t: Tick = lab.tick(seen, group)
            return (
                t.seen,
                _skip(t.status),
                _skip(t.loss),
                _skip(t.metric),
                _skip(t.queue),
                _skip(t.table),
                _skip(t.tradeoff),
                gr.skip() if t.groups is None else gr.update(choices=t.groups),
                gr.skip() if t.runs is None else gr.update(choices=t.runs),
                gr.skip() if t.runs is None else gr.update(choices=t.runs),
            )

        timer.tick(on_tick, inputs=[seen, group], outputs=tick_outputs, show_progress="hidden")
        demo.load(lambda group: on_tick(None, group), inputs=[group], outputs=tick_outputs)

        # -- history -------------------------------------------------------------------------------------
        group.change(lab.tradeoff, inputs=group, outputs=tradeoff, show_progress="hidden")
        compare_runs.change(lab.compare, inputs=compare_runs, outputs=compare_plot, show_progress="hidden")

        def on_run(name):
            path, text = lab.adapter_zip(name)
            return gr.update(value=path, interactive=path is not None), text

        run.change(on_run, inputs=run, outputs=[download, run_message])
        delete.click(lambda name: lab.delete(name), inputs=run, outputs=run_message).then(
            lambda: gr.update(value=None), outputs=run
        )

        def on_row(evt: gr.SelectData):
            row = getattr(evt, "row_value", None)
            return row[TABLE_COLUMNS.index("run")] if row else gr.skip()

        history.select(on_row, outputs=run)
    return demo


def theme_kwargs() -> dict[str, Any]:
    """What ``Blocks.launch`` takes for the look (Gradio 6 moved theme and css to ``launch``)."""
    return {"theme": THEME, "css": CSS}
