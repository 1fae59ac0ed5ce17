"""``surmlab train --init``: the update's start, zero (exactly the pretrained model) or small noise, from the
command line through ``TrainConfig`` to every SURM layer; refused by name for methods that start their own way."""

import json

import torch

from surmlab.cli import main as cli
from surmlab.layer import NOISE_STD
from surmlab.train import build_backbone, build_method
from surmlab.train_config import TrainConfig
from surmlab.tuner import surm_layers


def _deltas(init: str, method: str = "surm-circulant") -> list[torch.Tensor]:
    config = TrainConfig(backbone="tiny-bert", method=method, budget="3k", init=init, seed=0)
    torch.manual_seed(0)
    prepared = build_method(config, build_backbone(config, num_labels=2))
    return [layer.delta_weight() for layer in surm_layers(prepared.model).values()]


def test_zero_starts_at_the_pretrained_weights_and_noise_does_not():
    for method in ("surm-circulant", "lora"):
        assert all(not d.any() for d in _deltas("zero", method))
    # circulant: S's entries are its parameters, drawn from N(0, NOISE_STD^2): their spread is NOISE_STD.
    noisy = torch.cat([d.flatten() for d in _deltas("noise")])
    assert noisy.ne(0).float().mean() > 0.99
    assert 0.8 * NOISE_STD < noisy.std().item() < 1.2 * NOISE_STD


def test_surmlab_train_init_flag_reaches_the_run_and_bad_values_are_named(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--backbone", "tiny-bert", "--task", "rotten-tomatoes", "--max-train", "16", "--max-eval", "8",
              "--max-steps", "1", "--runs-dir", str(runs), "--cpu"]  # fmt: skip
    assert cli(["train", "--method", "surm-circulant", "--budget", "3k", "--init", "noise", *common]) == 0
    (run,) = runs.iterdir()
    assert json.loads((run / "config.json").read_text())["train"]["init"] == "noise"
    capsys.readouterr()
    assert cli(["train", "--method", "bitfit", "--init", "noise", *common]) == 2
    assert "init 'noise' applies to surm-* methods and lora; bitfit starts its own way" in capsys.readouterr().err
    try:
        code = cli(["train", "--method", "lora", "--budget", "3k", "--init", "gauss", *common])
    except SystemExit as exit_:  # argparse refuses a value outside the choices
        code = exit_.code
    assert code == 2 and "invalid choice: 'gauss' (choose from 'zero', 'noise')" in capsys.readouterr().err
