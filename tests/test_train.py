"""End-to-end training: real offline backbone and data, GLUE TSVs, hub stand-ins, two processes,
graceful stop and resume, failures recorded, bad input rejected before any run directory exists."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from surmlab.cli import main as cli
from surmlab.data import load_task, majority_baseline
from surmlab.predict import predict
from surmlab.runs import RunDir, list_runs
from surmlab.train import TrainConfig, TrainingFailed, TrainState, make_schedule, train

GLUE = Path(__file__).resolve().parents[1] / "data" / "glue"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _two_threads():
    """The suite runs single-threaded (conftest); real training is faster on both cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def small(**overrides) -> TrainConfig:
    base = {"backbone": "tiny-bert", "task": "rotten-tomatoes", "method": "lora", "budget": "2k"}
    return TrainConfig(**{**base, "max_train": 256, "max_eval": 64, "max_length": 32, **overrides})


# -- the acceptance runs ---------------------------------------------------------------------------------

RT = {"backbone": "minilm-l6", "task": "rotten-tomatoes", "budget": "50k", "epochs": 1}
RT_DATA = {"max_train": 2000, "max_eval": 600, "max_length": 64, "batch_size": 32}


@pytest.mark.parametrize("method", ["surm-circulant", "lora"])
def test_minilm_on_rotten_tomatoes_beats_the_majority_class(method, tmp_path):
    summary = train(TrainConfig(**RT, **RT_DATA, method=method, runs_dir=str(tmp_path)), progress=False)
    task = load_task("rotten-tomatoes", max_train=RT_DATA["max_train"], max_eval=RT_DATA["max_eval"])
    majority = majority_baseline(task)
    accuracy = summary.final_metrics["accuracy"]
    assert accuracy > majority + 0.12, f"{method}: accuracy {accuracy:.3f} vs majority {majority:.3f}"
    # the summary records what the issue asks for
    assert summary.status == "completed" and summary.backbone_pretrained is True
    assert summary.method_params <= 50_000 and summary.trainable_params == summary.method_params + 770
    assert summary.total_params > 22_000_000
    for key in (
        "wall_time_s",
        "peak_memory_mb",
        "versions",
        "git_commit",
        "device",
        "best_metrics",
        "task_description",
    ):
        assert getattr(summary, key) is not None, key
    assert summary.versions["torch"] == metadata.version("torch")
    run = RunDir(summary.run_dir)
    assert json.loads(run.summary_file.read_text())["status"] == "completed"
    steps = [r for r in run.metrics() if "loss" in r]
    assert steps and all({"loss", "lr", "examples_per_s", "peak_memory_mb"} <= set(r) for r in steps)
    assert (run.adapter_dir / "surm_model.safetensors").exists()  # lora runs in SURM's wrapper too
    assert (run.best_dir / "trainable.safetensors").exists()


# -- GLUE from the official TSV files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "folder", "metric", "extra"),
    [
        ("glue/rte", "RTE", "accuracy", set()),
        ("glue/stsb", "STS-B", "spearman", {"pearson"}),
        ("glue/cola", "CoLA", "mcc", {"accuracy"}),
    ],
)
def test_glue_runs_end_to_end_with_its_metric(task, folder, metric, extra, tmp_path):
    code = cli(
        ["train", "--backbone", "minilm-l6", "--task", task, "--data-dir", str(GLUE / folder)]
        + ["--method", "surm-circulant", "--budget", "20k", "--max-train", "64", "--max-eval", "64"]
        + ["--max-length", "48", "--batch-size", "16", "--runs-dir", str(tmp_path)]
    )
    assert code == 0
    (summary_file,) = tmp_path.glob("*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["metric"] == metric
    assert {metric} | extra <= set(summary["final_metrics"])
    assert np.isfinite(summary["final_metrics"][metric])


# -- the hub code path on local stand-ins ----------------------------------------------------------------------


def test_hub_image_task_on_a_saved_stand_in(tmp_path):
    """cifar10's hub schema (img, label) saved to disk, trained with a config-built ViT."""
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})

    def split(n):
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        return datasets.Dataset.from_dict({"img": images, "label": [i % 10 for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": split(40), "test": split(20)}).save_to_disk(tmp_path / "cifar10")
    summary = train(
        TrainConfig(
            backbone="tiny-vit",
            task="cifar10",
            data_dir=str(tmp_path / "cifar10"),
            method="surm-toeplitz",
            budget="5k",
            batch_size=8,
            runs_dir=str(tmp_path / "runs"),
        ),
        progress=False,
    )
    assert summary.status == "completed" and summary.eval_examples == 20
    assert summary.metric == "accuracy" and 0 <= summary.final <= 1


# -- two processes -------------------------------------------------------------------------------------------


def test_two_cpu_processes_train_one_run_with_synchronised_gradients(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    cmd += ["-m", "surmlab", "train", "--cpu", "--backbone", "tiny-bert", "--method", "surm-circulant"]
    cmd += ["--budget", "2k", "--max-train", "128", "--max-eval", "32", "--batch-size", "8", "--lr", "0.05"]
    cmd += ["--runs-dir", str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1, runs
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    # 128 examples, 8 per process and step: 8 steps, each seeing 16 examples
    assert summary["step"] == 8
    a, b = summary["param_checksums"]
    assert a == b  # the processes saw different batches: equal weights mean averaged gradients


# -- stop, resume, failure ----------------------------------------------------------------------------------


def test_stop_file_then_resume_continues_from_the_saved_step(tmp_path):
    cmd = [sys.executable, "-m", "surmlab", "train", "--backbone", "tiny-bert", "--method", "surm-circulant"]
    cmd += ["--budget", "2k", "--max-train", "640", "--max-eval", "32", "--batch-size", "8"]
    cmd += ["--log-every", "1", "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("*/metrics.jsonl")) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    (run_path,) = tmp_path.iterdir()
    run = RunDir(run_path)
    run.request_stop()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    stopped = run.summary()
    assert stopped.status == "stopped" and stopped.reason == "stop requested"
    assert 0 < stopped.step < 80
    evals = [r for r in run.metrics() if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [stopped.step]  # one last evaluation at the stop: a result to plot
    assert stopped.best == stopped.final_metrics["accuracy"] == evals[0]["eval_accuracy"]
    assert (run.adapter_dir / "surm_model.safetensors").exists()  # a usable adapter was saved
    assert run.stop_file.exists()  # resuming removes it: the stop was asked of the earlier trainer

    summary = train(TrainConfig(), resume=run.path, progress=False)
    assert summary.status == "completed" and summary.step == 80
    steps = [r["step"] for r in run.metrics() if "loss" in r]
    assert steps == list(range(1, 81)), steps  # continued from the saved step, nothing repeated
    assert len(list(tmp_path.iterdir())) == 1


class Payload:
    """What a crafted checkpoint would carry: unpickling it runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_code_from_a_run_folder(tmp_path, capsys):
    summary = train(small(runs_dir=str(tmp_path / "runs"), max_steps=2), progress=False)
    run = RunDir(summary.run_dir)
    marker = tmp_path / "code-ran"
    torch.save({"state": Payload(marker)}, run.latest_checkpoint() / "optimizer.pt")
    with pytest.raises(ValueError, match=r"optimizer\.pt holds more than tensors and plain values.*refused"):
        train(TrainConfig(), resume=run.path, progress=False)
    assert not marker.exists()
    dead_trainer(run)
    assert cli(["train", "--resume", str(run.path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line naming the file, no traceback
    assert "optimizer.pt holds more than tensors" in line and not marker.exists()


RESUMABLE = ["--backbone", "tiny-bert", "--method", "lora", "--budget", "2k", "--max-train", "480"]
RESUMABLE += ["--max-eval", "32", "--max-length", "32", "--batch-size", "8", "--log-every", "1"]
RESUMABLE += ["--checkpoint-every", "4", "--epochs", "2"]  # 120 steps over two epochs; tiny-bert has dropout


def logged(run: RunDir) -> list[tuple]:
    """What a run logged, without its timings: (step, loss, lr) per step and the evaluations."""
    rows = []
    for r in run.metrics():
        if "loss" in r:
            rows.append((r["step"], r["loss"], r["lr"]))
        else:
            rows.append(tuple(sorted((k, v) for k, v in r.items())))
    return rows


def test_kill_9_then_resume_logs_what_the_uninterrupted_run_logs(tmp_path):
    """SIGKILL at some step: the run shows as interrupted, keeps its last checkpoint (every 4 steps), and
    --resume continues it so that every logged loss, learning rate and evaluation equals the
    uninterrupted run's, dropout and data order included."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    whole = subprocess.run([sys.executable, "-m", "surmlab", "train", *RESUMABLE, "--runs-dir", str(tmp_path / "a")],
                           env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]
    (uninterrupted,) = (RunDir(p) for p in (tmp_path / "a").iterdir())

    cmd = [sys.executable, "-m", "surmlab", "train", *RESUMABLE, "--runs-dir", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "b").glob("*/metrics.jsonl"))
        if runs and sum(1 for _ in runs[0].open()) >= 70:  # past the first epoch's evaluation
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()
    proc.wait()
    (run,) = (RunDir(p) for p in (tmp_path / "b").iterdir())
    assert run.summary().status == "running"  # the kill left no outcome...
    row = list_runs(tmp_path / "b").iloc[0]
    assert row["status"] == "interrupted" and "--resume" in row["reason"]  # ...and the table says why
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None and read_step(checkpoint) % 4 == 0 and read_step(checkpoint) > 60
    trained_before = json.loads((checkpoint / "state.json").read_text())["elapsed"]
    assert trained_before > 0  # each checkpoint knows how long the run had trained

    # resumed in a process like the first (same thread count: reductions then add up in the same order)
    resumed = subprocess.run([sys.executable, "-m", "surmlab", "train", "--resume", str(run.path)],
                             env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = run.summary()
    assert summary.status == "completed" and summary.step == 120
    assert summary.wall_time_s > trained_before  # both processes' time, not the resumed one's alone
    assert logged(run) == logged(uninterrupted)
    assert summary.final_metrics == uninterrupted.summary().final_metrics


def read_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "state.json").read_text())["step"]


def test_resume_options_apply_or_are_refused_by_name(tmp_path, capsys):
    summary = train(small(runs_dir=str(tmp_path), max_steps=4, log_every=1), progress=False)
    run = RunDir(summary.run_dir)
    longer = train(TrainConfig(), resume=run.path, progress=False, overrides={"max_steps": 8})
    assert longer.step == 8 and [r["step"] for r in run.metrics() if "loss" in r] == list(range(1, 9))
    assert run.config().train.max_steps == 8
    assert cli(["train", "--resume", str(run.path), "--lr", "0.01"]) == 2
    assert "cannot change lr when resuming" in capsys.readouterr().err
    assert cli(["train", "--resume", str(run.path), "--max-steps", "10", "--epochs", "2"]) == 0  # 8 per epoch
    assert RunDir(run.path).summary().step == 10
    run.update_summary(status="running", pid=os.getpid())  # as if this process were training it
    run.mark_alive()
    with pytest.raises(ValueError, match=r"is being trained by process \d+; stop it before resuming"):
        train(TrainConfig(), resume=run.path, progress=False)


def test_checkpoints_replace_each_other_atomically(tmp_path):
    run = RunDir(tmp_path)
    run.write_checkpoint(4, lambda folder: (folder / "state.json").write_text('{"step": 4}'))

    def fails(folder):
        (folder / "state.json").write_text('{"step": 8}')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run.write_checkpoint(8, fails)
    assert read_step(run.latest_checkpoint()) == 4  # the half-written one never became the latest
    run.write_checkpoint(12, lambda folder: (folder / "state.json").write_text('{"step": 12}'))
    assert read_step(run.latest_checkpoint()) == 12
    assert sorted(p.name for p in run.checkpoint_dir.iterdir() if not p.name.startswith(".")) == [
        "latest.json",
        "step-000000012",
    ]


@pytest.mark.parametrize(("eval_every", "steps"), [(0, [4, 8, 10]), (3, [3, 6, 9, 10])])
def test_evaluations_come_at_each_epoch_end_or_every_eval_every_steps_and_at_the_end(tmp_path, eval_every, steps):
    """64 examples in batches of 16 are 4 steps an epoch; 10 steps end inside the third epoch."""
    summary = train(
        small(runs_dir=str(tmp_path), max_train=64, batch_size=16, epochs=3, max_steps=10, eval_every=eval_every),
        progress=False,
    )
    evaluated = [row["step"] for row in RunDir(summary.run_dir).metrics() if "eval_accuracy" in row]
    assert evaluated == steps


def test_nan_loss_marks_the_run_failed(tmp_path):
    with pytest.raises(TrainingFailed, match=r"loss (became (nan|inf)|diverged: \S+) at step \d+") as info:
        train(small(method="full", budget=None, lr=1e30, max_steps=5, runs_dir=str(tmp_path)), progress=False)
    (run_path,) = tmp_path.iterdir()
    summary = RunDir(run_path).summary()
    assert summary.status == "failed" and summary.reason == str(info.value)
    assert list_runs(tmp_path).loc[0, "status"] == "failed"


def test_an_exploding_loss_is_a_failed_run_not_a_result(tmp_path):
    config = small(method="surm-circulant", lr=1e6, head_lr=1e6, max_steps=20, runs_dir=str(tmp_path))
    with pytest.raises(TrainingFailed, match=r"loss diverged: \S+ at step \d+, over 100x the first step's"):
        train(config, progress=False)
    (run_path,) = tmp_path.iterdir()
    assert RunDir(run_path).summary().status == "failed"


def test_weights_that_explode_end_the_run_even_while_the_loss_looks_finite(tmp_path):
    """At lr 1e6 the loss of this run stays finite and under the divergence bar (it completed, best
    accuracy 0.44, before the guard) while the update's weights reach millions."""
    config = small(method="surm-circulant", lr=1e6, max_steps=16, runs_dir=str(tmp_path))
    with pytest.raises(TrainingFailed, match=r"the trained weights exploded: root mean square \S+ at step \d+"):
        train(config, progress=False)
    (run_path,) = tmp_path.iterdir()
    summary = RunDir(run_path).summary()
    assert summary.status == "failed" and "exploded" in summary.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", -1.0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("head_lr", -1.0),
        ("warmup_ratio", -5.0),
        ("warmup_ratio", 1.0),
        ("max_length", 0),
        ("weight_decay", -0.1),
        ("max_grad_norm", float("inf")),
        ("train_fraction", 1.5),
        ("max_train", 0),
        ("shots_per_class", 0),
        ("batch_size", 2.5),
        ("alpha", float("nan")),
        ("alpha", "big"),
        ("eval_every", -1),
    ],
)
def test_values_that_make_no_sense_are_refused(field, value, tmp_path):
    """One validation in TrainConfig serves the Python API, the CLI and the app (which builds one)."""
    with pytest.raises(ValueError, match=rf"^{field} must be .*got {re.escape(repr(value))}$"):
        small(**{field: value})
    if field in ("lr", "head_lr", "warmup_ratio", "max_length") and math.isfinite(value):  # the CLI: exit code 2
        flag = "--" + field.replace("_", "-")
        code = cli(["train", "--backbone", "tiny-bert", flag, str(value), "--runs-dir", str(tmp_path)])
        assert code == 2 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone": "no-such-model"}, "no-such-model"),
        ({"task": "no-such-task"}, "unknown task 'no-such-task'"),
        ({"method": "no-such-method"}, "unknown method 'no-such-method'"),
        ({"budget": "10"}, "a budget of 10 is infeasible for lowrank"),
        ({"task": "csv:{csv}", "text_column": "review"}, "review"),
    ],
)
def test_bad_input_is_rejected_before_a_run_directory_exists(overrides, message, tmp_path, capsys):
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngood,1\nbad,0\nfine,1\nmeh,0\n")
    overrides = {k: v.format(csv=csv) if isinstance(v, str) else v for k, v in overrides.items()}
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match=message):
        train(small(runs_dir=str(runs), **overrides), progress=False)
    assert not runs.exists() or not any(runs.iterdir())


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    code = cli(["train", "--method", "nope", "--backbone", "tiny-bert", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("surmlab train: error: unknown method 'nope'")
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_predict_uses_the_trained_weights(tmp_path):
    """predict's scores are those of the trained model, rebuilt independently from the adapter file
    (head included) with ``surmlab.load_adapter``, and not those of the untrained model."""
    from surmlab import load_adapter
    from surmlab.data import make_collate
    from surmlab.models import load_backbone

    summary = train(small(runs_dir=str(tmp_path), max_steps=6, lr=0.05, head_lr=0.05), progress=False)
    texts = ["a fine film", "a dull film"]
    out = predict(summary.run_dir, texts)
    assert [item for item, _, _ in out] == texts
    assert all(label in ("fresh", "rotten") and 0.5 <= score <= 1 for _, label, score in out)

    def probabilities(model, backbone):
        task = load_task("rotten-tomatoes", max_train=8, max_eval=8)
        batch = make_collate(task, backbone, 32)([{"text": t, "label": 0} for t in texts])
        batch.pop("labels")
        with torch.no_grad():
            return model.eval()(**batch).softmax(-1)

    torch.manual_seed(0)  # tiny-bert is random: the run's seed rebuilds its frozen weights
    backbone = load_backbone("tiny-bert", 2)
    untrained = probabilities(backbone.model, backbone)
    trained = probabilities(load_adapter(backbone.model, RunDir(summary.run_dir).adapter_dir), backbone)
    scores = torch.tensor([score for _, _, score in out])
    torch.testing.assert_close(scores, trained.max(-1).values, rtol=1e-5, atol=1e-6)
    assert (scores - untrained.max(-1).values).abs().max() > 1e-3


def test_cli_failures_are_one_line_with_the_reason(tmp_path, capsys):
    base = ["train", "--backbone", "tiny-bert", "--max-train", "64", "--max-eval", "16", "--max-length", "16"]
    base += ["--runs-dir", str(tmp_path)]
    assert cli([*base, "--hyper", "{block_size: 8}"]) == 2
    assert "--hyper '{block_size: 8}' is not JSON" in capsys.readouterr().err
    assert cli([*base, "--hyper", '{"block_size": 8}', "--budget", "2k"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    code = cli([*base, "--method", "full", "--lr", "1e30", "--max-steps", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [e for e in err.splitlines() if e.startswith("surmlab train")]
    assert re.match(r"surmlab train: training failed: loss (became (nan|inf)|diverged: \S+) at step \d+", line)
    assert cli(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "(failed): loss " in capsys.readouterr().out  # `surmlab runs` shows the reason


def test_a_corrupt_image_fails_the_run_naming_the_file(tmp_path):
    data_dir = tmp_path / "images"
    for c in ("cat", "dog"):
        (data_dir / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data_dir / c / f"{i}.png")
    (data_dir / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    config = TrainConfig(backbone="tiny-vit", task=f"folder:{data_dir}", method="linear-probe", batch_size=16,
                         max_steps=2, runs_dir=str(tmp_path / "runs"))  # fmt: skip
    with pytest.raises(Exception, match=r"broken\.jpg"):
        train(config, progress=False)
    (run_path,) = (tmp_path / "runs").iterdir()
    summary = RunDir(run_path).summary()
    assert summary.status == "failed" and "broken.jpg" in summary.reason


def test_train_state_reads_an_older_checkpoint_and_round_trips():
    """A checkpoint written before ``metrics_lines`` and ``first_loss`` existed, with its RNG scalars
    beside the loop state, still resumes: missing keys take defaults; metrics are then left as they are."""
    old = {"step": 8, "epoch": 1, "best": 0.5, "best_metrics": {"accuracy": 0.5}, "history": [], "rng": {}}
    state = TrainState.from_dict(old)
    assert state.step == 8 and state.epoch == 1 and state.metrics_lines is None and state.first_loss is None
    assert TrainState.from_dict(state.to_dict()) == state
    assert TrainState.from_dict(TrainState().to_dict()).metrics_lines == 0


@pytest.mark.parametrize(("schedule", "last"), [("cosine", 0.0003), ("linear", 1 / 90), ("constant", 1.0)])
def test_schedules_warm_up_linearly_then_take_their_shape(schedule, last):
    """transformers' schedules: 10 warm-up steps from 0 to the peak, then cosine, linear or constant."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_schedule(optimizer, small(schedule=schedule, warmup_ratio=0.1), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:11] == pytest.approx([i / 10 for i in range(11)])
    assert lrs[55] == pytest.approx(1.0 if schedule == "constant" else 0.5)
    assert lrs[-1] == pytest.approx(last, abs=1e-4)


def test_an_image_run_with_random_augmentations_resumes_exactly(tmp_path):
    """The augmentations a resumed image run draws are the uninterrupted run's: each is seeded by
    (seed, epoch, example), not drawn from a generator the data loader's prefetch has moved on."""
    data_dir = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (data_dir / c).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(data_dir / c / f"{i}.png")
    base = {"backbone": "tiny-vit", "task": f"folder:{data_dir}", "method": "lora", "budget": "1k", "batch_size": 4,
            "epochs": 3, "max_eval": 8, "log_every": 1, "schedule": "constant", "warmup_ratio": 0.0,
            "checkpoint_every": 0}  # fmt: skip

    whole = train(TrainConfig(**base, max_steps=12, runs_dir=str(tmp_path / "a")), progress=False)
    half = train(TrainConfig(**base, max_steps=5, runs_dir=str(tmp_path / "b")), progress=False)
    resumed = train(TrainConfig(), resume=half.run_dir, progress=False, overrides={"max_steps": 12})
    losses = [[(r["step"], r["loss"]) for r in RunDir(s.run_dir).metrics() if "loss" in r] for s in (whole, resumed)]
    assert [step for step, _ in losses[1]] == list(range(1, 13))
    assert losses[1] == losses[0]


# -- run folders: one trainer each, nothing lost or doubled, nothing reached outside ---------------------


def dead_trainer(run: RunDir) -> None:
    """Mark ``run`` as a run whose trainer died without recording an outcome (as kill -9 leaves it)."""
    run.update_summary(status="running", pid=2**22 + 1, host=None, heartbeat=0.0)


def test_two_resumes_of_one_run_at_once_train_it_once(tmp_path):
    """A second ``--resume`` while the first is still training is refused; the first goes on alone.

    The first trainer is given far more steps than it will run, and the second starts only once the first
    has logged a step of its own, so the two overlap on every machine (a race left to timing would let a
    fast first trainer finish before the second starts)."""
    summary = train(small(runs_dir=str(tmp_path), max_steps=2, log_every=1), progress=False)
    run = RunDir(summary.run_dir)
    dead_trainer(run)
    cmd = [sys.executable, "-m", "surmlab", "train", "--resume", str(run.path), "--max-steps", "100000",
           "--epochs", "20000"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "first.log"  # a file, not a pipe: a progress bar must never fill a buffer and block it
    with log.open("w") as err:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not any(r.get("step", 0) > 2 and "loss" in r for r in run.metrics()):
            assert first.poll() is None and time.monotonic() < deadline, "the first resume never trained"
            time.sleep(0.2)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert "is being trained by another process" in second.stderr.splitlines()[-1]
        run.stop_file.touch()
        assert first.wait(timeout=300) == 0, log.read_text()[-2000:]
    finally:
        first.kill()
    steps = [r["step"] for r in run.metrics() if "loss" in r]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 2, steps  # nothing lost, nothing twice
    assert run.summary().status == "stopped"


@pytest.mark.parametrize("pointer", [None, "step-000000099"])
def test_a_resume_without_a_usable_checkpoint_starts_over_and_its_log_with_it(tmp_path, pointer, caplog):
    """kill -9 before the first checkpoint (or a latest.json naming a missing folder) leaves a log but
    nothing to resume from: the run starts over at step 0 and logs each step once."""
    summary = train(small(runs_dir=str(tmp_path), max_steps=6, log_every=1), progress=False)
    run = RunDir(summary.run_dir)
    shutil.rmtree(run.checkpoint_dir)
    if pointer:
        run.checkpoint_dir.mkdir()
        (run.checkpoint_dir / "latest.json").write_text(json.dumps({"step": 99, "folder": pointer}))
    dead_trainer(run)
    resumed = train(TrainConfig(), resume=run.path, progress=False)
    assert resumed.status == "completed" and resumed.step == 6
    assert [r["step"] for r in run.metrics() if "loss" in r] == list(range(1, 7))
    assert "no usable checkpoint: it starts over at step 0" in caplog.text


def plant_link(run: RunDir, name: str, target: Path) -> None:
    path = run.path / name
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


@pytest.mark.parametrize("name", ["metrics.jsonl", "final", "adapter", "best", "summary.json"])
def test_a_resume_never_writes_through_a_link_in_the_run_folder(tmp_path, name):
    summary = train(small(runs_dir=str(tmp_path / "runs"), max_steps=2), progress=False)
    run = RunDir(summary.run_dir)
    if name == "adapter":  # a run folder of the older layout
        (run.path / "final").rename(run.path / "adapter")
    outside = tmp_path / "outside"
    if name in ("final", "adapter", "best"):
        outside.mkdir()
    else:
        outside.write_text("precious\n")
    plant_link(run, name, outside)
    with pytest.raises(ValueError, match=rf"{name} is a symbolic link; a run folder .* holds only its own files"):
        train(TrainConfig(), resume=run.path, progress=False, overrides={"max_steps": 4})
    assert (list(outside.iterdir()) == []) if outside.is_dir() else outside.read_text() == "precious\n"


@pytest.mark.parametrize("folder", ["../../other/checkpoint/step-000000002", "step-000000002/../../../other"])
def test_latest_json_cannot_point_outside_its_run(tmp_path, folder):
    """A crafted latest.json naming another run's checkpoint is refused, not loaded and marked completed."""
    mine = RunDir(train(small(runs_dir=str(tmp_path / "a"), max_steps=2), progress=False).run_dir)
    train(small(runs_dir=str(tmp_path / "b"), max_steps=2, seed=1), progress=False)
    (mine.checkpoint_dir / "latest.json").write_text(json.dumps({"step": 2, "folder": folder}))
    dead_trainer(mine)
    with pytest.raises(ValueError, match=r"names .*, not a checkpoint folder"):
        train(TrainConfig(), resume=mine.path, progress=False, overrides={"max_steps": 4})
    assert mine.summary().status == "running"  # nothing was recorded as completed


def test_a_corrupt_run_config_is_named_on_resume(tmp_path, capsys):
    run = RunDir(train(small(runs_dir=str(tmp_path), max_steps=2), progress=False).run_dir)
    run.config_file.write_text("{not json")
    assert cli(["train", "--resume", str(run.path)]) == 2
    assert f"{run.config_file} is not a run configuration" in capsys.readouterr().err
