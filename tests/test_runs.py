"""Run directories: atomic files, crash-tolerant metrics, the run table."""

import json
from pathlib import Path

import pytest

from surmlab.runs import RunConfig, RunDir, RunStatus, RunSummary, TaskInfo, atomic_write, list_runs, write_json
from surmlab.status import FINISHED, RECORDED
from surmlab.train_config import TrainConfig


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
            config=TrainConfig(backbone="minilm-l6", task="rotten-tomatoes", method="lora"),
            method="lora",
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
    assert (row["method"], row["backbone"], row["mode"]) == ("lora", "minilm-l6", "lora")
    assert table.set_index("run").loc["run1"]["reason"] == "loss became nan at step 3"
    assert list_runs(tmp_path / "missing").empty


def test_summary_is_a_typed_record_that_reads_older_and_newer_files(tmp_path):
    run = RunDir.create(tmp_path, "x")
    # an older file lacks most keys; a newer one has a key this version does not know
    write_json(run.summary_file, {"status": "completed", "metric": "accuracy", "final_metrics": {"accuracy": 0.7},
                                  "from_the_future": [1, 2]})  # fmt: skip
    summary = run.summary()
    assert summary.status == "completed" and summary.best is None and summary.final == 0.7
    assert summary.trainable_params is None and summary.config is None and summary.run_dir == str(run.path)
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


def test_a_summary_written_before_the_method_name_was_stored_reads_typed(tmp_path):
    """Older summaries held the description under "method" and the config as a plain object."""
    run = RunDir.create(tmp_path, "x")
    old = {"status": "completed", "method": "lora (rank=2) on query,value: 9,216 method + 770 head",
           "config": {"backbone": "tiny-bert", "task": "sst2", "method": "lora", "path": "dense"}}  # fmt: skip
    write_json(run.summary_file, old)
    summary = run.summary()
    assert summary.status is RunStatus.COMPLETED and summary.finished
    assert summary.method == "lora" and summary.method_description == old["method"]
    assert isinstance(summary.config, TrainConfig) and summary.config.product == "dense"  # "path" was renamed
    assert summary.method == "lora"  # the registry name, so a comparison with a method's name is not silently False
    rewritten = run.update_summary(reason="checked")
    saved = json.loads(run.summary_file.read_text())
    assert saved["method"] == "lora" and saved["method_description"] == old["method"]
    assert saved["config"]["product"] == "dense" and rewritten.config == summary.config


def test_run_config_carries_a_train_config(tmp_path):
    run = RunDir.create(tmp_path, "x")
    config = RunConfig(TrainConfig(method="lora", max_steps=8), TaskInfo("sst2", "text", 2))
    run.write_config(config)
    assert run.config() == config and run.config().train.max_steps == 8
    write_json(run.config_file, {"train": {"method": "lora", "epochs": 0}, "task": {}})
    with pytest.raises(ValueError, match="epochs must be a whole number of at least 1"):
        run.config()


def test_run_status_is_one_enum_with_its_sets_said_once():
    assert RunStatus("completed") is RunStatus.COMPLETED and RunStatus.FAILED == "failed"
    assert json.dumps({"s": RunStatus.STOPPED}) == '{"s": "stopped"}' and f"{RunStatus.QUEUED}" == "queued"
    assert {RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.CANCELLED} == FINISHED
    assert {RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED} == RECORDED
    assert [s for s in RunStatus if s.resumable] == [RunStatus.STOPPED, RunStatus.INTERRUPTED]
    assert [s for s in RunStatus if s.active] == [RunStatus.STARTING, RunStatus.RUNNING]
    assert RunSummary(status=RunStatus.STOPPED).finished and not RunSummary(status=RunStatus.RUNNING).finished
    with pytest.raises(ValueError, match="'done' is not a valid RunStatus"):
        RunSummary.from_dict({"status": "done"})
