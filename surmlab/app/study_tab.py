"""The Study tab: methods x budgets x seeds on one backbone and task, run by ``surmlab study`` in a
child process (as :mod:`.jobs` runs training), with its progress, its table (means, 95% intervals,
paired differences from the baseline) and its trade-off plot with error bars.

The child is the command line itself (``python -m surmlab study <spec.json> --root ... --workers N``),
so what the page runs is what a terminal runs; the page reads progress off the study's run store
(``surmlab.study.runner.cell_state``) and its tables with ``surmlab.study.table``, the same code the
command line prints from. Studies live in ``<runs folder>/studies/<name>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..fileio import read_json, write_json
from ..runs import pid_alive
from ..status import RunStatus
from ..study import StudySpec, check_budgets
from ..study.figures import tradeoff as study_tradeoff
from ..study.runner import CellOutcome, cell_state
from ..study.table import cell_rows, summarize, verdict
from .jobs import PACKAGE_PARENT
from .watch import format_seconds

STATE_FILE = "app-study.json"  # under the studies root: the study the page started, and its process
TABLE_COLUMNS = ["method", "budget", "method_params", "seeds", "failed", "mean", "ci_low", "ci_high",
                 "vs_baseline", "vs_low", "vs_high", "p_value", "verdict"]  # fmt: skip


@dataclass
class StudyProgress:
    """Where a study stands: cells done (completed), failed, running, left, and a time estimate."""

    name: str
    total: int
    done: int
    failed: int
    running: int
    left: int
    eta_s: float | None
    alive: bool

    def text(self) -> str:
        state = "running" if self.alive else ("finished" if not self.left and not self.running else "not running")
        eta = f" · ETA ~{format_seconds(self.eta_s)}" if self.alive and self.eta_s is not None else ""
        return (
            f"**{self.name}** ({state}): {self.done} done, {self.failed} failed, {self.running} running, "
            f"{self.left} left of {self.total} cells{eta}"
        )


def _count(value: Any, what: str) -> int | None:
    """A form's whole number; empty or 0 -> None (no cap)."""
    if value in (None, "", 0):
        return None
    number = float(value)
    if number != int(number) or number < 1:
        raise ValueError(f"{what} must be a whole number of at least 1, got {value!r}")
    return int(number)


def spec_from_form(
    name: str,
    backbone: str,
    task: str,
    methods: list[str],
    budgets: str,
    seeds: str,
    baseline: str,
    max_steps: Any,
    max_train: Any = None,
    max_eval: Any = None,
) -> StudySpec:
    """The page's fields as a spec; raises ValueError naming the bad field."""
    budget_list = [b.strip() for b in (budgets or "").split(",") if b.strip()]
    try:
        seed_list = [int(s) for s in (seeds or "").replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"seeds must be whole numbers separated by commas, got {seeds!r}") from None
    caps = {"max_steps": (max_steps, "max steps"), "max_train": (max_train, "max train examples"),
            "max_eval": (max_eval, "max eval examples")}  # fmt: skip
    train = {k: n for k, (v, what) in caps.items() if (n := _count(v, what)) is not None}
    return StudySpec(
        name=(name or "").strip(),
        backbone=(backbone or "").strip(),
        task=(task or "").strip(),
        methods=tuple(methods or ()),
        budgets=tuple(budget_list),
        seeds=tuple(seed_list),
        baseline=baseline or "lora",
        train=train,
    )


class Studies:
    """One study at a time in a ``surmlab study`` child; every method returns, never raises on the
    child's failure (the study's own files hold each cell's outcome)."""

    def __init__(self, runs_dir: str | Path, python: str = sys.executable) -> None:
        self.root = Path(runs_dir).resolve() / "studies"
        self.python = python
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # -- the child ---------------------------------------------------------------------------------------
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
        return pid_alive(state.get("pid"), state.get("spec"))

    def start(self, spec: StudySpec, workers: int = 1) -> str:
        """Check the spec (every budget feasible) and start it; a running study must end first."""
        if not isinstance(workers, int) or workers < 1:
            return f"**Cannot start:** workers must be a whole number of at least 1, got {workers!r}"
        with self._lock:
            if self.alive():
                return f"**Cannot start:** study {self._state().get('name')} is still running; stop it first."
            try:
                check_budgets(spec)
            except ValueError as err:
                return f"**Cannot start:** {err}"
            self.root.mkdir(parents=True, exist_ok=True)
            spec_file = self.root / f"{spec.name}.spec.json"
            write_json(spec_file, spec.to_dict())
            log = self.root / f"{spec.name}.log"
            cmd = [self.python, "-m", "surmlab", "study", str(spec_file), "--root", str(self.root)]
            cmd += ["--workers", str(workers)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
            with open(log, "ab") as out:
                self._proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True,
                )  # fmt: skip
            write_json(
                self.root / STATE_FILE,
                {"name": spec.name, "pid": self._proc.pid, "spec": str(spec_file), "workers": workers,
                 "started": time.time(), "log": str(log)},
            )  # fmt: skip
        cells = len(spec.cells())
        return f"Started study {spec.name}: {cells} cells, {workers} at a time."

    def stop(self) -> str:
        """End the study's process group (finished cells stay; starting it again continues the rest)."""
        state = self._state()
        if not self.alive():
            return "No study is running."
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(state["pid"]), signal.SIGTERM)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=20)
        return f"Stopped study {state.get('name')}; start it again to continue its unfinished cells."

    # -- reading a study ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/spec.json"))

    def spec(self, name: str | None) -> StudySpec | None:
        if not name or name != Path(name).name:
            return None
        file = self.root / name / "spec.json"
        if not file.exists():
            file = self.root / f"{name}.spec.json"
        try:
            return StudySpec.from_dict(read_json(file)) if file.exists() else None
        except (OSError, ValueError, TypeError):
            return None

    def outcomes(self, spec: StudySpec) -> list[CellOutcome]:
        folder = self.root / spec.name
        out = []
        for cell in spec.cells():
            status, run = cell_state(folder / "runs", cell.key)
            out.append(CellOutcome(cell.key, status, str(run.relative_to(folder)) if run else None))
        return out

    def progress(self, name: str | None = None) -> StudyProgress | None:
        name = name or self._state().get("name")
        spec = self.spec(name)
        if spec is None:
            return None
        folder = self.root / spec.name
        outcomes = self.outcomes(spec)
        status = [o.status for o in outcomes]
        done = sum(s is RunStatus.COMPLETED for s in status)
        failed = sum(s is RunStatus.FAILED for s in status)
        running = sum(s is RunStatus.RUNNING for s in status)
        left = len(status) - done - failed - running
        alive = self.alive() and self._state().get("name") == spec.name
        times = []
        for o in outcomes:
            if o.status is RunStatus.COMPLETED and o.run:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    times.append(read_json(folder / o.run / "summary.json").get("wall_time_s") or 0.0)
        workers = int(self._state().get("workers") or 1)
        eta = sum(times) / len(times) * (left + running / 2) / workers if times else None
        return StudyProgress(spec.name, len(status), done, failed, running, left, eta, alive)

    def results(self, name: str | None = None) -> tuple[pd.DataFrame, Any]:
        """The summary table (finished cells so far) and the trade-off plot with 95% intervals."""
        spec = self.spec(name or self._state().get("name"))
        if spec is None:
            return pd.DataFrame(columns=TABLE_COLUMNS), None
        cells = cell_rows(spec, self.root / spec.name, self.outcomes(spec))
        summary = summarize(spec, cells)
        if summary.empty or "mean" not in summary:
            return summary.reindex(columns=TABLE_COLUMNS), None
        summary["verdict"] = [verdict(row, spec.baseline) for _, row in summary.iterrows()]
        figure = study_tradeoff(summary, title=f"{spec.name}: mean and 95% interval over seeds")
        return summary.reindex(columns=TABLE_COLUMNS).round(4), figure


def build(page: Any) -> None:
    """The tab's components and events (``page``: :class:`surmlab.app.ui.Page`)."""
    import gradio as gr

    from ..methods import METHODS

    studies = Studies(page.lab.runs_dir)
    page.lab.studies = studies
    gr.Markdown(
        "Every method at every budget, once per seed: means with 95% intervals over seeds and the paired "
        "difference from the baseline (the same seeds), as `surmlab study` computes them."
    )
    with gr.Row():
        name = gr.Textbox("my-study", label="Study name")
        backbone = gr.Textbox("tiny-bert", label="Backbone")
        task = gr.Textbox("rotten-tomatoes", label="Task")
    with gr.Row():
        methods = gr.Dropdown(
            list(METHODS), value=["lora", "surm-circulant"], multiselect=True, label="Methods", scale=3
        )
        baseline = gr.Dropdown(list(METHODS), value="lora", label="Baseline")
    with gr.Row():
        budgets = gr.Textbox("1k", label="Budgets", info="comma-separated, e.g. 5k, 10k")
        seeds = gr.Textbox("0, 1, 2", label="Seeds", info="three or more for intervals", elem_id="study-seeds")
        max_steps = gr.Number(
            20, label="Max steps per cell", precision=0, minimum=0, info="0: whole epochs", elem_id="study-max-steps"
        )
        max_train = gr.Number(
            512, label="Max train examples", precision=0, minimum=0, info="0: all", elem_id="study-max-train"
        )
        max_eval = gr.Number(
            256, label="Max eval examples", precision=0, minimum=0, info="0: all", elem_id="study-max-eval"
        )
        workers = gr.Number(1, label="Workers", precision=0, minimum=1, info="cells at once")
    with gr.Row():
        start = gr.Button("Start study", variant="primary")
        stop = gr.Button("Stop study", variant="stop")
    message = gr.Markdown(elem_id="study-message")
    progress = gr.Markdown(elem_id="study-progress")
    table = gr.Dataframe(
        pd.DataFrame(columns=TABLE_COLUMNS), label="Summary", interactive=False, wrap=True, elem_id="study-table"
    )
    plot = gr.Plot(label="Study trade-off", show_label=False, elem_id="study-plot")
    timer = gr.Timer(5.0)

    def on_start(name, backbone, task, methods, budgets, seeds, baseline, max_steps, max_train, max_eval, workers):
        try:
            spec = spec_from_form(
                name, backbone, task, methods, budgets, seeds, baseline, max_steps, max_train, max_eval
            )
        except ValueError as err:
            return f"**Cannot start:** {err}", gr.Timer(active=False)
        text = studies.start(spec, int(workers or 1))
        return text, gr.Timer(2.0, active=True)

    def on_tick(name):
        p = studies.progress(name or None)
        if p is None:
            return "No study yet.", gr.skip(), gr.skip(), gr.Timer(active=False)
        frame, figure = studies.results(p.name)
        return p.text(), frame, figure if figure is not None else gr.skip(), gr.Timer(2.0, active=p.alive)

    inputs = [name, backbone, task, methods, budgets, seeds, baseline, max_steps, max_train, max_eval, workers]
    start.click(on_start, inputs=inputs, outputs=[message, timer]).then(
        on_tick, inputs=name, outputs=[progress, table, plot, timer]
    )
    stop.click(studies.stop, outputs=message).then(on_tick, inputs=name, outputs=[progress, table, plot, timer])
    timer.tick(on_tick, inputs=name, outputs=[progress, table, plot, timer], show_progress="hidden")
