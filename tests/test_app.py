"""The Gradio lab without a browser: the handlers turn bad input into messages, the budget readout
counts what training trains, the job manager queues, stops, re-attaches and records failures with
real ``surmlab train`` subprocesses on a tiny model, and the timer sends only what changed."""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surmlab.app import _is_loopback, parse_auth
from surmlab.app.experiments_tab import Experiments, parse_params
from surmlab.app.handlers import ALL_RUNS, Form, Lab, View, display_table, log_every, status_html
from surmlab.app.jobs import JobManager, JobRecord, error_from_log, pid_alive
from surmlab.app.plots import DOMINATED, colour, structure
from surmlab.app.plots import smooth as smooth_ema
from surmlab.app.readout import BudgetReadout, parse_targets, takes_mode, takes_targets
from surmlab.app.study_tab import Studies, spec_from_form
from surmlab.app.watch import MetricsCache, progress
from surmlab.runs import RunDir, RunStatus, RunSummary, list_runs
from surmlab.train import TrainConfig

TINY = {"backbone": "tiny-bert", "task": "rotten-tomatoes", "method": "surm-circulant", "budget": "1k"}
SMALL_FORM = {**TINY, "max_train": 64, "max_eval": 32, "max_length": 32, "batch_size": 16}
SMALL = {**TINY, "max_train": 64, "max_eval": 32, "max_length": 32, "batch_size": 16, "log_every": 1}


def wait_for(condition, timeout: float = 90.0, every: float = 0.3, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def readout() -> BudgetReadout:
    return BudgetReadout()


# -- the budget readout ------------------------------------------------------------------------------


def test_readout_counts_exactly_what_training_trains(readout):
    r = readout("tiny-bert", "rotten-tomatoes", "surm-circulant", "lora", "1k")
    assert r.ok, r.message
    # tiny-bert: 4 targets of 64x64 (q and v of 2 layers); block 32 -> 4 kernels of 32 per layer; head 64*2+2
    assert (r.trainable, r.hyper["block_size"]) == (512 + 130, 32)
    assert "642 trainable parameters" in r.message and "0.031%" in r.message
    assert [row["params"] for row in r.rows] == [128] * 4 and all(row["shape"] == "64x64" for row in r.rows)
    assert r.preset == ["attention.self.query", "attention.self.value"]
    adapter = readout("tiny-bert", "rotten-tomatoes", "surm-circulant", "adapter", "5k")
    assert adapter.ok and adapter.preset == ["attention.output.dense", "output.dense"]
    bitfit = readout("tiny-bert", "rotten-tomatoes", "bitfit", "lora", "50k")  # no size knob: budget ignored
    assert bitfit.ok and bitfit.preset is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("tiny-bert", "rotten-tomatoes", "surm-circulant", "lora", "lots"), "cannot read budget"),
        (("tiny-bert", "rotten-tomatoes", "surm-circulant", "lora", "10"), "infeasible"),
        (("no-such-model", "rotten-tomatoes", "surm-circulant", "lora", "1k"), "unknown backbone"),
        (("tiny-bert", "no-such-task", "surm-circulant", "lora", "1k"), "unknown task"),
        (("tiny-bert", "cifar10", "surm-circulant", "lora", "1k"), "image task"),
        (("tiny-bert", "rotten-tomatoes", "surm-nonsense", "lora", "1k"), "unknown method"),
        (("tiny-bert", "rotten-tomatoes", "lora", "lora", ""), "needs a budget"),
        (("", "rotten-tomatoes", "lora", "lora", "1k"), "Choose a backbone"),
    ],
)
def test_readout_turns_bad_input_into_messages(readout, args, expected):
    r = readout(*args)
    assert not r.ok and expected in r.message


def test_readout_reports_bad_targets(readout):
    r = readout("tiny-bert", "rotten-tomatoes", "surm-toeplitz", "lora", "1k", ["no.such.layer"])
    assert not r.ok and "matches no module" in r.message
    assert parse_targets(" query,value\n key ") == ["query", "value", "key"] and parse_targets("  ") is None


def test_start_refuses_bad_forms_without_starting_anything(tmp_path):
    lab = Lab(tmp_path)
    bad = [
        (Form(**{**TINY, "budget": "many"}), "cannot read budget"),
        (Form(**{**TINY, "backbone": "no-such-model"}), "unknown backbone"),
        (Form(**{**TINY, "epochs": 0}), "epochs"),
        (Form(**{**TINY, "epochs": 1.5}), "whole number"),
        (Form(**{**TINY, "lr": "fast"}), "learning rate"),
        (Form(**{**TINY, "lr": "-1"}), "learning rate"),
        (Form(**{**TINY, "max_train": -3}), "max train"),
        (Form(**{**TINY, "method": "surm-circulant", "mode": "adapter", "budget": "10"}), "infeasible"),
    ]
    for form, expected in bad:
        message = lab.start(form)
        assert message.startswith("**Cannot start:**") and expected in message, message
    snap = lab.jobs.snapshot()
    assert snap.current is None and not snap.pending
    assert list_runs(tmp_path).empty


def test_form_to_config_follows_the_method():
    config = Form(**{**TINY, "method": "bitfit", "mode": "adapter", "targets": "query"}).to_config("runs")
    assert (config.budget, config.mode, config.targets) == (None, "lora", None)  # no knob, no mode, no targets
    preset = ["attention.self.query", "attention.self.value"]
    form = Form(**TINY, targets="attention.self.query, attention.self.value", lr="3e-3", max_train=64)
    config = form.to_config("runs", preset)
    assert config.targets is None and config.lr == 3e-3 and config.max_train == 64  # the preset is recorded as such
    assert Form(**TINY, targets="attention.self.query").to_config("runs", preset).targets == ["attention.self.query"]
    assert log_every(64, 16, 1) == 1 and log_every(None, 32, 1) == 10 and log_every(100_000, 32, 3) == 10


def test_the_form_carries_the_training_options_and_reads_budgets_precisely(readout):
    form = Form(**TINY, max_steps=30, eval_every=10, schedule="linear", warmup_ratio=0.1, weight_decay=0.01,
                text_column=" review ", label_column="sentiment", text_pair_column="")  # fmt: skip
    c = form.to_config("runs")
    assert (c.max_steps, c.eval_every, c.schedule, c.warmup_ratio, c.weight_decay) == (30, 10, "linear", 0.1, 0.01)
    assert (c.text_column, c.label_column, c.text_pair_column) == ("review", "sentiment", None)
    pinned = Form(**{**TINY, "method": "lora", "hyper": "rank=3"}).to_config("runs")
    assert (pinned.budget, pinned.hyper) == (None, {"rank": 3})  # an explicit setting replaces the budget
    assert Form(**{**TINY, "budget": "1e5"}).to_config("runs").budget == "100000"
    for text, expected in (("-5", "negative"), ("0", "below 1"), ("2.5", "not a whole number"), ("x1", "cannot read")):
        r = readout("tiny-bert", "rotten-tomatoes", "surm-circulant", "lora", text)
        assert not r.ok and expected in r.message and repr(text) in r.message, r.message
    big = readout("tiny-bert", "rotten-tomatoes", "lora", "lora", "1e4")  # read as 10000
    assert big.ok and "budget of 10,000" in big.message


def test_nearest_and_the_feasible_counts_next_to_a_budget(tmp_path):
    """tiny-bert adapts 4 layers of 64 x 64 (q, v of 2 layers). Counted by hand: circulant with block b
    trains 4 * (64 / b)^2 * b = 16384 / b (b divides 64); LoRA of rank r trains 4 * r * (64 + 64) = 512 r.
    At 3,000: circulant reaches 2,048 (b=8) below and 4,096 (b=4) above; LoRA 2,560 (r=5) and 3,072 (r=6),
    so "nearest" picks 3,072. At 300, LoRA is refused without "nearest" and trains 512 with it."""
    lab = Lab(tmp_path)
    circulant = sorted(16384 // b for b in (1, 2, 4, 8, 16, 32, 64))
    lora = [512 * r for r in range(1, 65)]

    def around(counts, budget):
        return max([c for c in counts if c <= budget], default=None), min([c for c in counts if c > budget])

    table = lab.feasible(Form(**{**TINY, "budget": "3000"}), ["surm-circulant", "lora", "bitfit"])
    rows = {r["method"]: r for r in table.to_dict("records")}
    for method, counts in (("surm-circulant", circulant), ("lora", lora)):
        below, above = around(counts, 3000)
        assert (rows[method]["at or below"], rows[method]["above"]) == (f"{below:,}", f"{above:,}")
        nearest = min(counts, key=lambda c: abs(c - 3000))
        assert rows[method]["nearest"] == f"{nearest:,}"
    assert "no size knob" in rows["bitfit"]["note"]

    plain = Form(**{**TINY, "method": "lora", "budget": "300"})
    assert not lab.plan(plain).ok and "achievable counts range from 512" in lab.plan(plain).message
    near = Form(**{**TINY, "method": "lora", "budget": "300", "nearest": True})
    r = lab.plan(near)
    assert r.ok and r.method_params == 512 and "nearest: above the budget" in r.message
    message = lab.start(Form(**{**SMALL_FORM, "method": "lora", "budget": "3000", "nearest": True}))
    assert "rank=6" in message, message
    job = lab.jobs.snapshot().current
    assert (job.config.budget, job.config.hyper) == (None, {"rank": 6, "lora_alpha": 12.0})
    run = wait_for(lambda: (lab.jobs.poll(), lab.jobs.find(job.id).status == "completed")[1], what="the run")
    assert run and RunDir(lab.jobs.find(job.id).run_dir).summary().trainable_params == 3072 + 130  # + head
    archive, message = lab.adapter_zip(Path(lab.jobs.find(job.id).run_dir).name)  # the download: an export
    names = zipfile.ZipFile(archive).namelist()
    assert {"labels.json", "run_config.json", "adapter/surm_model.safetensors"} <= set(names), names
    assert "labels.json" in message
    lab.jobs.close()


def test_the_method_registry_says_which_methods_take_a_mode():
    """SURM methods (from the registry, not their names) take lora/adapter; others, unknown names and a
    run table's empty cells do not."""
    assert takes_mode("surm-circulant") and takes_mode("surm-lowrank")
    assert takes_targets("lora") and takes_targets("adapter") and takes_targets("surm-ldr")
    assert not any(takes_targets(m) for m in ("bitfit", "layernorm", "linear-probe", "full"))
    assert not any(takes_mode(m) for m in ("lora", "adapter", "c3a", "surm-nothing", None, float("nan")))
    assert Form(**{**TINY, "mode": "adapter"}).mode_value() == "adapter"
    assert Form(**{**TINY, "method": "lora", "budget": "1k", "mode": "adapter"}).mode_value() == "lora"
    assert structure("surm-toeplitz", "adapter") == "surm-toeplitz (adapter)" and structure("lora", "adapter") == "lora"


# -- the job manager, with real training processes ------------------------------------------------------


def test_jobs_queue_stop_reattach_and_failures(tmp_path):
    """A runs while B, C, D wait; a second manager (an app restart) re-attaches to B and stops it; C's loss
    turns NaN; D names an unknown backbone. Each outcome lands with its reason; the adapter of B is saved."""
    first = JobManager(tmp_path)
    a = first.submit(TrainConfig(**SMALL))
    b = first.submit(TrainConfig(**{**SMALL, "epochs": 200}))
    c = first.submit(TrainConfig(**{**SMALL, "method": "full", "budget": None, "lr": 1e30}))
    d = first.submit(TrainConfig(**{**SMALL, "backbone": "no-such-model"}))
    snap = first.snapshot()
    assert snap.current.id == a.id and snap.current.status == "starting"
    assert [j.id for j in snap.pending] == [b.id, c.id, d.id]
    assert json.loads(first.queue_file.read_text())["pending"][0]["id"] == b.id  # persisted for a restart

    def polled(manager: JobManager):
        manager.poll()
        return manager.snapshot()

    wait_for(lambda: (s := polled(first)).current and s.current.id == b.id and s.current.status == "running",
             what="A to finish and B to run")  # fmt: skip
    done_a = first.find(a.id)
    assert done_a.status == "completed" and RunDir(done_a.run_dir).summary().status == "completed"
    assert Path(done_a.run_dir).name.endswith(a.id)

    with pytest.raises(RuntimeError, match="already manages"):
        JobManager(tmp_path)  # two apps on one runs folder would both start jobs
    first.close()  # the app exits; B keeps training in its own session
    second = JobManager(tmp_path)  # the app restarted: it knows B only from the queue file
    snap = second.snapshot()
    assert snap.current.id == b.id and [j.id for j in snap.pending] == [c.id, d.id]
    second.poll()
    assert second.snapshot().current.id == b.id  # still alive: re-attached, not restarted
    wait_for(lambda: RunDir(snap.current.run_dir).metrics(), what="B's first step")
    assert "Stop requested" in second.stop()
    wait_for(lambda: (s := polled(second)).current is None and not s.pending, timeout=120, what="C and D")

    done_b, done_c, done_d = (second.find(j.id) for j in (b, c, d))
    assert done_b.status == "stopped" and done_b.reason == "stop requested"
    adapter = RunDir(done_b.run_dir).final_dir
    assert {"surm_config.json", "surm_model.safetensors", "trainable.safetensors"} <= set(os.listdir(adapter))
    assert not (Path(done_b.run_dir) / "STOP").exists()
    assert done_c.status == "failed"
    assert any(why in done_c.reason for why in ("loss became", "loss diverged", "trained weights became"))
    assert done_d.status == "failed" and done_d.run_dir is None and "unknown backbone" in done_d.reason
    table = list_runs(tmp_path)
    assert sorted(table["status"]) == ["completed", "failed", "stopped"]
    # the run table lists D too, a job that failed before it had a folder, with its reason
    shown = Lab(tmp_path, jobs=second).tick(None, ALL_RUNS).table
    failed = shown[shown["run"].str.contains(d.id)]
    assert list(failed["status"]) == ["failed"] and "unknown backbone" in failed["reason"].iloc[0]
    second.close()


def test_stop_evaluates_then_lands_on_the_plot_and_resume_finishes(tmp_path):
    """Stop: the page says STOPPING (no "remaining ~0:00"), the run evaluates once more and lands on
    the trade-off plot as a stopped run; Resume continues it from its checkpoint to the end."""
    lab = Lab(tmp_path)
    job = lab.jobs.submit(TrainConfig(**{**SMALL, "epochs": 40, "checkpoint_every": 0}))  # 160 steps
    run = wait_for(lambda: (lab.jobs.poll(), lab.jobs.snapshot().current.run_dir)[1], what="the run folder")
    wait_for(lambda: any("loss" in r for r in RunDir(run).metrics()), what="a first step")
    assert "Stop requested" in lab.stop(job.id)
    html = lab.live(lab.jobs.snapshot().current)[0]
    assert 'data-status="stopping"' in html and "remaining" not in html and "last evaluation" in html
    wait_for(lambda: (lab.jobs.poll(), lab.jobs.find(job.id).status == "stopped")[1], what="the stop")
    summary = RunDir(run).summary()
    evals = [r for r in RunDir(run).metrics() if "eval_accuracy" in r]
    assert summary.step < 160 and evals[-1]["step"] == summary.step  # a last evaluation, at the stop
    tick = lab.tick(None)
    points = [t for t in tick.tradeoff.data if t.mode == "markers"]
    assert [list(t.customdata[:, 3]) for t in points] == [["stopped"]]  # on the plot, as a stopped run
    assert list(points[0].y) == [summary.best] == [max(r["eval_accuracy"] for r in evals)]
    assert summary.final_metrics["accuracy"] == evals[-1]["eval_accuracy"]

    assert lab.resume("no-such-run").startswith("Choose a stopped")
    message = lab.resume(Path(run).name)
    assert message.startswith(("Resumed", "Queued")), message
    assert "Cannot resume" in lab.resume(Path(run).name)  # queued or running already: not twice
    wait_for(lambda: (lab.jobs.poll(), RunDir(run).summary().status == "completed")[1], timeout=180, what="resume")
    wait_for(lambda: (lab.jobs.poll(), lab.jobs.snapshot().current is None)[1], what="the resume job to end")
    done = RunDir(run).summary()
    assert done.step == 160 and len(list(tmp_path.glob("2*"))) == 1  # the same folder, to the end
    steps = [r["step"] for r in RunDir(run).metrics() if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 160  # continued, nothing trained twice
    assert lab.jobs.snapshot().recent[0].resume and lab.jobs.snapshot().recent[0].status == "completed"
    lab.jobs.close()


def test_jobs_list_names_each_job_and_cancels_one(tmp_path):
    """Two identical setups queue as two lines that differ (run name and job id); one is cancelled
    alone; an idle app tells the page to poll slowly."""
    lab = Lab(tmp_path)
    assert lab.tick(None).busy is False  # nothing runs: the page slows its polling
    lab.jobs.submit(TrainConfig(**{**SMALL, "backbone": "no-such-model"}))  # fails at once, keeps the line busy
    lab.jobs.poll()
    first = lab.jobs.submit(TrainConfig(**{**SMALL, "epochs": 200}))
    second = lab.jobs.submit(TrainConfig(**{**SMALL, "epochs": 200}))
    titles = dict((i, t) for t, i in lab.job_choices())
    assert first.id in titles[first.id] and titles[first.id] != titles[second.id]
    lines = lab.queue_markdown().split("\n")
    assert len(lines) == len(set(lines))
    pending = [j.id for j in lab.jobs.snapshot().pending]
    victim = pending[-1]
    assert "Removed" in lab.stop(victim)
    assert victim not in [j.id for j in lab.jobs.snapshot().pending]
    assert lab.jobs.find(victim).status == "cancelled"
    lab.jobs.cancel_pending()
    lab.jobs.stop()
    wait_for(lambda: (lab.jobs.poll(), lab.jobs.snapshot().current is None)[1], timeout=180, what="the end")
    lab.jobs.close()


def test_a_killed_job_is_marked_failed_and_the_next_one_starts(tmp_path):
    jobs = JobManager(tmp_path)
    victim = jobs.submit(TrainConfig(**{**SMALL, "epochs": 200}))
    queued = jobs.submit(TrainConfig(**{**SMALL, "epochs": 200}))
    run = wait_for(lambda: (jobs.poll(), jobs.snapshot().current.run_dir)[1], what="the run folder")
    wait_for(lambda: RunDir(run).summary().status == "running", what="training to start")
    os.kill(jobs.snapshot().current.pid, signal.SIGKILL)  # what the kernel's OOM killer does
    wait_for(lambda: (jobs.poll(), jobs.find(victim.id).status == "failed")[1], what="the kill to be noticed")
    reason = jobs.find(victim.id).reason
    assert "SIGKILL" in reason and "out of memory" in reason
    assert RunDir(run).summary().status == "failed" and RunDir(run).summary().reason == reason
    assert jobs.snapshot().current.id == queued.id  # the queue moved on
    jobs.stop()
    os.kill(jobs.snapshot().current.pid, signal.SIGTERM)  # no need to wait for it to reach its first step
    wait_for(lambda: (jobs.poll(), jobs.snapshot().current is None)[1], what="the second job to end")
    assert jobs.find(queued.id).status in ("cancelled", "stopped", "failed")  # SIGTERM may land before the loop


def test_stop_and_cancel_without_jobs_are_messages(tmp_path):
    jobs = JobManager(tmp_path)
    assert jobs.stop() == "Nothing is running."
    assert jobs.cancel_pending() == "The queue is empty."
    assert jobs.stop("nope") == "That job is no longer queued or running."
    assert not pid_alive(None) and pid_alive(os.getpid())
    (tmp_path / "log.txt").write_text("loading\r10%\rTraceback (most recent call last):\n  x\nValueError: bad thing\n")
    assert error_from_log(tmp_path / "log.txt") == "ValueError: bad thing"
    jobs.close()
    (tmp_path / ".surmlab-app" / "queue.json").write_text("{ not json")
    assert JobManager(tmp_path).snapshot().current is None  # a damaged queue file is not fatal


# -- polling and the run history ------------------------------------------------------------------------


def fake_run(root: Path, name: str, status="completed", method="surm-circulant", best=0.7, adapter=True) -> Path:
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    run.log({"step": 1, "epoch": 0.5, "loss": 0.7, "elapsed_s": 1.0})
    run.log({"step": 2, "epoch": 1, "eval_accuracy": best})
    if adapter:
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text("{}")
    run.update_summary(
        status=status, reason=None if status == "completed" else "stop requested", metric="accuracy",
        config=TrainConfig(backbone="tiny-bert", task="rotten-tomatoes", method=method, mode="lora"), method=method,
        trainable_params=642, total_params=2_054_018, best_metrics={"accuracy": best}, final_metrics={"accuracy": best},
        wall_time_s=3.0, total_steps=2, step=2,
    )  # fmt: skip
    return run.path


def test_tick_sends_only_what_changed(tmp_path):
    lab = Lab(tmp_path)
    fresh = lab.tick(None)
    assert fresh.status is not None and "No run yet" in fresh.status
    assert fresh.table is not None and fresh.table.empty and fresh.tradeoff is not None
    idle = lab.tick(fresh.seen)
    assert idle.changed == [] and idle.status is None and idle.table is None and idle.tradeoff is None

    fake_run(tmp_path, "20250101-000000-a")
    fake_run(tmp_path, "20250101-000001-b", method="lora", best=0.8)
    landed = lab.tick(idle.seen)
    assert set(landed.changed) == {"table", "tradeoff", "groups", "runs"}
    assert list(landed.table["status"]) == ["completed", "completed"] and landed.table["trainable"][0] == "642"
    points = [t for t in landed.tradeoff.data if t.mode == "markers"]
    assert sorted(t.name for t in points) == ["lora", "surm-circulant"]
    assert landed.tradeoff.layout.xaxis.type == "log"
    colours = {t.name: list(t.marker.color) for t in points}
    assert colours["surm-circulant"] == [DOMINATED]  # lora beats it at the same count: greyed
    assert colours["lora"] == [colour("lora")]
    assert landed.group == "tiny-bert / rotten-tomatoes"  # one backbone/task by default: the newest run's
    assert landed.tradeoff.layout.yaxis.range[1] <= 1.0  # accuracy's axis ends at 1, not 1.5
    assert lab.tick(landed.seen, landed.group).changed == []


def test_tradeoff_view_axes_filter_csv_colours_and_compare(tmp_path):
    lab = Lab(tmp_path)
    fake_run(tmp_path, "20250101-000000-a")
    fake_run(tmp_path, "20250101-000001-b", method="lora", best=0.8)
    other = fake_run(tmp_path, "20250101-000002-c", method="lora", best=0.6)  # another task, same method
    summary = RunDir(other).summary()
    RunDir(other).update_summary(config=replace(summary.config, task="sst2", lr=0.01), peak_memory_mb=900.0)
    everything = lab.tradeoff(ALL_RUNS)
    shapes = {t.name: t.marker.symbol[0] for t in everything.data}
    assert set(shapes) == {"lora · tiny-bert / rotten-tomatoes", "lora · tiny-bert / sst2",
                           "surm-circulant · tiny-bert / rotten-tomatoes"}  # fmt: skip
    assert shapes["lora · tiny-bert / sst2"] != shapes["lora · tiny-bert / rotten-tomatoes"]  # tasks told apart
    grey = [t.name for t in everything.data if DOMINATED in list(t.marker.color)]
    assert grey == ["surm-circulant · tiny-bert / rotten-tomatoes"]  # 0.6 on sst2 is compared within sst2 only
    memory = lab.tradeoff(ALL_RUNS, View(x="peak memory (MB)", y="metric"))
    assert [list(t.x) for t in memory.data] == [[900.0]]  # only runs that recorded the axis
    assert memory.layout.xaxis.title.text == "peak memory (MB)"
    only = lab.tradeoff(ALL_RUNS, View(filter="circulant"))
    assert [t.name for t in only.data] == ["surm-circulant"]
    csv = pd.read_csv(lab.tradeoff_csv("tiny-bert / rotten-tomatoes"))
    assert sorted(csv["run"]) == ["20250101-000000-a", "20250101-000001-b"] and "examples_per_s" in csv
    diff = lab.settings_diff(["20250101-000001-b", other.name])
    assert set(diff["option"]) == {"task", "lr"} and list(diff.columns) == ["option", "20250101-000001-b", other.name]
    raw = lab.compare([other.name])
    smooth = lab.compare([other.name], smoothing=0.5)
    assert list(raw.data[0].y) == list(smooth.data[0].y) == [0.7]  # one loss point: bias-corrected, unchanged
    assert smooth_ema([1.0, 0.0], 0.5) == [1.0, 1 / 3]  # (0.5 * 0.5) / (1 - 0.25), by hand


def test_metrics_cache_reads_only_appended_lines(tmp_path):
    cache = MetricsCache()
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')  # the second line is still being written
    assert [r["step"] for r in cache.rows(tmp_path)] == [1]
    with path.open("a") as f:
        f.write('ss": 0.5}\n{"step": 2, "epoch": 1, "eval_accuracy": 0.75}\n')
    rows = cache.rows(tmp_path)
    assert [r.get("loss") for r in rows] == [1.0, 0.5, None]
    p = progress(RunSummary(status=RunStatus.RUNNING, total_steps=8, metric="accuracy"), rows)
    assert (p.step, p.loss, p.metric_value, p.fraction) == (2, 0.5, 0.75, 0.25)
    path.write_text('{"step": 9, "loss": 2.0}\n')  # replaced: read from the start again
    assert [r["step"] for r in cache.rows(tmp_path)] == [9]


def test_status_block_shows_progress_and_reasons(tmp_path):
    lab = Lab(tmp_path)
    run = fake_run(tmp_path, "20250101-000000-x", status="stopped")
    nan = "loss became nan at step 3"
    record = JobRecord("id", TrainConfig(**TINY), "x", 0.0, status=RunStatus.FAILED, run_dir=str(run), reason=nan)
    html, _, _ = lab.live(record)
    assert 'data-status="failed"' in html and "loss became nan at step 3" in html
    stopped = status_html("stopped", "x", JobRecord("id", TrainConfig(**TINY), "x", 0.0, run_dir=str(run)), None)
    assert "adapter saved" in stopped
    assert "<script>" not in status_html("failed", "<script>", None, None)


def tiny_hf_folder(path: Path) -> Path:
    """A BERT the size of tiny-bert saved as a local Hugging Face folder (config, vocabulary, weights)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(
        vocab_size=7, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def test_a_local_backbone_folder_is_fenced_by_the_data_roots(tmp_path):
    """hf:/any/folder typed in the page would make the server read that folder as a model: outside the
    data roots (directly, by a link, by .., or through timm's local-dir:) it is refused before any read,
    in the readout and at Start; inside them it is read."""
    outside = tiny_hf_folder(tmp_path / "elsewhere" / "model")
    allowed = tmp_path / "allowed"
    inside = tiny_hf_folder(allowed / "model")
    (allowed / "escape").symlink_to(outside.parent)
    lab = Lab(tmp_path / "runs", data_roots=[allowed])
    for backbone in (
        f"hf:{outside}",
        str(outside),
        f"hf:{allowed}/escape/model",
        f"hf:{allowed}/../elsewhere/model",
        f"timm:local-dir:{outside}",
        "hf:/etc",
    ):
        readout = lab.plan(Form(**{**FORM_SMALL, "backbone": backbone}))
        assert not readout.ok and "data roots" in readout.message and "--data-root" in readout.message, backbone
        message = lab.start(Form(**{**FORM_SMALL, "backbone": backbone}))
        assert message.startswith("**Cannot start:** backbone ") and "data roots" in message, message
    assert lab.jobs.snapshot().current is None and not lab.jobs.snapshot().pending
    readout = lab.plan(Form(**{**FORM_SMALL, "backbone": f"hf:{inside}"}))
    assert readout.ok and readout.trainable, readout.message
    assert lab.plan(Form(**{**FORM_SMALL, "backbone": "tiny-bert"})).ok  # named backbones are not paths
    assert Lab(tmp_path / "runs2", data_roots=[tmp_path]).plan(Form(**{**FORM_SMALL, "backbone": f"hf:{outside}"})).ok


def test_download_delete_and_compare(tmp_path):
    lab = Lab(tmp_path)
    run = fake_run(tmp_path, "20250101-000000-a")
    archive, message = lab.adapter_zip(run.name)  # a planted folder without config.json: nothing to export
    assert archive is None and message.startswith(f"Could not export {run.name}")
    assert lab.adapter_zip("../etc") == (None, "Choose a run.")
    assert "no saved adapter" in lab.adapter_zip(fake_run(tmp_path, "20250101-000001-b", adapter=False).name)[1]
    figure = lab.compare([run.name, "not-a-run"])
    assert {t.name for t in figure.data} == {run.name}
    assert lab.delete("..") == "Choose a run to delete."
    assert "Confirm delete" in lab.delete(run.name) and run.exists()  # one click deletes nothing
    assert "Confirm delete" in lab.delete(run.name, confirmed="20250101-000001-b") and run.exists()
    assert lab.delete(run.name, confirmed=run.name) == f"Deleted {run.name}." and not run.exists()
    assert list(display_table(list_runs(tmp_path))["status"]) == ["completed"]


def test_download_never_follows_a_link_out_of_the_run(tmp_path):
    """A planted run folder cannot make the app serve another file: a link inside adapter/ (at any
    depth), a symlinked adapter/, a symlinked run folder or a FIFO are refused, naming the entry."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP SECRET")
    runs = tmp_path / "runs"
    lab = Lab(runs)

    nested = fake_run(runs, "20250101-000000-nested")  # an honest adapter with a subfolder is served whole
    weights = RunDir(nested).final_dir.name  # final/ (adapter/ in older run folders)
    (nested / weights / "extra").mkdir()
    (nested / weights / "extra" / "notes.txt").write_text("fine")
    archive, message = lab.adapter_zip(nested.name)  # no config.json: no export (but no refusal either)
    assert archive is None and message.startswith("Could not export"), message

    planted = {}
    run = fake_run(runs, "20250101-000001-link")
    (run / weights / "passwd").symlink_to(secret)
    planted[run.name] = f"{run.name}/{weights}/passwd is a symbolic link"
    run = fake_run(runs, "20250101-000002-deep")
    (run / weights / "sub").mkdir()
    (run / weights / "sub" / "x").symlink_to(secret)
    planted[run.name] = f"{run.name}/{weights}/sub/x is a symbolic link"
    run = fake_run(runs, "20250101-000003-dirlink")
    (run / weights / "sub").symlink_to(secret.parent)
    planted[run.name] = f"{run.name}/{weights}/sub is a symbolic link"
    run = fake_run(runs, "20250101-000004-adapterlink", adapter=False)
    (run / "adapter").symlink_to(secret.parent)
    planted[run.name] = f"{run.name}/adapter is a symbolic link"
    (runs / "20250101-000005-runlink").symlink_to(nested)
    planted["20250101-000005-runlink"] = "20250101-000005-runlink is a symbolic link"
    run = fake_run(runs, "20250101-000006-fifo")
    os.mkfifo(run / weights / "pipe")  # reading it would block the server
    planted[run.name] = f"{run.name}/{weights}/pipe is not a regular file"

    for name, why in planted.items():
        archive, message = lab.adapter_zip(name)
        assert archive is None and message.startswith("Not served: ") and why in message, (name, message)
    served = [zipfile.ZipFile(p).read(n) for p in lab.downloads.glob("*.zip") for n in zipfile.ZipFile(p).namelist()]
    assert b"TOP SECRET" not in served and not served  # nothing ever left


def test_the_page_builds_and_launch_defaults_are_safe(tmp_path, capsys):
    from surmlab.app import DEFAULT_HOST, build_app
    from surmlab.app import main as app_main

    (tmp_path / "notes.txt").write_text("a file")
    assert app_main(["--runs-dir", str(tmp_path / "notes.txt")]) == 2  # before anything is launched
    assert "a folder was expected, but it is a file" in capsys.readouterr().out

    demo = build_app(tmp_path, watch=False)
    assert demo.lab.runs_dir == tmp_path.resolve()
    assert DEFAULT_HOST == "127.0.0.1" and _is_loopback("127.0.0.1") and not _is_loopback("0.0.0.0")
    assert parse_auth("ann:secret") == [("ann", "secret")] and parse_auth(None) is None
    (tmp_path / "users").write_text("ann:one\nbob:two\n")
    assert parse_auth(str(tmp_path / "users")) == [("ann", "one"), ("bob", "two")]
    with pytest.raises(ValueError):
        parse_auth("no-password")


def test_glue_tasks_offered_offline_train_from_the_app(tmp_path):
    """The task list marks what needs the hub; a shipped GLUE task trains through the app's job queue
    with nothing but the clone (no data_dir, no hub)."""
    from surmlab.app.ui import task_choices

    choices = dict((value, label) for label, value in task_choices())
    for name in ("glue/rte", "glue/mrpc", "glue/cola", "glue/sst2", "glue/stsb", "glue/wnli"):
        assert choices[name] == name  # runs here
    assert choices["glue/qnli"] == "glue/qnli (needs the hub)" and choices["cifar10"] == "cifar10 (needs the hub)"
    jobs = JobManager(tmp_path)
    job = jobs.submit(TrainConfig(**{**SMALL, "task": "glue/rte", "max_steps": 2}))
    wait_for(lambda: (jobs.poll(), jobs.find(job.id).status in ("completed", "failed"))[1], what="the GLUE job")
    done = jobs.find(job.id)
    assert done.status == "completed", done.reason
    summary = RunDir(done.run_dir).summary()
    assert "GLUE TSV files" in summary.task_description and summary.train_examples == 64


FORM_SMALL = {**TINY, "max_train": 16, "max_eval": 8, "max_length": 16, "batch_size": 8}


def test_the_page_reads_data_only_under_the_data_roots(tmp_path, monkeypatch):
    """csv:/etc/passwd, folder:/ or a link out of the allowed folder: refused before any job exists."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "reviews.csv").write_text("text,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(20)))
    (allowed / "escape").symlink_to("/etc")
    lab = Lab(tmp_path / "runs", data_roots=[allowed])
    for task in ("csv:/etc/passwd", "folder:/", f"csv:{allowed}/escape/passwd", f"csv:{allowed}/../x.csv"):
        message = lab.start(Form(**{**FORM_SMALL, "task": task}))
        assert message.startswith("**Cannot start:** csv:" if task.startswith("csv") else "**Cannot start:** folder:")
        assert "--data-root" in message and "root:" not in message  # the file's content is never shown
    assert lab.jobs.snapshot().current is None and not lab.jobs.snapshot().pending
    message = lab.start(Form(**{**FORM_SMALL, "task": f"csv:{allowed / 'reviews.csv'}"}))
    assert message.startswith("Started"), message
    wait_for(lambda: (lab.jobs.poll(), lab.jobs.snapshot().current is None)[1], what="the allowed job to end")
    monkeypatch.chdir(tmp_path)
    assert Lab(tmp_path / "runs2").data_roots == [tmp_path.resolve(), (tmp_path / "runs2").resolve()]


def test_a_study_runs_in_the_background_with_progress_table_and_plot(tmp_path):
    """Two methods x one budget x two seeds of four steps: progress counts the cells, the table's mean
    is the mean of the cells' final metrics (numpy, by hand), the plot has error bars."""
    studies = Studies(tmp_path)
    bad = spec_from_form("s", "tiny-bert", "rotten-tomatoes", ["lora", "surm-circulant"], "10", "0", "lora", 4)
    assert "infeasible" in studies.start(bad)  # checked before anything starts
    with pytest.raises(ValueError, match="seeds must be whole numbers"):
        spec_from_form("s", "tiny-bert", "rotten-tomatoes", ["lora"], "1k", "0, one", "lora", 4)
    spec = spec_from_form("s", "tiny-bert", "rotten-tomatoes", ["lora", "surm-circulant"], "1k", "0, 1", "lora", 4)
    spec = replace(spec, train={**spec.train, "max_train": 64, "max_eval": 32, "max_length": 32, "batch_size": 16})
    assert studies.start(spec, workers=1).startswith("Started study s: 4 cells")
    assert "still running" in studies.start(spec)
    first = studies.progress("s")
    assert first.total == 4 and first.alive and first.done + first.running + first.left + first.failed == 4
    wait_for(lambda: not studies.alive(), timeout=300, what="the study to finish")
    done = studies.progress("s")
    assert (done.done, done.failed, done.running, done.left, done.alive) == (4, 0, 0, 0, False)
    assert "4 done" in done.text() and "finished" in done.text()
    frame, figure = studies.results("s")
    finals = {}
    for run in (tmp_path / "studies" / "s" / "runs").iterdir():
        summary = RunDir(run).summary()
        finals.setdefault(summary.method, []).append(summary.final)
    for method, values in finals.items():
        row = frame[frame["method"] == method].iloc[0]
        assert row["seeds"] == 2 and row["mean"] == pytest.approx(np.mean(values), abs=1e-4)
    assert "vs_baseline" in frame and frame[frame["method"] == "lora"]["vs_baseline"].isna().all()
    assert any(t.error_y is not None and t.error_y.array is not None for t in figure.data)
    assert studies.stop() == "No study is running."


def test_a_notebook_runs_through_papermill_with_progress_and_figures(tmp_path):
    """The tour notebook at its smoke profile (3 steps on tiny-bert): a bad parameter is refused before a
    kernel starts; the run's cells are counted off papermill's output and its plotly figures come back."""
    experiments = Experiments(tmp_path)
    assert "Cannot start" in experiments.start("tour", "smoke", "no_such_knob = 1")
    assert "Cannot start" in experiments.start("tour", "smoke", "max_steps")  # not key = value
    assert experiments.start("tour", "smoke", "max_steps = 2").startswith("Started tour")
    wait_for(lambda: not experiments.alive(), timeout=400, what="the notebook to finish")
    p = experiments.progress()
    assert p.status == "ok", p.error
    nb = json.loads((tmp_path / "experiments" / "smoke" / "tour" / "tour.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert p.cells == p.executed == len(code) and p.figures  # every code cell ran; figures read back
    assert "max_steps = 2" in "".join("".join(c["source"]) for c in code)  # the parameter reached the kernel
    assert parse_params("a = 1\nb = 'x'\n\nc = [1, 2]") == {"a": 1, "b": "x", "c": [1, 2]}


def test_a_data_files_columns_are_checked_in_the_readout_before_start(tmp_path):
    """A review,sentiment CSV: the default columns are refused in the readout and at Start, naming the
    file and its columns; the right columns pass; an upload folder is readable whatever the roots."""
    lab = Lab(tmp_path, data_roots=[tmp_path / "elsewhere"])
    uploads = tmp_path / ".surmlab-app" / "uploads"
    uploads.mkdir(parents=True)
    rows = "".join(f"text number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    (uploads / "r.csv").write_text("review,sentiment\n" + rows)
    form = Form(**{**TINY, "task": f"csv:{uploads / 'r.csv'}"})
    refused = lab.plan(form)
    assert not refused.ok and "column 'text' not found in r.csv" in refused.message and "review" in refused.message
    assert "column 'text' not found" in lab.start(form) and lab.jobs.snapshot().current is None
    right = lab.plan(replace(form, text_column="review", label_column="sentiment"))
    assert right.ok, right.message
    missing = lab.plan(replace(form, task=f"csv:{uploads / 'gone.csv'}"))
    assert not missing.ok and "gone.csv" in missing.message
    lab.jobs.close()
