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
    assert run.summary().status == "running"


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


def test_summary_is_a_typed_record_that_reads_older_and_newer_files(tmp_path):
    run = RunDir.create(tmp_path, "x")
    # an older file lacks most keys; a newer one has a key this version does not know
    write_json(run.summary_file, {"status": "completed", "metric": "accuracy", "final_metrics": {"accuracy": 0.7},
                                  "from_the_future": [1, 2]})  # fmt: skip
    summary = run.summary()
    assert summary.status == "completed" and summary.best is None and summary.final == 0.7
    assert summary.trainable_params is None and summary.config == {} and summary.run_dir == str(run.path)
    updated = run.update_summary(best_metrics={"accuracy": 0.8}, trainable_params=12)
    assert updated.best == 0.8 and updated.final == 0.7 and updated.trainable_params == 12
    saved = json.loads(run.summary_file.read_text())
    assert saved["from_the_future"] == [1, 2] and "run_dir" not in saved and "extra" not in saved
    with pytest.raises(ValueError, match=r"unknown summary fields \['best_params'\]"):
        run.update_summary(best_params=3)
    assert run.summary() == updated


def test_an_empty_run_folder_has_an_empty_summary(tmp_path):
    summary = RunDir(tmp_path).summary()
    assert summary.status is None and not summary.finished and summary.best is None
