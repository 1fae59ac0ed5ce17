"""Run directories: atomic files, crash-tolerant metrics, the run table."""

import json
from pathlib import Path

import pytest

from surmlab.runs import RunDir, atomic_write, list_runs, write_json


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"status": "running"})

    def broken(tmp):
        Path(tmp).write_text('{"status": "comp')  # half written, then the process dies
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_run_directories_are_unique_and_metrics_survive_a_torn_line(tmp_path):
    a, b = RunDir.create(tmp_path, "lora/minilm"), RunDir.create(tmp_path, "lora/minilm")
    assert a.path != b.path and a.path.parent == tmp_path and "/" not in a.path.name
    a.log({"step": 1, "loss": 0.5})
    a.log({"step": 2, "loss": 0.4})
    with a.metrics_file.open("a") as f:
        f.write('{"step": 3, "lo')  # a crash in the middle of a line
    assert [r["step"] for r in a.metrics()] == [1, 2]


def test_summary_rejects_unknown_status(tmp_path):
    run = RunDir.create(tmp_path, "x")
    run.update_summary(status="running")
    with pytest.raises(ValueError, match="unknown run status 'done'; known: running, completed, stopped, failed"):
        run.update_summary(status="done")
    assert run.summary()["status"] == "running"


def test_list_runs_builds_one_row_per_run(tmp_path):
    for i, (status, acc) in enumerate([("completed", 0.8), ("failed", None)]):
        run = RunDir(tmp_path / f"run{i}")
        run.path.mkdir()
        run.update_summary(
            status=status,
            config={"backbone": "minilm-l6", "task": "rotten-tomatoes", "method": "lora", "mode": "lora"},
            metric="accuracy",
            best_metrics={"accuracy": acc} if acc else None,
            trainable_params=1000 + i,
            reason=None if acc else "loss became nan at step 3",
        )
    (tmp_path / "not-a-run").mkdir()
    table = list_runs(tmp_path)
    assert len(table) == 2
    row = table.set_index("run").loc["run0"]
    assert row["status"] == "completed" and row["best"] == 0.8 and row["trainable_params"] == 1000
    assert table.set_index("run").loc["run1"]["reason"] == "loss became nan at step 3"
    assert list_runs(tmp_path / "missing").empty
