"""One training job at a time, each in its own process, with a FIFO queue of pending configs.

The app never trains in its own process: a job is ``python -m surmlab train --config <job>.json``
writing its run directory, so a crash, a NaN or an out-of-memory kill there cannot take the UI down.
The current job, the queue and the recent outcomes live in ``<runs_dir>/.surmlab-app/queue.json``
(written atomically), so a page reload or an app restart finds them again: a restarted app
re-attaches to a child that is still alive by its pid (checked against the job id on its command
line, in the config file's name) and otherwise reads the outcome from the run's ``summary.json``.

A job finds its run directory through its name: the name ``<run name>-<job id>`` in its config file
(``<runs_dir>/.surmlab-app/configs/<job id>.json``) makes the child create
``<stamp>-<run name>-<job id>``. Stop is the run's ``STOP`` file (the training loop finishes the
step, saves the adapter and marks the run ``stopped``); a stop asked for before that folder exists is
remembered and applied as soon as it appears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one app per runs folder is then up to the user
    fcntl = None

from ..fileio import read_json, write_json
from ..runs import RunDir, RunStatus, RunSummary, pid_alive, slug
from ..train import TrainConfig

log = logging.getLogger(__name__)

APP_DIR = ".surmlab-app"  # inside the runs folder; list_runs ignores it (it has no summary.json)
RECENT = 50  # finished jobs kept in the queue file
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # so the child imports this very surmlab


@dataclass
class JobRecord:
    """One submitted training: queued, then starting (process up), running (run folder exists), finished."""

    id: str
    config: TrainConfig
    name: str  # the --name passed to the child; ends with the id
    submitted: float
    status: RunStatus = RunStatus.QUEUED
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    run_dir: str | None = None
    stop_requested: bool = False
    reason: str | None = None
    log: str | None = None
    exit_code: int | None = None
    resume: bool = False  # continue ``run_dir`` (a stopped or interrupted run) instead of a new run

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["config"] = TrainConfig.from_dict(values.get("config") or {})
        values["status"] = RunStatus(values.get("status", RunStatus.QUEUED))
        return cls(**values)

    def label(self) -> str:
        c = self.config
        budget = f", budget {c.budget}" if c.budget is not None else ""
        return f"{c.method} on {c.backbone} / {c.task}{budget}"

    def title(self) -> str:
        """The label with the run's name and the job id: two jobs of one setup read differently."""
        run = Path(self.run_dir).name if self.run_dir else self.name
        verb = "resume " if self.resume else ""
        return f"{verb}{self.label()} · {run} [{self.id}]"

    def token(self) -> str:
        """What the child's command line names, so a recycled pid is not taken for this job."""
        return self.run_dir if self.resume and self.run_dir else self.id


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the training process ended without recording an outcome"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (most likely out of memory)" if -code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with code {code}"


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt)\b.*")


def error_from_log(path: str | Path | None, tail: int = 16_384) -> str | None:
    """The reason a child gave before dying: the CLI's one-line error, else the exception line."""
    if not path or not Path(path).exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - tail))
        text = f.read().decode("utf-8", "replace")
    lines = [ln.strip() for chunk in text.splitlines() for ln in chunk.split("\r") if ln.strip()]
    for line in reversed(lines):
        if line.startswith("surmlab train: error:"):
            return line.removeprefix("surmlab train: error:").strip()[:600]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:600]
    return lines[-1][:600] if lines else None


@dataclass
class QueueState:
    current: JobRecord | None = None
    pending: list[JobRecord] = field(default_factory=list)
    recent: list[JobRecord] = field(default_factory=list)  # newest first


class JobManager:
    """Runs submitted ``TrainConfig``s one at a time in ``python -m surmlab train`` subprocesses.

    Every public method is safe to call from any thread and never raises on a child's failure; the
    outcome is recorded on the job (``status``, ``reason``) and in the run's summary.
    """

    def __init__(self, runs_dir: str | Path, python: str = sys.executable) -> None:
        self.runs_dir = Path(runs_dir).resolve()
        self.state_dir = self.runs_dir / APP_DIR
        self.queue_file = self.state_dir / "queue.json"
        self.python = python
        self.version = 0  # bumped on every state change: cheap change detection for the UI
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock_file = self._claim()
        self.state = self._load()

    # -- persistence -------------------------------------------------------------------------------------
    def _claim(self) -> Any:
        """One manager per runs folder: two would both start jobs and overwrite each other's queue."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / "lock", "a")  # noqa: SIM115 - held open for the manager's lifetime
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise RuntimeError(
                    f"another surmlab app already manages {self.runs_dir}; use that one, or another --runs-dir"
                ) from None
        return handle

    def _load(self) -> QueueState:
        if not self.queue_file.exists():
            return QueueState()
        try:
            data = read_json(self.queue_file)
            return QueueState(
                current=JobRecord.from_dict(data["current"]) if data.get("current") else None,
                pending=[JobRecord.from_dict(d) for d in data.get("pending", [])],
                recent=[JobRecord.from_dict(d) for d in data.get("recent", [])],
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring unreadable %s: %s", self.queue_file, err)
            return QueueState()

    def _save(self) -> None:
        s = self.state
        write_json(
            self.queue_file,
            {
                "format": 1,
                "current": asdict(s.current) if s.current else None,
                "pending": [asdict(j) for j in s.pending],
                "recent": [asdict(j) for j in s.recent[:RECENT]],
            },
        )
        self.version += 1

    # -- public API ----------------------------------------------------------------------------------------
    def submit(self, config: TrainConfig) -> JobRecord:
        """Queue ``config`` (its ``runs_dir`` is replaced by this manager's); starts it if nothing runs."""
        job_id = secrets.token_hex(3)
        base = slug(config.run_name())[:80]
        config = replace(config, runs_dir=str(self.runs_dir), name=f"{base}-{job_id}")
        job = JobRecord(id=job_id, config=config, name=config.name, submitted=time.time())
        with self._lock:
            self.state.pending.append(job)
            self._save()
            self.poll()
        return job

    def resume(self, run_dir: str | Path) -> JobRecord:
        """Queue a ``--resume`` of a stopped or interrupted run; it keeps its own options and folder."""
        run = RunDir(run_dir)
        summary = run.summary()
        status = run.status(summary)
        if status is None or not status.resumable:
            raise ValueError(f"{run.path.name} is {status or 'not a run'}: only stopped or interrupted runs resume")
        config = run.config().train
        job_id = secrets.token_hex(3)
        job = JobRecord(
            id=job_id, config=config, name=run.path.name, submitted=time.time(), run_dir=str(run.path), resume=True
        )
        with self._lock:
            if any(j.run_dir == job.run_dir for j in [*filter(None, [self.state.current]), *self.state.pending]):
                raise ValueError(f"{run.path.name} is already queued or running")
            self.state.pending.append(job)
            self._save()
            self.poll()
        return job

    def stop(self, job_id: str | None = None) -> str:
        """Stop the current job gracefully (or cancel the queued job ``job_id``); returns what happened."""
        with self._lock:
            current = self.state.current
            if job_id is not None and (current is None or current.id != job_id):
                for job in self.state.pending:
                    if job.id == job_id:
                        self.state.pending.remove(job)
                        self._finish(job, RunStatus.CANCELLED, "removed from the queue")
                        self._save()
                        return f"Removed {job.label()} from the queue."
                return "That job is no longer queued or running."
            if current is None:
                return "Nothing is running."
            current.stop_requested = True
            self._apply_stop(current)
            self._save()
            if current.run_dir:
                return "Stop requested: the run finishes its current step, evaluates, saves its adapter and stops."
            return "Stop requested: the run stops (and saves) right after it starts."

    def cancel_pending(self) -> str:
        with self._lock:
            jobs, self.state.pending = self.state.pending, []
            for job in jobs:
                self._finish(job, RunStatus.CANCELLED, "removed from the queue")
            if jobs:
                self._save()
        return f"Removed {len(jobs)} queued job(s)." if jobs else "The queue is empty."

    def snapshot(self) -> QueueState:
        """A copy of the state (records are copied too, so the caller may keep it)."""
        with self._lock:
            s = self.state
            copy = lambda j: JobRecord.from_dict(asdict(j))  # noqa: E731
            return QueueState(
                copy(s.current) if s.current else None, [copy(j) for j in s.pending], [copy(j) for j in s.recent]
            )

    def find(self, job_id: str) -> JobRecord | None:
        s = self.snapshot()
        return next((j for j in [*filter(None, [s.current]), *s.pending, *s.recent] if j.id == job_id), None)

    def busy_run_dirs(self) -> set[str]:
        with self._lock:
            cur = self.state.current
            return {str(Path(cur.run_dir).resolve())} if cur and cur.run_dir else set()

    # -- the state machine -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Advance: notice the run folder, apply a pending stop, reap a finished child, start the next."""
        with self._lock:
            try:
                changed = self._poll_current()
                if self.state.current is None and self.state.pending:
                    self._launch(self.state.pending.pop(0))
                    changed = True
                if changed:
                    self._save()
            except Exception:  # the UI must keep running whatever happens here
                log.exception("job manager poll failed")

    def _poll_current(self) -> bool:
        job = self.state.current
        if job is None:
            return False
        changed = False
        if job.run_dir is None:
            found = self._find_run_dir(job)
            if found is not None:
                job.run_dir, job.status, changed = str(found), RunStatus.RUNNING, True
        elif job.status is RunStatus.STARTING and job.resume:  # running once the trainer claims the run
            with contextlib.suppress(OSError, ValueError, TypeError):
                summary = RunDir(job.run_dir).summary()
                if summary.status is RunStatus.RUNNING and summary.pid == job.pid:
                    job.status, changed = RunStatus.RUNNING, True
        if job.stop_requested and job.status is RunStatus.RUNNING:  # a resume removes an earlier STOP file
            self._apply_stop(job)
        alive, code = self._child_status(job)
        if alive:
            return changed
        self._reap(job, code)
        return True

    def _find_run_dir(self, job: JobRecord) -> Path | None:
        matches = sorted(self.runs_dir.glob(f"*-{slug(job.name)}"))
        return matches[-1] if matches else None

    def _apply_stop(self, job: JobRecord) -> None:
        if job.run_dir and Path(job.run_dir).is_dir():
            with contextlib.suppress(OSError):
                RunDir(job.run_dir).request_stop()

    def _child_status(self, job: JobRecord) -> tuple[bool, int | None]:
        proc = self._proc
        if proc is not None and proc.pid == job.pid:
            code = proc.poll()
            return code is None, code
        return pid_alive(job.pid, job.token()), None  # a child of an earlier app process: no exit code

    def _launch(self, job: JobRecord) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        job.log = str(logs / f"{job.id}.log")
        config_file = self.state_dir / "configs" / f"{job.id}.json"  # its name carries the id that pid_alive checks
        cmd = [self.python, "-m", "surmlab", "train", "--config", str(config_file)]
        if job.resume:
            cmd = [self.python, "-m", "surmlab", "train", "--resume", str(job.run_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        job.started, job.status = time.time(), RunStatus.STARTING
        self.state.current = job
        try:
            if not job.resume:
                write_json(config_file, asdict(job.config))
            with open(job.log, "ab") as out:
                out.write(("$ " + " ".join(cmd) + "\n").encode())
                out.flush()
                # A session of its own: Ctrl-C in the app's terminal does not reach the training,
                # which a restarted app then re-attaches to.
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            job.pid = self._proc.pid
        except (OSError, ValueError) as err:  # ValueError: a queued config this version no longer accepts
            self._reap(job, None, f"could not start the training process: {err}")

    def _reap(self, job: JobRecord, code: int | None, reason: str | None = None) -> None:
        """Record the outcome of a job whose process is gone, and clear ``current``."""
        job.exit_code = code
        if job.run_dir is None:  # it may have appeared between the last poll and the exit
            found = self._find_run_dir(job)
            job.run_dir = str(found) if found else None
        run = RunDir(job.run_dir) if job.run_dir else None
        summary, recorded = RunSummary(), False  # recorded: the run has a readable summary
        if run is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                summary, recorded = run.summary(), run.summary_file.exists()
            with contextlib.suppress(OSError):
                run.stop_file.unlink(missing_ok=True)  # consumed; a later --resume must not stop at once
        if summary.finished:
            self._finish(job, summary.status, summary.reason)
        elif run is not None:  # died without recording an outcome: killed, or crashed before writing one
            why = reason or describe_exit(code)
            detail = error_from_log(job.log) if code not in (None, -signal.SIGKILL) else None
            why = f"{why}: {detail}" if detail and code else why
            with contextlib.suppress(OSError, ValueError):
                extra = {} if recorded else {"config": job.config}
                run.update_summary(status=RunStatus.FAILED, reason=why, **extra)
            self._finish(job, RunStatus.FAILED, why)
        elif job.stop_requested and not reason:
            self._finish(job, RunStatus.CANCELLED, "stopped before training started")
        else:
            self._finish(job, RunStatus.FAILED, reason or error_from_log(job.log) or describe_exit(code))
        if self._proc is not None and self._proc.pid == job.pid:
            self._proc = None

    def _finish(self, job: JobRecord, status: RunStatus, reason: str | None) -> None:
        job.status, job.reason, job.finished = status, reason, time.time()
        if self.state.current is job:
            self.state.current = None
        self.state.recent.insert(0, job)
        del self.state.recent[RECENT:]

    # -- background watcher --------------------------------------------------------------------------------
    def start_watcher(self, interval: float = 1.0) -> None:
        """Poll in a daemon thread, so the queue advances with no browser open."""
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._stop_watch.clear()

        def loop() -> None:
            while not self._stop_watch.wait(interval):
                self.poll()

        self._watcher = threading.Thread(target=loop, name="surmlab-jobs", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop the watcher and let go of the runs folder (running jobs keep running; a new manager
        re-attaches to them)."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if not self._lock_file.closed:
            self._lock_file.close()
