"""The page: a training form with a live budget readout, the live run, the queue, and the run history
(table, trade-off plot, comparison, download and delete). Components are Python variables wired to
the handlers in :mod:`surmlab.app.handlers`; the timer sends only what changed since its last tick.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field, fields
from typing import Any

import gradio as gr
import pandas as pd

from ..data import available_offline, list_tasks
from ..methods import METHODS
from ..models import list_backbones
from ..train_config import SCHEDULES
from . import plots
from .handlers import ALL_RUNS, BUDGETS, FEASIBLE_COLUMNS, TABLE_COLUMNS, Form, Lab, Tick, View, device_label
from .readout import method_choices, takes_mode, takes_targets

POLL_SECONDS = 1.0  # while a job runs or waits
IDLE_POLL_SECONDS = 10.0  # otherwise: runs finished from a terminal still appear, an idle tab stays quiet
FAIR_METHODS = ["surm-circulant", "surm-toeplitz", "surm-kronecker", "lora", "lokr", "houlsby"]
# Tabs of other modules, mounted after the training page: module (in this package) -> tab title.
# Each module has ``build(page: Page) -> None``, called inside its tab; absent modules are left out.
TABS = {
    "data_tab": "Data",
    "use_tab": "Try it / Evaluate / Export",
    "command_tab": "Command",
    "study_tab": "Study",
    "experiments_tab": "Experiments",
}
THEME = gr.themes.Default(
    primary_hue="indigo",
    # System fonts only: the lab runs offline, and a web font would be one more request to fail.
    font=[gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), "sans-serif"],
    font_mono=[gr.themes.Font("ui-monospace"), "monospace"],
).set(
    # Hint text at WCAG AA contrast on white and on the light panels (#4b5563 on #ffffff: 7.6:1).
    block_info_text_color="#4b5563",
    input_placeholder_color="#4b5563",
    body_text_color_subdued="#4b5563",
    block_info_text_color_dark="#d1d5db",
    input_placeholder_color_dark="#d1d5db",
    body_text_color_subdued_dark="#d1d5db",
)
CSS = """
.surm-readout table { font-size: 0.85rem; }
footer { display: none !important; }
@media (max-width: 640px) {
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
  #history table { font-size: 0.68rem; }
  #history th, #history td { padding: 2px 3px !important; }
}
"""
# The Mode radios as one labelled group for screen readers (Gradio draws a plain label span).
HEAD = """<script>
const surmGroups = {"mode-radio": "Mode"};
new MutationObserver(() => {
  for (const [id, label] of Object.entries(surmGroups)) {
    const el = document.getElementById(id);
    const box = el && (el.querySelector('.wrap') || el);
    if (box && box.getAttribute('role') !== 'radiogroup') {
      box.setAttribute('role', 'radiogroup');
      box.setAttribute('aria-label', label);
    }
  }
}).observe(document.documentElement, {childList: true, subtree: true});
</script>"""


@dataclass
class Page:
    """What a mounted tab may use: the handlers, the training form's components by ``Form`` field,
    the Runs section's run picker, and the components whose choices the timer fills with run names."""

    lab: Lab
    form: dict[str, Any]
    runs: Any
    run_choices: list[Any] = field(default_factory=list)


def mount_tabs(page: Page) -> None:
    for module, title in TABS.items():
        if importlib.util.find_spec(f"{__package__}.{module}") is None:
            continue
        with gr.Tab(title, id=module):
            importlib.import_module(f"{__package__}.{module}").build(page)


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
        gr.Markdown(f"**Device:** {device_label()} · **runs folder:** `{lab.runs_dir}`", elem_id="runs-folder")
        preset = gr.State(None)  # the targets preset the form shows, to tell it from user edits
        seen = gr.State(None)  # what this page has already been sent (per browser tab)
        to_delete = gr.State(None)  # the run the first Delete click named, awaiting Confirm
        saved_form = gr.BrowserState({}, storage_key="surmlab-lab-form")  # the last started setup

        with gr.Tabs():
            with gr.Tab("Train", id="train"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=340):
                        gr.Markdown("### Setup")
                        backbone = gr.Dropdown(
                            list_backbones(),
                            value=defaults.backbone,
                            allow_custom_value=True,
                            label="Backbone",
                            info="offline assets first; timm:<name> and hf:<id> reach the hub when online; a "
                            "local model folder (hf:<path>) under " + ", ".join(f"`{r}`" for r in lab.data_roots),
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
                            elem_id="mode-radio",
                        )
                        targets = gr.Textbox(
                            label="Target modules",
                            placeholder="preset of the backbone family",
                            info="comma-separated module-name suffixes; clear it to get the preset back",
                        )
                        with gr.Row():
                            budget = gr.Dropdown(
                                BUDGETS,
                                value=defaults.budget,
                                allow_custom_value=True,
                                label="Budget",
                                info="trainable parameters the method adds (the head is extra): 5000, 50k, 1e5",
                                scale=3,
                            )
                            nearest = gr.Checkbox(
                                defaults.nearest,
                                label="nearest",
                                info="the closest count, even above the budget",
                                scale=1,
                                elem_id="nearest",
                            )
                        with gr.Row():
                            epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, minimum=1)
                            lr = gr.Textbox(label="Learning rate", placeholder="method default", info="e.g. 1e-3")
                            seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0)
                        with gr.Row():
                            max_steps = gr.Number(
                                0, label="Max steps", precision=0, minimum=0, info="0: the epochs decide"
                            )
                            eval_every = gr.Number(
                                defaults.eval_every,
                                label="Eval every (steps)",
                                precision=0,
                                minimum=0,
                                info="0: at each epoch's end",
                            )
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
                            with gr.Row():
                                schedule = gr.Dropdown(list(SCHEDULES), value=defaults.schedule, label="Schedule")
                                warmup_ratio = gr.Number(
                                    defaults.warmup_ratio, label="Warm-up ratio", minimum=0, maximum=0.99
                                )
                                weight_decay = gr.Number(defaults.weight_decay, label="Weight decay", minimum=0)
                            hyper = gr.Textbox(
                                label="Hyper-parameters instead of the budget",
                                placeholder="e.g. block_size=64 or rank=8",
                                info="an explicit setting of the method's size knob; empty: solved from the budget",
                            )
                            with gr.Row():
                                text_column = gr.Textbox(label="Text column", placeholder="csv:/tsv: tasks")
                                text_pair_column = gr.Textbox(label="Second text column", placeholder="optional")
                                label_column = gr.Textbox(label="Label column", placeholder="csv:/tsv: tasks")
                            name = gr.Textbox(label="Run name", placeholder="method-backbone-task")
                        with gr.Row():
                            start = gr.Button("Start", variant="primary")
                            stop = gr.Button("Stop", variant="stop")
                            cancel = gr.Button("Cancel queued", variant="secondary")
                        message = gr.Markdown(elem_id="message")

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
                        with gr.Accordion("Fair comparison: feasible counts near this budget", open=False):
                            fair_methods = gr.Dropdown(
                                [name for _, name in method_choices()],
                                value=FAIR_METHODS,
                                multiselect=True,
                                label="Methods",
                            )
                            fair_button = gr.Button("Show feasible counts", size="sm")
                            fair_table = gr.Dataframe(
                                headers=FEASIBLE_COLUMNS, interactive=False, elem_id="feasible", wrap=True
                            )
                        gr.Markdown("### Live run")
                        status = gr.HTML()
                        with gr.Row():
                            loss_plot = gr.Plot(label="Training loss", show_label=False)
                            metric_plot = gr.Plot(label="Eval metric", show_label=False)
                        gr.Markdown("### Jobs")
                        queue = gr.Markdown(elem_id="jobs")
                        with gr.Row():
                            job = gr.Dropdown([], value=None, label="Job", scale=3)
                            stop_job = gr.Button("Stop / cancel this job", variant="secondary", scale=1)

                gr.Markdown("## Runs")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        with gr.Row():
                            group = gr.Dropdown([ALL_RUNS], value=None, label="Trade-off plot for", scale=2)
                            x_axis = gr.Dropdown(list(plots.AXES), value="trainable parameters", label="x axis")
                            y_axis = gr.Dropdown(list(plots.AXES), value="metric", label="y axis")
                        with gr.Row():
                            run_filter = gr.Textbox(
                                label="Filter", placeholder="e.g. circulant seed", scale=3, elem_id="run-filter"
                            )
                            export = gr.DownloadButton("Export CSV", scale=1)
                        tradeoff = gr.Plot(label="Trade-off", show_label=False, elem_id="tradeoff")
                    with gr.Column(scale=2):
                        compare_runs = gr.Dropdown([], value=[], multiselect=True, label="Compare runs")
                        smoothing = gr.Slider(0, 0.95, value=0, step=0.05, label="Loss smoothing")
                        compare_plot = gr.Plot(plots.compare([]), label="Comparison", show_label=False)
                        diff = gr.Dataframe(
                            lab.settings_diff([]),
                            label="Settings that differ",
                            interactive=False,
                            wrap=True,
                            elem_id="settings-diff",
                        )
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
                    resume = gr.Button("Resume", scale=1)
                    delete = gr.Button("Delete run", variant="stop", scale=1)
                    confirm = gr.Button("Confirm delete", variant="stop", visible=False, scale=1)
                run_message = gr.Markdown(elem_id="run-message")

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
                "max_steps": max_steps,
                "eval_every": eval_every,
                "schedule": schedule,
                "warmup_ratio": warmup_ratio,
                "weight_decay": weight_decay,
                "hyper": hyper,
                "nearest": nearest,
                "text_column": text_column,
                "label_column": label_column,
                "text_pair_column": text_pair_column,
            }
            assert list(form) == _form_fields()
            page = Page(lab, form, run, [run, compare_runs])
            mount_tabs(page)
        timer = gr.Timer(POLL_SECONDS)

        # -- the form and its readout ------------------------------------------------------------------
        plan_keys = ("backbone", "task", "method", "mode", "budget", "targets", "hyper", "nearest")
        plan_keys += ("text_column", "label_column", "text_pair_column")
        plan_inputs = {k: form[k] for k in plan_keys}

        def on_plan(backbone, task, method, mode, budget, targets, hyper, nearest, preset, **columns):
            form = Form(
                backbone=backbone,
                task=task,
                method=method,
                mode=mode,
                budget=budget,
                targets=targets,
                hyper=hyper,
                nearest=bool(nearest),
                **columns,
            )
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
        for component in (backbone, task, method, mode, budget, nearest):
            component.change(
                on_plan,
                inputs_kwargs=plan_kwargs,
                outputs=plan_outputs,
                trigger_mode="always_last",
                show_progress="minimal",
            )
        columns = (text_column, label_column, text_pair_column)
        for event in (targets.submit, targets.blur, hyper.submit, hyper.blur, *(c.change for c in columns)):
            event(
                on_plan,
                inputs_kwargs=plan_kwargs,
                outputs=plan_outputs,
                trigger_mode="always_last",
                show_progress="minimal",
            )

        def on_fair(methods, **values):
            return lab.feasible(Form(**values), list(methods or []))

        fair_button.click(on_fair, inputs_kwargs={"methods": fair_methods, **form}, outputs=fair_table)

        # -- jobs ----------------------------------------------------------------------------------------
        def on_start(preset, **values):
            return lab.start(Form(**values), preset), values, gr.Timer(POLL_SECONDS)

        def on_restore(saved):
            """After a reload, show the setup of the last Start (the live panel re-attaches by itself)."""
            saved = saved if isinstance(saved, dict) else {}
            return tuple(gr.update(value=saved[k]) if k in saved else gr.skip() for k in form)

        start.click(on_start, inputs_kwargs={**form, "preset": preset}, outputs=[message, saved_form, timer])
        stop.click(lambda: (lab.stop(), gr.Timer(POLL_SECONDS)), outputs=[message, timer])
        cancel.click(lambda: lab.cancel_queued(), outputs=message)
        stop_job.click(lambda job: lab.stop(job) if job else "Choose a job.", inputs=job, outputs=message)
        demo.load(on_restore, inputs=saved_form, outputs=list(form.values())).then(
            on_plan, inputs_kwargs=plan_kwargs, outputs=plan_outputs
        )

        # -- polling: only what changed ----------------------------------------------------------------
        tick_outputs = [seen, status, loss_plot, metric_plot, queue, history, tradeoff, group, job, timer]
        tick_outputs += page.run_choices

        def on_tick(seen, group, x, y, text):
            t: Tick = lab.tick(seen, group or None, View(group or None, x, y, text or ""))
            runs = gr.skip() if t.runs is None else gr.update(choices=t.runs)
            groups = {} if t.groups is None else {"choices": t.groups}
            if t.group is not None:
                groups["value"] = t.group
            return (
                t.seen,
                _skip(t.status),
                _skip(t.loss),
                _skip(t.metric),
                _skip(t.queue),
                _skip(t.table),
                _skip(t.tradeoff),
                gr.update(**groups) if groups else gr.skip(),
                gr.skip() if t.jobs is None else gr.update(choices=t.jobs, value=None),
                gr.skip() if t.busy is None else gr.Timer(POLL_SECONDS if t.busy else IDLE_POLL_SECONDS),
                *[runs for _ in page.run_choices],
            )

        view_inputs = [group, x_axis, y_axis, run_filter]
        timer.tick(on_tick, inputs=[seen, *view_inputs], outputs=tick_outputs, show_progress="hidden")
        demo.load(lambda *view: on_tick(None, *view), inputs=view_inputs, outputs=tick_outputs)

        # -- history -------------------------------------------------------------------------------------
        def on_view(group, x, y, text):
            return lab.tradeoff(group or None, View(group or None, x, y, text or ""))

        for component in (group, x_axis, y_axis):
            component.change(on_view, inputs=view_inputs, outputs=tradeoff, show_progress="hidden")
        for event in (run_filter.submit, run_filter.blur):
            event(on_view, inputs=view_inputs, outputs=tradeoff, show_progress="hidden")
        export.click(
            lambda group, x, y, text: lab.tradeoff_csv(group or None, View(group or None, x, y, text or "")),
            inputs=view_inputs,
            outputs=export,
        )
        for component in (compare_runs, smoothing):
            component.change(
                lambda runs, w: (lab.compare(runs, w), lab.settings_diff(runs)),
                inputs=[compare_runs, smoothing],
                outputs=[compare_plot, diff],
                show_progress="hidden",
            )

        def on_run(name):
            path, text = lab.adapter_zip(name)
            return gr.update(value=path, interactive=path is not None), text, None, gr.update(visible=False)

        run.change(on_run, inputs=run, outputs=[download, run_message, to_delete, confirm])
        resume.click(lambda name: (lab.resume(name), gr.Timer(POLL_SECONDS)), inputs=run, outputs=[run_message, timer])

        def on_delete(name):
            text = lab.delete(name)  # no confirmation yet: says what a confirm would delete
            return text, name, gr.update(visible=bool(name) and "Confirm delete" in text)

        def on_confirm(name, pending):
            text = lab.delete(name, confirmed=pending)
            gone = text.startswith("Deleted")
            return text, None, gr.update(visible=False), gr.update(value=None) if gone else gr.skip()

        delete.click(on_delete, inputs=run, outputs=[run_message, to_delete, confirm])
        confirm.click(on_confirm, inputs=[run, to_delete], outputs=[run_message, to_delete, confirm, run])

        def on_row(evt: gr.SelectData):
            row = getattr(evt, "row_value", None)
            return row[TABLE_COLUMNS.index("run")] if row else gr.skip()

        history.select(on_row, outputs=run)
    return demo


def theme_kwargs() -> dict[str, Any]:
    """What ``Blocks.launch`` takes for the look (Gradio 6 moved theme and css to ``launch``)."""
    return {"theme": THEME, "css": CSS, "head": HEAD}
