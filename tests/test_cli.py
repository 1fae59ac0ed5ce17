"""The command line and ``TrainConfig`` agree: a flag per field, the dataclass's defaults and
choices, and ``--config run.json`` with the flags given on the command line over it."""

import json
import re
from dataclasses import asdict, fields, replace

import pytest

from surmlab.cli import INTERNAL, _given_options, _train_config, build_parser
from surmlab.cli import main as cli
from surmlab.fileio import write_json
from surmlab.methods import METHODS
from surmlab.runs import RunConfig, RunDir, TaskInfo
from surmlab.train_config import TrainConfig


def parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return re.sub(r"-\n\s*", "-", capsys.readouterr().out)  # undo the wrapping of lines at hyphens


def test_every_field_has_a_flag_with_its_help(capsys):
    text = help_text(capsys, "train")
    for f in fields(TrainConfig):
        if f.name not in INTERNAL:
            flag = "--" + f.name.replace("_", "-")
            assert flag in text, f"TrainConfig.{f.name} has no {flag}"
            assert " ".join(f.metadata["help"].split()[:3]) in " ".join(text.split()), f.name
    assert all(name in text for name in METHODS)  # the method registry's names, in the help of --method
    assert "--config FILE" in text and "--resume RUN_DIR" in text


def test_no_flags_is_the_dataclass_defaults():
    assert _train_config(parse()) == TrainConfig()
    assert _given_options(parse()) == {}


def test_flags_take_the_fields_types_and_choices():
    config = _train_config(
        parse(
            *("--budget", "50k", "--hyper", '{"rank": 4}', "--targets", "query", "value", "--max-steps", "7"),
            *("--lr", "3e-3", "--cpu", "--no-pretrained", "--schedule", "linear", "--method", "lora"),
        )
    )
    assert (config.budget, config.hyper, config.targets, config.max_steps) == (
        "50k",
        {"rank": 4},
        ["query", "value"],
        7,
    )
    assert (config.lr, config.cpu, config.pretrained, config.schedule) == (3e-3, True, False, "linear")
    assert _train_config(parse("--targets", "all-linear")).targets == "all-linear"
    assert _train_config(parse("--max-steps", "none")).max_steps is None
    for bad in (["--schedule", "warm"], ["--mixed-precision", "fp8"], ["--product", "x"], ["--epochs", "1.5"]):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_config_file_with_flags_over_it(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"method": "lora", "epochs": 3, "max_train": 64, "cpu": True, "hyper": {"rank": 4}}))
    config = _train_config(parse("--config", str(path), "--epochs", "1", "--no-cpu", "--max-train", "none"))
    # A flag equal to the default still wins over the file; "none" unsets an optional number.
    assert config == TrainConfig(method="lora", hyper={"rank": 4}, epochs=1, cpu=False, max_train=None)
    assert _train_config(parse("--config", str(path))) == TrainConfig(
        method="lora", epochs=3, max_train=64, cpu=True, hyper={"rank": 4}
    )


def test_a_config_written_by_the_app_reads_back_unchanged(tmp_path):
    """What the app's job queue writes (every field, pretrained=True included) is what the child trains."""
    config = TrainConfig(
        backbone="tiny-bert", method="surm-circulant", budget="1k", hyper={}, targets=["query", "value"],
        lr=3e-3, epochs=2, max_train=64, pretrained=True, cpu=True, name="x", runs_dir="somewhere", max_steps=7,
        weight_decay=0.1, log_with="tensorboard", mixed_precision="bf16",
    )  # fmt: skip
    write_json(tmp_path / "job.json", asdict(config))
    assert _train_config(parse("--config", str(tmp_path / "job.json"))) == config


def test_a_runs_own_config_json_trains_again(tmp_path):
    """``surmlab train --config runs/<run>/config.json`` takes the run's training options (its task
    and layers are what they produce, not options); flags still go over them."""
    config = TrainConfig(backbone="tiny-bert", method="lora", budget="2k", max_steps=3, seed=4)
    run = RunDir.create(tmp_path, "x")
    run.write_config(RunConfig(config, TaskInfo("rotten-tomatoes", "text", 2), [{"layer": "query"}]))
    assert _train_config(parse("--config", str(run.config_file))) == config
    assert _train_config(parse("--config", str(run.config_file), "--seed", "5")) == replace(config, seed=5)


def test_bad_config_files_are_one_line_errors(tmp_path, capsys):
    runs = tmp_path / "runs"
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"max_train": 0, "bogus": 1}))  # were the key let through, max_train would stop it
    assert cli(["train", "--config", str(path), "--runs-dir", str(runs)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"surmlab train: error: {path}: unknown training options ['bogus']; known: [")
    assert "'max_steps'" in line
    path.write_text("[1, 2]")
    assert cli(["train", "--config", str(path)]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err
    assert cli(["train", "--config", str(path), "--resume", str(tmp_path)]) == 2
    assert "--config and --resume do not go together" in capsys.readouterr().err
    assert not runs.exists()


def test_a_folder_option_naming_a_file_says_a_folder_was_expected(tmp_path, capsys):
    """--runs-dir (train, runs, app), --root (study) and a config's runs_dir: a file, or a path under one,
    is one line saying a folder was expected, not "[Errno 17] File exists"."""
    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    train = ["train", "--backbone", "tiny-bert", "--method", "lora", "--budget", "1k", "--max-steps", "1"]
    for argv, flag in (
        ([*train, "--runs-dir", str(file)], "--runs-dir"),
        (["runs", "--runs-dir", str(file)], "--runs-dir"),
        (["study", "--name", "s", "--methods", "lora", "--budgets", "2k", "--root", str(file)], "--root"),
    ):
        assert cli(argv) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.endswith(f"error: {flag} {str(file)!r}: a folder was expected, but it is a file"), line
    assert cli([*train, "--runs-dir", str(file / "runs")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"a folder was expected, but {file} is a file")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"backbone": "tiny-bert", "method": "lora", "budget": "1k", "runs_dir": str(file)}))
    assert cli(["train", "--config", str(config)]) == 2
    assert "runs_dir" in capsys.readouterr().err and file.read_text() == "not a folder"


def test_resume_overrides_are_the_flags_given():
    """On --resume only the flags given count, even one equal to the default (epochs 1 after 3)."""
    assert _given_options(parse("--resume", "x", "--epochs", "1")) == {"epochs": 1}


def test_budget_shares_the_train_options(capsys):
    text = help_text(capsys, "budget")
    for flag in ("--backbone", "--method", "--mode {lora,adapter}", "--budget", "--hyper JSON", "--targets"):
        assert flag in text
    args = build_parser().parse_args(["budget", "--method", "lora", "--hyper", '{"rank": 2}'])
    assert _given_options(args) == {"method": "lora", "hyper": {"rank": 2}}
    assert _given_options(build_parser().parse_args(["demo", "--runs-dir", "elsewhere"])) == {"runs_dir": "elsewhere"}
