"""The "Try it / Evaluate / Export" tab: a run's class probabilities for typed text or a dropped image
(``surmlab.predict.classify``, the code of ``surmlab predict``), its scores on a split
(``surmlab.evaluate.evaluate_run``) and its export as one zip (``surmlab.run_export`` through
``download.export_zip``). The last loaded model is kept, so trying sentences one after another is quick.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from ..evaluate import evaluate_run
from ..predict import classify, load_run
from ..runs import RunDir
from .download import UnsafeFolder, export_zip

log = logging.getLogger(__name__)
WEIGHTS = ["final", "best"]


class Loaded:
    """The last model loaded for trying, keyed by run folder, weights and the weights file's time."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple | None = None
        self.lock = threading.Lock()

    def get(self, path: Path, best: bool) -> tuple:
        run = RunDir(path)
        weights = (run.best_dir if best else run.final_dir) / "trainable.safetensors"
        key = (str(path), best, weights.stat().st_mtime_ns if weights.exists() else None)
        with self.lock:
            if key != self.key:
                self.value, self.key = None, None
                self.value, self.key = load_run(path, best), key
            return self.value


def run_path(lab: Any, name: str | None) -> Path | None:
    """The run folder ``name`` directly under the runs folder (no path tricks), or None."""
    if not name or name != Path(name).name or name.startswith("."):
        return None
    path = lab.runs_dir / name
    return path if path.is_dir() and not path.is_symlink() else None


def on_try(lab: Any, cache: Loaded, name: str | None, weights: str, text: str | None, image: str | None):
    """(class -> probability for ``gr.Label``, message); a decoder run's reply is the message."""
    path = run_path(lab, name)
    if path is None:
        return None, "Choose a run."
    item = image if image else (text or "").strip()
    if not item:
        return None, "Type a sentence or drop an image."
    try:
        backbone, prepared, saved = cache.get(path, weights == "best")
        if saved.task.modality == "lm":  # a decoder run replies (greedy, as ``surmlab predict`` does by default)
            if image:
                return None, f"{name} is a language model: give it text."
            from ..lm.generate import GenerationOptions, generate

            (reply,) = generate(prepared.model, backbone.tokenizer, [item], GenerationOptions())
            said = reply.text or f"(an empty reply: {len(reply.tokens)} special tokens)"
            return None, f"**Reply** ({weights} weights of {name}):\n\n{said}"
        if (backbone.modality == "image") != bool(image):
            want = "an image" if backbone.modality == "image" else "text"
            return None, f"{name} classifies {want}: give it {want}."
        (found,) = classify(backbone, prepared.model, saved, [item])
    except (ValueError, OSError) as err:
        return None, f"**Cannot predict:** {err}"
    if not found.probabilities:  # regression
        return None, f"Predicted value: **{found.score:.4f}**"
    return found.probabilities, f"**{found.label}** ({found.score:.1%}) · {weights} weights of {name}"


def on_evaluate(lab: Any, name: str | None, weights: str, split: str, limit: Any) -> str:
    path = run_path(lab, name)
    if path is None:
        return "Choose a run."
    try:
        limit = int(limit) if limit not in (None, "") and float(limit) > 0 else None
        return evaluate_run(path, split, best=weights == "best", max_examples=limit).describe()
    except (ValueError, OSError, TypeError) as err:
        return f"**Cannot evaluate:** {err}"


def on_export(lab: Any, name: str | None, weights: str) -> tuple[str | None, str]:
    """(zip path for the download button, message naming what it holds)."""
    path = run_path(lab, name)
    if path is None:
        return None, "Choose a run."
    archive = lab.downloads / f"{name}-{weights}-export.zip"
    try:
        files = export_zip(path, archive, best=weights == "best")
    except UnsafeFolder as err:
        log.warning("export refused: %s", err)
        return None, f"Not served: {err}."
    except (ValueError, OSError) as err:
        return None, f"**Cannot export:** {err}"
    return str(archive), f"Export of {name} ({weights}): " + ", ".join(f"`{f}`" for f in files)


def build(page: Any) -> None:
    lab = page.lab
    cache = Loaded()
    with gr.Row():
        run = gr.Dropdown([], value=None, label="Run to use", scale=3, elem_id="use-run")
        weights = gr.Radio(WEIGHTS, value="final", label="Weights", info="last saved, or best evaluated", scale=1)
    page.run_choices.append(run)
    page.runs.change(lambda name: name or gr.skip(), inputs=page.runs, outputs=run)  # follow the Runs pick
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            gr.Markdown("### Try it")
            text = gr.Textbox(label="Text to classify", placeholder="a sentence", lines=2, elem_id="try-text")
            image = gr.Image(label="or an image", type="filepath", height=180)
            go = gr.Button("Predict", variant="primary")
            said = gr.Markdown(elem_id="try-message")
            probabilities = gr.Label(label="Classes", num_top_classes=10, elem_id="try-label")
        with gr.Column(scale=2, min_width=300):
            gr.Markdown("### Evaluate")
            split = gr.Radio(["eval", "train"], value="eval", label="Split")
            limit = gr.Number(None, label="Max examples", precision=0, info="0 or empty: the whole split")
            evaluate = gr.Button("Evaluate")
            scores = gr.Markdown(elem_id="eval-message")
            gr.Markdown("### Export")
            gr.Markdown(
                "One zip: `adapter/` (with its config and labels), `run_config.json`, `labels.json`, "
                "`merged/` (the update folded in) and `lora/` (a PEFT LoRA adapter) where the method allows."
            )
            export = gr.Button("Export")
            download = gr.DownloadButton("Download export", value=None, interactive=False, elem_id="export-download")
            exported = gr.Markdown(elem_id="export-message")

    try_inputs = [run, weights, text, image]
    go.click(lambda *a: on_try(lab, cache, *a), inputs=try_inputs, outputs=[probabilities, said])
    text.submit(lambda *a: on_try(lab, cache, *a), inputs=try_inputs, outputs=[probabilities, said])
    evaluate.click(lambda *a: on_evaluate(lab, *a), inputs=[run, weights, split, limit], outputs=scores)

    def export_clicked(name, which):
        path, message = on_export(lab, name, which)
        return gr.update(value=path, interactive=path is not None), message

    export.click(export_clicked, inputs=[run, weights], outputs=[download, exported])
    run.change(lambda: (gr.update(value=None, interactive=False), ""), outputs=[download, exported])
