"""The Experiments tab: run one of the paper's notebooks through papermill (``surmlab.reproduce``) in a
child process, with a profile and parameters, follow its cells, and show the figures it drew.

The child is ``python -m surmlab.reproduce <name> --profile <p> -p key value ... --out <folder>``, the
command a terminal runs; parameters are checked first with ``reproduce.check`` (the experiment's own
validation), so a typo is a message before a kernel starts. Progress is read off the executed
notebook papermill writes after each cell; figures are the notebook's plotly outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..fileio import read_json, write_json
from ..reproduce import check, parse_value
from ..runs import pid_alive
from .jobs import PACKAGE_PARENT
from .watch import format_seconds

STATE_FILE = "app-experiment.json"
PLOTLY = "application/vnd.plotly.v1+json"
FIGURE_SLOTS = 4  # figures the tab shows (the notebook's first ones)


def parse_params(text: str | None) -> dict[str, Any]:
    """One ``key = value`` per line; values are Python literals where they parse (``[1, 2]``, ``0.5``)."""
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").splitlines())):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameter {part!r}: write key = value, e.g. max_steps = 20")
        params[key.strip()] = parse_value(value.strip())
    return params


@dataclass
class NotebookProgress:
    name: str
    cells: int
    executed: int
    failed: bool
    alive: bool
    elapsed_s: float | None
    status: str  # running | ok | failed | not started
    error: str | None = None
    figures: list[Any] = field(default_factory=list)

    def text(self) -> str:
        took = f" · {format_seconds(self.elapsed_s)}" if self.elapsed_s is not None else ""
        error = f"  \n**error:** {self.error}" if self.error else ""
        return (
            f"**{self.name}** ({self.status}): {self.executed} of {self.cells} code cells run{took}, "
            f"{len(self.figures)} figure(s){error}"
        )


def notebook_progress(notebook: Path) -> tuple[int, int, bool, list[dict[str, Any]]]:
    """(code cells, cells papermill finished, whether one failed, plotly figures) of a papermill output."""
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, 0, False, []
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    done = [c for c in code if c.get("metadata", {}).get("papermill", {}).get("status") == "completed"]
    failed = any(c.get("metadata", {}).get("papermill", {}).get("exception") for c in code)
    figures = [o["data"][PLOTLY] for c in code for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]
    return len(code), len(done), failed, figures


class Experiments:
    """One notebook at a time in a ``surmlab.reproduce`` child; results in ``<runs folder>/experiments``."""

    def __init__(self, runs_dir: str | Path, python: str = sys.executable) -> None:
        self.root = Path(runs_dir).resolve() / "experiments"
        self.python = python
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _state(self) -> dict[str, Any]:
        file = self.root / STATE_FILE
        try:
            return read_json(file) if file.exists() else {}
        except (OSError, ValueError):
            return {}

    def alive(self) -> bool:
        state = self._state()
        if self._proc is not None and self._proc.pid == state.get("pid"):
            return self._proc.poll() is None
        return pid_alive(state.get("pid"), state.get("name"))

    def start(self, name: str, profile: str, params_text: str | None) -> str:
        try:
            params = parse_params(params_text)
            check(name, params, profile)
        except ValueError as err:
            return f"**Cannot start:** {err}"
        with self._lock:
            if self.alive():
                return f"**Cannot start:** {self._state().get('name')} is still running; stop it first."
            folder = self.root / profile
            folder.mkdir(parents=True, exist_ok=True)
            cmd = [self.python, "-m", "surmlab.reproduce", name, "--profile", profile, "--out", str(folder)]
            for key, value in params.items():
                cmd += ["-p", key, value if isinstance(value, str) else repr(value)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
            log = self.root / f"{name}.log"
            (folder / name / f"{name}.ipynb").unlink(missing_ok=True)  # progress starts from nothing
            (folder / name / "reproduce.json").unlink(missing_ok=True)
            with open(log, "wb") as out:
                self._proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True,
                )  # fmt: skip
            write_json(
                self.root / STATE_FILE,
                {"name": name, "profile": profile, "pid": self._proc.pid, "folder": str(folder / name),
                 "started": time.time(), "log": str(log), "params": {k: repr(v) for k, v in params.items()}},
            )  # fmt: skip
        return f"Started {name} ({profile} profile)."

    def stop(self) -> str:
        state = self._state()
        if not self.alive():
            return "No notebook is running."
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(state["pid"]), signal.SIGTERM)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=20)
        return f"Stopped {state.get('name')}."

    def progress(self) -> NotebookProgress | None:
        state = self._state()
        if not state:
            return None
        folder, name = Path(state["folder"]), state["name"]
        cells, executed, failed, figures = notebook_progress(folder / f"{name}.ipynb")
        alive = self.alive()
        record = {}
        with contextlib.suppress(OSError, ValueError):
            record = read_json(folder / "reproduce.json") if (folder / "reproduce.json").exists() else {}
        status = "running" if alive else record.get("status") or ("failed" if failed else "not finished")
        error = record.get("error")
        if not alive and not record and state.get("log"):
            with contextlib.suppress(OSError):
                tail = Path(state["log"]).read_text(errors="replace").strip().splitlines()
                error = tail[-1][:500] if tail else None
        elapsed = record.get("wall_time_s") or (time.time() - state["started"] if alive else None)
        return NotebookProgress(name, cells, executed, failed, alive, elapsed, status, error, figures)


def build(page: Any) -> None:
    import gradio as gr
    import plotly.graph_objects as go

    from ..experiments import common, get, names

    experiments = Experiments(page.lab.runs_dir)
    page.lab.experiments = experiments
    gr.Markdown(
        "Run a paper notebook with papermill (`surmlab reproduce`): pick it and a profile, change parameters, "
        "follow its cells, see its figures. Results go to the runs folder's `experiments/<profile>/<name>/`."
    )
    choices = names()
    with gr.Row():
        name = gr.Dropdown(choices, value="tour" if "tour" in choices else choices[0], label="Notebook")
        profile = gr.Radio(list(common.PROFILE_NAMES), value="smoke", label="Profile", elem_id="profile-radio")
    defaults = gr.Markdown(elem_id="experiment-defaults")
    params = gr.Textbox(label="Parameters", lines=3, placeholder="key = value, one per line (empty: the profile's)")
    with gr.Row():
        start = gr.Button("Run notebook", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    message = gr.Markdown(elem_id="experiment-message")
    progress = gr.Markdown(elem_id="experiment-progress")
    with gr.Row():
        slots = [gr.Plot(show_label=False, visible=False) for _ in range(FIGURE_SLOTS)]
    timer = gr.Timer(5.0)

    def on_pick(name, profile):
        try:
            values = get(name).PROFILES[profile]
            shown = ", ".join(f"`{f.name} = {getattr(values, f.name)!r}`" for f in fields(values))
        except (KeyError, ValueError, TypeError):
            shown = ""
        return f"{profile} parameters: {shown or '(see the notebook)'}"

    def on_tick():
        p = experiments.progress()
        if p is None:
            return "No notebook run yet.", *[gr.skip()] * FIGURE_SLOTS, gr.Timer(active=False)
        figures = [gr.update(value=go.Figure(f), visible=True) for f in p.figures[:FIGURE_SLOTS]]
        figures += [gr.update(visible=False)] * (FIGURE_SLOTS - len(figures))
        return p.text(), *figures, gr.Timer(2.0, active=p.alive)

    for component in (name, profile):
        component.change(on_pick, inputs=[name, profile], outputs=defaults)
    outputs = [progress, *slots, timer]
    start.click(
        lambda n, pr, text: (experiments.start(n, pr, text), gr.Timer(2.0, active=True)),
        inputs=[name, profile, params],
        outputs=[message, timer],
    ).then(on_tick, outputs=outputs)
    stop.click(experiments.stop, outputs=message).then(on_tick, outputs=outputs)
    timer.tick(on_tick, outputs=outputs, show_progress="hidden")
