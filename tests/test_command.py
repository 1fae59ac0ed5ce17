"""The command behind a run: the train line parses back (with the CLI's own parser) to the same
TrainConfig, the JSON config and the Python cell build it too, and a run's config.json trains again."""

from __future__ import annotations

import json

import pytest

from surmlab.cli import build_parser
from surmlab.command import build_command, parse_command, run_command
from surmlab.train_config import TrainConfig

CONFIGS = [
    TrainConfig(),
    TrainConfig(
        backbone="tiny-bert",
        task="csv:/data/my reviews/r.csv",
        method="lora",
        budget=50_000,
        targets=["query", "value"],
        lr=1e-3,
        warmup_ratio=0.1,
        schedule="linear",
        max_steps=40,
        eval_every=10,
        text_column="review",
        label_column="sentiment",
        name="it's -mine",
        cpu=True,
        pretrained=False,
        seed=3,
    ),
    TrainConfig(method="surm-kronecker", hyper={"block_size": 8}, mode="adapter", targets="all-linear", name="-x"),
    TrainConfig(budget="9k", max_train=64, max_eval=32, dropout=0.1, mixed_precision="bf16", log_with="tensorboard"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_line_json_and_cell_give_back_the_config(config):
    command = build_command(config)
    assert command.line.startswith("surmlab train") and "\n" not in command.line
    assert parse_command(command.line) == config
    assert TrainConfig.from_dict(json.loads(command.json)) == config
    scope: dict = {}
    exec(command.python.split("summary = ")[0], scope)  # the cell up to the (slow) training call
    assert scope["config"] == config


def test_only_changed_options_are_written():
    assert build_command(TrainConfig()).line == "surmlab train"
    line = build_command(TrainConfig(epochs=3, lr=0.0005)).line
    assert line == "surmlab train --epochs 3 --lr 0.0005"


def test_budget_count_reads_as_a_number():
    args = build_parser().parse_args(["train", "--budget", "50000"])
    from surmlab.cli import _train_config

    assert (
        _train_config(args).budget == 50_000
        and _train_config(build_parser().parse_args(["train", "--budget", "50k"])).budget == "50k"
    )


def test_a_run_config_json_is_its_command(tmp_path):
    config = TrainConfig(backbone="tiny-bert", budget="1k", name="mine")
    run = tmp_path / "run"
    run.mkdir()
    saved = {"train": config.__dict__ | {}, "task": {"name": "rotten-tomatoes", "modality": "text", "num_labels": 2}}
    (run / "config.json").write_text(json.dumps(saved))
    loaded, command = run_command(run)
    assert loaded == config and parse_command(command.line) == config
    args = build_parser().parse_args(["train", "--config", str(run / "config.json"), "--epochs", "2"])
    from surmlab.cli import _train_config

    assert _train_config(args) == TrainConfig(**{**config.__dict__, "epochs": 2})


def test_not_a_train_line():
    with pytest.raises(ValueError, match="not a surmlab train line"):
        parse_command("rm -rf /")


def test_form_command_and_load_into_form_round_trip(tmp_path):
    """The Command tab: the form's command is the config Start queues; a past run's settings loaded into
    the form give back the same config."""
    from surmlab.app.command_tab import form_command, form_values, past_run
    from surmlab.app.handlers import Form, Lab

    lab = Lab(tmp_path / "runs", jobs=object())  # no job manager is needed to build commands
    values = {**Form().__dict__, "backbone": "tiny-bert", "task": "csv:/d/r.csv", "budget": "1k", "lr": "2e-3",
              "text_column": "review", "label_column": "sentiment", "max_steps": 5}  # fmt: skip
    command, message = form_command(lab, values)
    config = Form(**values).to_config(lab.runs_dir)
    assert command is not None and parse_command(command.line) == config, message
    assert "--text-column review --label-column sentiment" in command.line and "--lr 0.002" in command.line
    bad, message = form_command(lab, {**values, "lr": "fast"})
    assert bad is None and "learning rate must be a number" in message

    run = lab.runs_dir / "20260101-000000-mine"
    run.mkdir(parents=True)
    saved = {"train": config.__dict__, "task": {"name": "csv:/d/r.csv", "modality": "text", "num_labels": 2}}
    (run / "config.json").write_text(json.dumps(saved))
    loaded, run_cmd, said = past_run(lab, run.name)
    assert loaded == config and parse_command(run_cmd.line) == config and "--config runs/" in said
    assert Form(**form_values(loaded)).to_config(lab.runs_dir) == config
    assert past_run(lab, "../etc")[2] == "Choose a run."
