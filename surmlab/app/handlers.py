"""What the app's buttons and its timer do, as plain Python: no Gradio here, so each handler can be
tested directly. Handlers take the form's values and return messages and figures; bad input becomes
a message, never an exception.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data.uploads import check_columns
from ..methods import method_info
from ..models import list_backbones
from ..runs import RunDir, RunStatus, RunSummary, list_runs
from ..train import TrainConfig
from . import plots
from .download import UnsafeFolder, export_zip
from .jobs import APP_DIR, JobManager, JobRecord
from .readout import (
    BudgetReadout,
    Feasible,
    Readout,
    parse_hyper,
    parse_targets,
    pinned_hyper,
    read_budget,
    takes_targets,
)
from .watch import MetricsCache, format_seconds, history_stamp, progress, read_summary, run_stamp

log = logging.getLogger(__name__)

BUDGETS = ["1k", "5k", "10k", "20k", "50k", "100k", "200k", "500k", "1M"]
ALL_RUNS = "all backbones / tasks"
TABLE_COLUMNS = [  # the key columns first: a phone shows the first few
    "status",
    "structure",
    "best",
    "trainable",
    "task",
    "backbone",
    "metric",
    "final",
    "% of model",
    "time",
    "run",
    "reason",
]


FEASIBLE_COLUMNS = ["method", "at or below", "above", "nearest", "note"]
STOPPING = "stopping"  # the page's word for a running job asked to stop (it evaluates, saves, then ends)


def method_info_or_none(method: str) -> Any:
    try:
        return method_info(method)
    except ValueError:
        return None


def feasible_row(f: Feasible) -> dict[str, Any]:
    count = lambda n: f"{n:,}" if n is not None else "–"  # noqa: E731
    note = f.note
    if not note and f.below == f.budget:
        note = "exact"
    elif not note and f.nearest is not None:
        side = "above" if f.nearest > f.budget else "at or below"
        note = f"nearest is {side} ({f.nearest - f.budget:+,})"
    return {"method": f.method, "at or below": count(f.below), "above": count(f.above),
            "nearest": count(f.nearest), "note": note}  # fmt: skip


def config_budget(form: Form) -> str:
    try:
        return f"{int(read_budget(form.budget) or 0):,}"
    except ValueError:
        return str(form.budget)


def pinned_text(hyper: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in hyper.items()) or "no size knob"


def device_label() -> str:
    """The accelerator training will use, in words."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return "GPU: " + ", ".join(names)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "GPU: Apple MPS"
    return f"CPU ({os.cpu_count()} cores)"


def _float_or(value: Any, name: str, default: float) -> float:
    if value is None or str(value).strip() == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _int_or_none(value: Any, name: str, minimum: int = 1) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number != int(number) or number < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(number)


def log_every(max_train: int | None, batch_size: int, epochs: int) -> int:
    """Log often enough that a short run still draws a curve (about 25 points or more)."""
    if max_train is None:
        return 10
    return max(1, min(10, -(-max_train // batch_size) * epochs // 25))


@dataclass
class Form:
    """The training form, as the UI holds it (numbers may be floats or empty)."""

    backbone: str = "minilm-l6"
    task: str = "rotten-tomatoes"
    method: str = "surm-circulant"
    mode: str = "lora"
    budget: str | None = "50k"
    targets: str | None = None
    epochs: float | None = 1
    lr: float | str | None = None
    seed: float | None = 0
    max_train: float | None = 2000
    max_eval: float | None = 500
    max_length: float | None = 64
    batch_size: float | None = 32
    name: str | None = None
    max_steps: float | None = 0
    eval_every: float | None = 0
    schedule: str = "cosine"
    warmup_ratio: float | None = 0.06
    weight_decay: float | None = 0.0
    hyper: str | None = None  # "block_size=64": an explicit setting instead of the budget
    nearest: bool = False  # the budget's nearest count, even above it
    text_column: str | None = None
    label_column: str | None = None
    text_pair_column: str | None = None

    def budget_value(self) -> str | None:
        """The budget as the solver reads it (``1e5`` -> ``100000``); raises on ``-5``."""
        if not method_info(self.method).budgeted or self.hyper_value():
            return None
        return read_budget(self.budget)

    def hyper_value(self) -> dict[str, Any]:
        return parse_hyper(self.hyper)

    def mode_value(self) -> str:
        try:
            return method_info(self.method).mode_for(self.mode)
        except ValueError:  # an unknown method: the readout names it
            return "lora"

    def targets_value(self, preset: list[str] | None) -> list[str] | None:
        if not takes_targets(self.method):
            return None
        targets = parse_targets(self.targets)
        return None if targets == preset else targets  # the preset is the default: record it as such

    def to_config(self, runs_dir: str | Path, preset: list[str] | None = None) -> TrainConfig:
        """The run's TrainConfig; raises ValueError with a readable message on bad input."""
        method_info(self.method)
        if not (self.backbone or "").strip():
            raise ValueError("choose a backbone")
        if not (self.task or "").strip():
            raise ValueError("choose a task")
        try:
            lr = None if self.lr is None or str(self.lr).strip() == "" else float(self.lr)
        except ValueError:
            raise ValueError(f"the learning rate must be a number such as 1e-3, got {self.lr!r}") from None
        if lr is not None and not 0 < lr < float("inf"):
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        epochs = _int_or_none(self.epochs, "epochs") or 1
        max_train = _int_or_none(self.max_train, "max train examples")
        batch_size = _int_or_none(self.batch_size, "batch size") or 32
        column = lambda text: (text or "").strip() or None  # noqa: E731
        return TrainConfig(
            backbone=self.backbone.strip(),
            task=self.task.strip(),
            method=self.method,
            mode=self.mode_value(),
            budget=self.budget_value(),
            hyper=self.hyper_value(),
            targets=self.targets_value(preset),
            max_steps=_int_or_none(self.max_steps, "max steps", minimum=0) or None,  # 0: the epochs decide
            eval_every=_int_or_none(self.eval_every, "eval every", minimum=0) or 0,
            schedule=self.schedule or "cosine",
            warmup_ratio=_float_or(self.warmup_ratio, "warm-up ratio", 0.06),
            weight_decay=_float_or(self.weight_decay, "weight decay", 0.0),
            text_column=column(self.text_column),
            label_column=column(self.label_column),
            text_pair_column=column(self.text_pair_column),
            epochs=epochs,
            lr=lr,
            seed=_int_or_none(self.seed, "seed", minimum=0) or 0,
            max_train=max_train,
            max_eval=_int_or_none(self.max_eval, "max eval examples"),
            max_length=_int_or_none(self.max_length, "max length") or 128,
            batch_size=batch_size,
            log_every=log_every(max_train, batch_size, epochs),
            runs_dir=str(runs_dir),
            name=(self.name or "").strip() or None,
        )


@dataclass
class Tick:
    """What changed since the last tick; ``None`` means unchanged (the UI sends nothing)."""

    seen: dict[str, Any]
    status: str | None = None
    loss: Any = None
    metric: Any = None
    queue: str | None = None
    table: pd.DataFrame | None = None
    tradeoff: Any = None
    groups: list[str] | None = None
    runs: list[str] | None = None
    group: str | None = None  # the backbone/task chosen for a page that had none
    jobs: list[tuple[str, str]] | None = None
    busy: bool | None = None
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class View:
    """What the trade-off plot shows: a backbone/task (or all), two axes, a text filter on the runs."""

    group: str | None = None
    x: str = "trainable parameters"
    y: str = "metric"
    filter: str = ""

    def select(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows of the group whose run, method or mode contain every word of the filter."""
        table = filter_group(table, self.group)
        words = self.filter.lower().split()
        if not words or table.empty:
            return table
        text = (table["run"].astype(str) + " " + table["method"].astype(str) + " " + table["mode"].astype(str)).str
        keep = pd.Series(True, index=table.index)
        for word in words:
            keep &= text.lower().str.contains(word, regex=False)
        return table[keep]

    def title(self) -> str:
        where = "all backbones / tasks" if self.group in (None, ALL_RUNS) else self.group
        return f"{self.y} vs {self.x}<br><sub>{where}</sub>"  # two short lines: a phone shows both


USER_DATA_PREFIXES = ("folder", "csv", "tsv")


def _outside_roots(path: Path, roots: list[Path]) -> bool:
    path = path.expanduser().resolve()
    return not any(path == root or path.is_relative_to(root) for root in roots)


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def check_data_path(task: str, roots: list[Path]) -> None:
    """A page may name only data under the folders whoever started the app allowed (``--data-root``):
    ``csv:/etc/passwd`` or ``folder:/`` from a browser is refused, symbolic links resolved first."""
    prefix, _, rest = task.partition(":")
    if prefix not in USER_DATA_PREFIXES or not rest:
        return
    if _outside_roots(Path(rest), roots):
        raise ValueError(
            f"{prefix}: paths must lie under the app's data roots ({_roots_text(roots)}); start the app with "
            "--data-root FOLDER to allow another folder"
        )


def backbone_path(backbone: str) -> Path | None:
    """The local path a backbone name makes the server read as a model, or None (a named backbone or a
    hub id). Scheme prefixes (``hf:``, ``timm:``, timm's ``local-dir:``) are peeled off; what is left is
    a path when it is absolute, starts with ``.`` or ``~``, or exists (the loaders try a folder first)."""
    if backbone in list_backbones():
        return None
    ref = backbone
    while (head := ref.partition(":"))[1] and head[0] and all(c.isalnum() or c in "-_" for c in head[0]):
        ref = head[2]
    path = Path(ref)
    return path if ref and (path.is_absolute() or ref.startswith((".", "~")) or path.exists()) else None


def check_backbone_path(backbone: str, roots: list[Path]) -> None:
    """``hf:/any/folder`` typed in the page would make the server read that folder as a model: a local
    backbone must lie under the same ``--data-root`` folders as data, symbolic links resolved first."""
    path = backbone_path(backbone)
    if path is not None and _outside_roots(path, roots):
        raise ValueError(
            f"backbone {backbone!r}: a local model folder must lie under the app's data roots "
            f"({_roots_text(roots)}); start the app with --data-root FOLDER to allow another folder"
        )


class Lab:
    """The app's state: the runs folder, the job manager, the readout and the metrics cache.
    ``data_roots``: the folders the page may read user data from (default: the working directory
    the app was started in, and the runs folder)."""

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        jobs: JobManager | None = None,
        data_roots: list[str | Path] | None = None,
    ) -> None:
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        roots = data_roots if data_roots else [Path.cwd(), self.runs_dir]
        self.data_roots = [Path(r).expanduser().resolve() for r in roots]
        uploads = self.runs_dir / APP_DIR / "uploads"  # the Data tab's uploads: readable whatever the roots
        if _outside_roots(uploads, self.data_roots):
            self.data_roots.append(uploads.resolve())
        self.jobs = jobs or JobManager(self.runs_dir)
        self.readout = BudgetReadout()
        self.metrics = MetricsCache()
        self.downloads = Path(tempfile.mkdtemp(prefix="surmlab-app-"))  # adapter zips, served for download
        atexit.register(shutil.rmtree, self.downloads, True)

    # -- the form --------------------------------------------------------------------------------------
    def plan(self, form: Form) -> Readout:
        """The budget readout for the form (never raises)."""
        try:
            check_backbone_path(form.backbone or "", self.data_roots)
            check_data_path((form.task or "").strip(), self.data_roots)  # first: no header read outside them
            columns = (form.text_column, form.label_column, form.text_pair_column)
            check_columns((form.task or "").strip(), *((c or "").strip() or None for c in columns))
            hyper = form.hyper_value() if method_info_or_none(form.method) else {}
        except ValueError as err:
            return Readout(False, str(err))
        try:
            return self.readout(
                form.backbone,
                form.task,
                form.method,
                form.mode_value(),
                form.budget if not hyper else None,
                parse_targets(form.targets) if takes_targets(form.method) else None,
                hyper=hyper,
                nearest=bool(form.nearest),
            )
        except Exception as err:  # a bug in a lower layer still ends as a message
            log.exception("readout failed")
            return Readout(False, f"{type(err).__name__}: {err}")

    def feasible(self, form: Form, methods: list[str]) -> pd.DataFrame:
        """For each of ``methods``: the counts next to the form's budget and what "nearest" trains."""
        rows = []
        for method in methods:
            f = Form(**{**form.__dict__, "method": method, "hyper": None})
            try:
                targets = parse_targets(f.targets) if takes_targets(method) else None
                r: Feasible = self.readout.feasible(f.backbone, f.task, method, f.mode_value(), f.budget, targets)
                rows.append(feasible_row(r))
            except ValueError as err:
                rows.append({"method": method, "at or below": "", "above": "", "nearest": "", "note": str(err)})
        return pd.DataFrame(rows, columns=FEASIBLE_COLUMNS)

    def start(self, form: Form, preset: list[str] | None = None) -> str:
        """Validate the form, then start it or queue it behind the running job. With "nearest" on, the
        readout's setting is pinned as explicit hyper-parameters (``surmlab train`` solves budgets
        at or below only), so the run trains the count the readout showed."""
        try:
            config = form.to_config(self.runs_dir, preset)
            check_data_path(config.task, self.data_roots)
            check_backbone_path(config.backbone, self.data_roots)
        except ValueError as err:
            return f"**Cannot start:** {err}"
        readout = self.plan(form)
        if not readout.ok:
            return f"**Cannot start:** {readout.message}"
        note = ""
        if form.nearest and config.budget is not None:
            pinned = pinned_hyper(config.method, readout.hyper)
            config = replace(config, budget=None, hyper=pinned)
            note = f" (nearest to a budget of {config_budget(form)}: {pinned_text(pinned)})"
        try:
            job = self.jobs.submit(config)
        except Exception as err:
            log.exception("submit failed")
            return f"**Cannot start:** {err}"
        return self._submitted(job, f" ({readout.trainable:,} trainable parameters){note}")

    def _submitted(self, job: JobRecord, detail: str = "") -> str:
        snap = self.jobs.snapshot()
        if snap.current is not None and snap.current.id == job.id:
            return f"Started {job.label()}{detail}."
        position = next((i for i, j in enumerate(snap.pending, 1) if j.id == job.id), None)
        if position is not None:
            return f"Queued {job.label()}: position {position}, after the running job."
        done = self.jobs.find(job.id)
        return f"Job {job.label()}: {done.status if done else 'unknown'} — {done.reason if done else ''}"

    def resume(self, name: str | None) -> str:
        """Continue a stopped or interrupted run from its last checkpoint (queued like a new run)."""
        path = self._run_path(name)
        if path is None:
            return "Choose a stopped or interrupted run to resume."
        try:
            job = self.jobs.resume(path)
        except (OSError, ValueError) as err:
            return f"**Cannot resume:** {err}"
        return self._submitted(job).replace("Started", "Resumed", 1)

    def stop(self, job_id: str | None = None) -> str:
        return self.jobs.stop(job_id or None)

    def job_choices(self) -> list[tuple[str, str]]:
        """(title, id) of the running and queued jobs, for the per-job Stop / Cancel."""
        snap = self.jobs.snapshot()
        return [(j.title(), j.id) for j in [*filter(None, [snap.current]), *snap.pending]]

    def cancel_queued(self) -> str:
        return self.jobs.cancel_pending()

    # -- polling -----------------------------------------------------------------------------------------
    def watched(self) -> JobRecord | None:
        """The job the live panel shows: the running one, else the latest one this app ran."""
        snap = self.jobs.snapshot()
        if snap.current is not None:
            return snap.current
        return snap.recent[0] if snap.recent else None

    def tick(self, seen: dict[str, Any] | None, group: str | None = None, view: View | None = None) -> Tick:
        """Everything the page shows that changed since ``seen`` (``None``: a fresh page, send all).
        ``group`` None: the backbone/task of the newest run (``Tick.group`` says which)."""
        seen = dict(seen or {})
        out = Tick(seen)
        view = replace(view or View(), group=group)
        try:
            self.jobs.poll()
            job = self.watched()
            live_key = (job.id, job.status, job.stop_requested, run_stamp(job.run_dir)) if job else None
            if "live" not in seen or seen["live"] != live_key:
                seen["live"] = live_key
                out.status, out.loss, out.metric = self.live(job)
                out.changed += ["status", "loss", "metric"]
            queue_key = self.jobs.version
            if seen.get("queue") != queue_key or "queue" not in seen:
                seen["queue"] = queue_key
                out.queue = self.queue_markdown()
                out.jobs = self.job_choices()
                out.changed.append("queue")
            busy = self.busy()
            if seen.get("busy") != busy:
                seen["busy"] = busy
                out.busy = busy
                out.changed.append("busy")
            history_key = (history_stamp(self.runs_dir), queue_key, view)
            if "history" not in seen or seen["history"] != history_key:
                seen["history"] = history_key
                table = self.run_table()
                groups = sorted(set(groups_of(table)))
                if view.group is None and len(table):
                    view = replace(view, group=groups_of(table)[0])  # the newest run's backbone/task
                    out.group = view.group
                    seen["history"] = (*history_key[:2], view)  # the page sends this group from now on
                out.table = display_table(pd.concat([table, self.unrecorded_jobs()], ignore_index=True))
                out.tradeoff = plots.tradeoff(view.select(table), title=view.title(), x=view.x, y=view.y)
                out.groups = [ALL_RUNS, *groups]
                out.runs = list(table["run"])
                out.changed += ["table", "tradeoff", "groups", "runs"]
        except Exception:
            log.exception("tick failed")
        return out

    def busy(self) -> bool:
        """A job runs or waits: the page polls fast; otherwise slowly (an idle tab stays quiet)."""
        snap = self.jobs.snapshot()
        return snap.current is not None or bool(snap.pending)

    def run_table(self) -> pd.DataFrame:
        """``list_runs`` with what the trade-off axes need besides: mean training examples per second
        (from the run's metrics) and peak memory (from its summary)."""
        table = list_runs(self.runs_dir)
        speeds, memory = [], []
        for path in table["path"]:
            rows = [r["examples_per_s"] for r in self.metrics.rows(path) if r.get("examples_per_s")]
            speeds.append(sum(rows) / len(rows) if rows else None)
            memory.append(read_summary(path).peak_memory_mb)
        return table.assign(examples_per_s=speeds, peak_memory_mb=memory)

    def live(self, job: JobRecord | None) -> tuple[str, Any, Any]:
        """Status block (HTML) and the two live figures for ``job``."""
        if job is None:
            none = plots.empty("Training loss", "start a run"), plots.empty("Eval metric", "start a run")
            return status_html("idle", "No run yet: choose a setup and press Start.", None, None), *none
        summary = read_summary(job.run_dir) if job.run_dir else RunSummary()
        rows = self.metrics.rows(job.run_dir) if job.run_dir else []
        p = progress(summary, rows)
        loss, metric = plots.live(rows, p.metric, job.label())
        status = STOPPING if job.stop_requested and job.status.active else job.status
        return status_html(status, job.label(), job, p, summary), loss, metric

    def queue_markdown(self) -> str:
        snap = self.jobs.snapshot()
        lines = []
        if snap.current is not None:
            state = STOPPING if snap.current.stop_requested else snap.current.status
            lines.append(f"**{state}**: {snap.current.title()}")
        for i, job in enumerate(snap.pending, 1):
            lines.append(f"**queued #{i}**: {job.title()}")
        for job in snap.recent[:5]:
            why = f" — {job.reason}" if job.reason and job.status in (RunStatus.FAILED, RunStatus.CANCELLED) else ""
            lines.append(f"{job.status}: {job.title()}{why}")
        return "  \n".join(lines) if lines else "No jobs yet."

    def unrecorded_jobs(self) -> pd.DataFrame:
        """Jobs that failed or were cancelled before their run folder existed (a missing file, a bad
        column): rows for the run table, so every failure is listed with its reason."""
        rows = [
            {"run": f"(job {j.id}) {j.name}", "status": j.status, "backbone": j.config.backbone,
             "task": j.config.task, "method": j.config.method, "mode": j.config.mode, "reason": j.reason}
            for j in self.jobs.snapshot().recent
            if j.run_dir is None and j.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        ]  # fmt: skip
        return pd.DataFrame(rows)

    # -- history ---------------------------------------------------------------------------------------
    def tradeoff(self, group: str | None, view: View | None = None) -> Any:
        view = replace(view or View(), group=group)
        return plots.tradeoff(view.select(self.run_table()), title=view.title(), x=view.x, y=view.y)

    def tradeoff_csv(self, group: str | None, view: View | None = None) -> str:
        """The runs the trade-off view shows, with every axis column, as a CSV file to download."""
        view = replace(view or View(), group=group)
        table = view.select(self.run_table())
        columns = ["run", "status", "backbone", "task", "method", "mode", "metric", "best", "final",
                   *(a.column for a in plots.AXES.values() if a.column not in ("best",))]  # fmt: skip
        target = self.downloads / "tradeoff.csv"
        table.reindex(columns=list(dict.fromkeys(columns))).to_csv(target, index=False)
        return str(target)

    def compare(self, runs: list[str] | None, smoothing: float = 0.0) -> Any:
        chosen = []
        for name in runs or []:
            path = self._run_path(name)
            if path is None:
                continue
            summary = read_summary(path)
            chosen.append((name, summary.method, self.metrics.rows(path), summary.metric))
        return plots.compare(chosen, smoothing=smoothing)

    def settings_diff(self, runs: list[str] | None) -> pd.DataFrame:
        """The training options in which the chosen runs differ (one row per option, a column per run)."""
        configs = {}
        for name in runs or []:
            path = self._run_path(name)
            if path is None:
                continue
            try:
                train = RunDir(path).config().train
            except (OSError, ValueError):  # no config.json (an older or failed run): its summary's copy
                train = read_summary(path).config
            if train is None:
                continue
            configs[name] = {k: v for k, v in train.__dict__.items() if k not in ("runs_dir", "name")}
        if len(configs) < 2:
            return pd.DataFrame({"option": ["(pick two or more runs to see where their settings differ)"]})
        keys = list(next(iter(configs.values())))
        differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
        rows = [{"option": k, **{n: str(c.get(k)) for n, c in configs.items()}} for k in differ]
        return pd.DataFrame(rows or [{"option": "(the same settings)"}])

    def _run_path(self, name: str | None) -> Path | None:
        """The run folder called ``name`` directly under the runs folder, or None (no path tricks)."""
        if not name or name != Path(name).name or name.startswith("."):
            return None
        path = self.runs_dir / name
        return path if path.is_dir() else None

    def adapter_zip(self, name: str | None) -> tuple[str | None, str]:
        """A zip of the run's adapter folder for download, and a message."""
        path = self._run_path(name)
        if path is None:
            return None, "Choose a run."
        adapter = RunDir(path).final_dir  # final/ (adapter/ in older run folders)
        if not path.is_symlink() and not adapter.is_symlink() and (not adapter.is_dir() or not any(adapter.iterdir())):
            status = read_summary(path).status or "unknown"
            return None, f"{name} has no saved adapter (status: {status})."
        archive = self.downloads / f"{name}-export.zip"
        try:  # the adapter once, label names, run config, and a merged / PEFT copy where the method allows
            files = export_zip(path, archive)
        except UnsafeFolder as err:
            log.warning("download refused: %s", err)
            return None, f"Not served: {err}."
        except (OSError, ValueError) as err:  # deleted while zipping, or a run export cannot read
            return None, f"Could not export {name}: {getattr(err, 'strerror', None) or err}."
        return str(archive), f"Adapter of {name}: {', '.join(sorted(files))}."

    def delete(self, name: str | None, confirmed: str | None = None) -> str:
        """Delete a run folder, only when ``confirmed`` names the same run (the page's second click)."""
        path = self._run_path(name)
        if path is None:
            return "Choose a run to delete."
        if confirmed != name:
            return f"Delete {name}? Its weights and records go for good: press **Confirm delete**."
        if str(path.resolve()) in self.jobs.busy_run_dirs():
            return f"{name} is running: stop it first."
        try:
            shutil.rmtree(path)
        except OSError as err:
            return f"Could not delete {name}: {err}"
        self.metrics.forget(path)
        return f"Deleted {name}."


# -- presentation helpers -------------------------------------------------------------------------------

GREY = "#6b7280"
COLOURS = {
    RunStatus.COMPLETED: "#15803d",
    RunStatus.RUNNING: "#2563eb",
    RunStatus.STARTING: "#2563eb",
    RunStatus.QUEUED: GREY,
    RunStatus.STOPPED: "#b45309",
    RunStatus.INTERRUPTED: "#b45309",
    RunStatus.FAILED: "#b91c1c",
    RunStatus.CANCELLED: GREY,
    STOPPING: "#b45309",
}  # anything else (the page's "idle") is grey


def status_html(status: str, label: str, job: JobRecord | None, p: Any, summary: RunSummary | None = None) -> str:
    """The live status block: status, progress bar, step, elapsed and remaining time, outcome."""
    colour = COLOURS.get(status, GREY)
    esc = html.escape
    parts = [
        f'<div class="surm-status" data-status="{esc(status)}" style="font-size:0.95rem;line-height:1.5">',
        f'<div><span style="color:{colour};font-weight:700;text-transform:uppercase">{esc(status)}</span>'
        f" · {esc(label)}</div>",
    ]
    if p is not None:
        pct = 100 * (1.0 if status == RunStatus.COMPLETED else p.fraction)
        parts.append(
            '<div style="background:#e5e7eb;border-radius:4px;height:10px;margin:6px 0;overflow:hidden">'
            f'<div class="surm-bar" style="width:{pct:.1f}%;background:{colour};height:100%"></div></div>'
        )
        total = p.total_steps if p.total_steps is not None else "?"
        bits = [f"step {p.step} / {total}", f"elapsed {format_seconds(p.elapsed_s)}"]
        if status == RunStatus.RUNNING:
            bits.append(f"remaining ~{format_seconds(p.remaining_s)}")
        if p.loss is not None:
            bits.append(f"loss {p.loss:.4f}")
        if p.metric_value is not None:
            bits.append(f"{p.metric} {p.metric_value:.4f}")
        parts.append(f"<div>{' · '.join(esc(b) for b in bits)}</div>")
    if job is not None:
        if status == RunStatus.STARTING:
            parts.append("<div>Loading the backbone and the data…</div>")
        if status == STOPPING:
            parts.append("<div>Stopping: a last evaluation, then the adapter is saved…</div>")
        if job.run_dir:
            parts.append(f'<div style="color:#6b7280">run: {esc(Path(job.run_dir).name)}</div>')
        if job.reason and status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.STOPPED):
            parts.append(f'<div class="surm-reason" style="color:{colour}">reason: {esc(job.reason)}</div>')
        weights = RunDir(job.run_dir).final_dir if job.run_dir else None
        if status in (RunStatus.COMPLETED, RunStatus.STOPPED) and weights is not None and weights.is_dir():
            parts.append(f'<div class="surm-adapter">adapter saved: {esc(weights.parent.name)}/{weights.name}</div>')
    parts.append("</div>")
    return "".join(parts)


def groups_of(table: pd.DataFrame) -> list[str]:
    return list(table["backbone"].astype(str) + " / " + table["task"].astype(str))


def filter_group(table: pd.DataFrame, group: str | None) -> pd.DataFrame:
    if not group or group == ALL_RUNS or table.empty:
        return table
    return table[[g == group for g in groups_of(table)]]


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The run list as people read it: rounded numbers, structure names, short times."""
    if table.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)

    def share(row: pd.Series) -> str:
        t, n = row["trainable_params"], row["total_params"]
        return f"{100 * t / n:.3f}%" if pd.notna(t) and pd.notna(n) and n else ""

    def number(x: Any) -> str:
        return f"{x:.4f}" if isinstance(x, int | float) and pd.notna(x) else ""

    return pd.DataFrame(
        {
            "run": table["run"],
            "status": table["status"].fillna(""),
            "structure": [plots.structure(m, md) for m, md in zip(table["method"], table["mode"], strict=True)],
            "backbone": table["backbone"].fillna(""),
            "task": table["task"].fillna(""),
            "trainable": [f"{int(t):,}" if pd.notna(t) else "" for t in table["trainable_params"]],
            "% of model": table.apply(share, axis=1),
            "metric": table["metric"].fillna(""),
            "best": [number(x) for x in table["best"]],
            "final": [number(x) for x in table["final"]],
            "time": [format_seconds(t) if pd.notna(t) else "" for t in table["wall_time_s"]],
            "reason": table["reason"].fillna(""),
        },
        columns=TABLE_COLUMNS,
    )
