"""The Data tab: upload a CSV / TSV / JSONL file or a zip of class folders, pick the text and label
columns from its header, preview it, and hand it to the training form. The work is
:mod:`surmlab.data.uploads`'s; these handlers only turn its results and errors into what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..data.uploads import UploadError, class_root, preview, read_upload, store_upload, upload_root

NO_PAIR = "(none)"


@dataclass(frozen=True)
class Picked:
    """What the page shows after an upload or a choice of a kept file."""

    message: str
    task: str | None = None
    columns: tuple[str, ...] = ()
    text_column: str | None = None
    label_column: str | None = None


def kept_uploads(runs_dir: Path) -> list[tuple[str, str]]:
    """``(label, task)`` for every file kept under the upload folder, newest first."""
    root = upload_root(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if path.name.startswith(".") or path.is_symlink():
            continue
        kind = {".csv": "csv", ".tsv": "tsv"}.get(path.suffix.lower(), "folder" if path.is_dir() else None)
        if kind == "folder":
            path = class_root(path)
            found.append((f"{path.name}/ (images)", f"folder:{path}"))
        elif kind:
            found.append((path.name, f"{kind}:{path}"))
    return found


def on_upload(file: str | None, runs_dir: Path) -> Picked:
    if not file:
        return Picked("Drop a CSV, TSV or JSONL file, or a zip with one folder per class.")
    try:
        upload = store_upload(file, runs_dir, Path(file).name)
    except UploadError as err:
        return Picked(f"**Not kept:** {err}")
    return _picked(upload, f"Kept **{upload.name}** as `{upload.path.name}`")


def on_choose(task: str | None) -> Picked:
    if not task:
        return Picked("")
    try:
        upload = read_upload(task)
    except UploadError as err:
        return Picked(f"**Cannot read:** {err}")
    return _picked(upload, f"Chose `{upload.path.name}`")


def _picked(upload: Any, said: str) -> Picked:
    if upload.kind == "folder":
        return Picked(f"{said}: an image folder; press **Preview**.", upload.task)
    columns = ", ".join(f"`{c}`" for c in upload.columns)
    return Picked(
        f"{said}: columns {columns}. Check the text and label columns, then press **Preview**.",
        upload.task,
        upload.columns,
        upload.text_column,
        upload.label_column,
    )


def on_preview(task: str | None, text: str | None, label: str | None, pair: str | None):
    """(message, first rows, label counts); every problem is one message naming the file."""
    empty = pd.DataFrame()
    if not task:
        return "Upload or choose a file first.", empty, empty
    try:
        shown = preview(task, text, label, None if pair in (None, "", NO_PAIR) else pair)
    except (ValueError, OSError) as err:
        return f"**Cannot train on this:** {err}", empty, empty
    message = (
        f"**{shown.train_examples:,} train / {shown.eval_examples:,} eval examples**, "
        f"{len(shown.label_counts)} classes. {shown.description}. Press **Use for training**."
    )
    return message, shown.rows, shown.label_counts


def build(page: Any) -> None:
    lab = page.lab
    gr.Markdown(
        "Upload your own data: a **CSV / TSV / JSONL** table with a text and a label column, or a **zip** "
        "with one folder of images per class. It is kept under the runs folder; pick its columns, preview "
        "it, then **Use for training** fills the Train tab's task and columns."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            file = gr.File(
                label="Data file", file_types=[".csv", ".tsv", ".jsonl", ".zip"], type="filepath", elem_id="data-file"
            )
            kept = gr.Dropdown(kept_uploads(lab.runs_dir), value=None, label="Or a file kept earlier")
            message = gr.Markdown(elem_id="data-message")
            task = gr.Textbox(label="Task it trains as", interactive=False, elem_id="data-task")
            with gr.Row():
                text = gr.Dropdown([], label="Text column of the file", allow_custom_value=True, elem_id="data-text")
                label = gr.Dropdown([], label="Label column of the file", allow_custom_value=True, elem_id="data-label")
                pair = gr.Dropdown([NO_PAIR], value=NO_PAIR, label="Second text (pairs)")
            with gr.Row():
                show = gr.Button("Preview", variant="secondary")
                use = gr.Button("Use for training", variant="primary")
        with gr.Column(scale=3, min_width=360):
            summary = gr.Markdown(elem_id="data-summary")
            rows = gr.Dataframe(label="First rows", interactive=False, max_height=300, elem_id="data-rows")
            counts = gr.Dataframe(label="Label counts", interactive=False, max_height=220, elem_id="data-counts")

    def show_picked(p: Picked):
        columns = list(p.columns)
        return (
            p.message,
            p.task or "",
            gr.update(choices=columns, value=p.text_column),
            gr.update(choices=columns, value=p.label_column),
            gr.update(choices=[NO_PAIR, *columns], value=NO_PAIR),
            gr.update(choices=kept_uploads(lab.runs_dir)),
        )

    picked_outputs = [message, task, text, label, pair, kept]
    file.upload(lambda f: show_picked(on_upload(f, lab.runs_dir)), inputs=file, outputs=picked_outputs)
    kept.input(lambda t: show_picked(on_choose(t)), inputs=kept, outputs=picked_outputs)
    show.click(on_preview, inputs=[task, text, label, pair], outputs=[summary, rows, counts])

    form = page.form
    targets = [k for k in ("task", "text_column", "label_column", "text_pair_column") if k in form]

    def on_use(task_value, text_value, label_value, pair_value):
        message, _, _ = on_preview(task_value, text_value, label_value, pair_value)
        if message.startswith("**Cannot") or message.startswith("Upload"):
            return message, *[gr.skip() for _ in targets]
        table = not task_value.startswith("folder:")
        values = {
            "task": task_value,
            "text_column": text_value if table else "",
            "label_column": label_value if table else "",
            "text_pair_column": "" if pair_value in (None, NO_PAIR) or not table else pair_value,
        }
        said = f"The Train tab now trains on `{Path(task_value.partition(':')[2]).name}`"
        if table:
            said += f" (text `{text_value}`, label `{label_value}`)"
        return said + ". Open **Train** to check the readout and press Start.", *[values[k] for k in targets]

    use.click(on_use, inputs=[task, text, label, pair], outputs=[summary, *[form[k] for k in targets]])
