"""The lab's PEFT baselines save in PEFT's own format: peft's PeftModel.from_pretrained reloads the trained
model, the head the lab trains outside PEFT included."""

import json

import pytest
import torch
from test_save_routes import batch, tiny_bert

from surmlab.cli import main as cli
from surmlab.methods import METHODS
from surmlab.methods.peft_baselines import save_peft_adapter
from surmlab.methods.prepare import prepare

PEFT_METHODS = [name for name, m in METHODS.items() if m.kind == "peft"]


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_runs_reload_through_peft(method, tmp_path):
    from peft import PeftModel

    prepared = prepare(method, tiny_bert(), head=["classifier"], budget=2000)
    model = prepared.model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        want = model.eval()(input_ids=batch()).logits
    assert save_peft_adapter(model, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".peft-")]
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path)).eval()
    with torch.no_grad():
        assert (tiny_bert().eval()(input_ids=batch()).logits - want).abs().max() > 1e-3
        torch.testing.assert_close(loaded(input_ids=batch()).logits, want, rtol=0, atol=1e-6)


def test_a_model_peft_did_not_wrap_writes_nothing(tmp_path):
    assert not save_peft_adapter(tiny_bert(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_lab_run_folder_of_a_peft_baseline_holds_peft_files(tmp_path):
    from peft import PeftModel

    from surmlab.runs import save_weights

    model = prepare("peft-lora", tiny_bert(), head=["classifier"], budget=2000).model
    save_weights(model, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "trainable.safetensors"} <= {
        p.name for p in tmp_path.iterdir()
    }
    PeftModel.from_pretrained(tiny_bert(), str(tmp_path))


NEW_BASELINES = ["shira", "miss", "gralora", "fourierft", "vera", "oft", "boft", "hra"]


def test_the_new_baselines_are_peft_methods():
    assert set(NEW_BASELINES) <= set(PEFT_METHODS)


@pytest.mark.parametrize("method", NEW_BASELINES)
def test_a_new_baseline_trains_through_the_cli_and_saves_peft_files(method, tmp_path, capsys):
    """``surmlab train`` runs three steps; the run's final/ holds PEFT files of that method's type, which
    PEFT loads into a model whose outputs differ from the untrained one."""
    from peft import PeftConfig

    args = ["train", "--method", method, "--backbone", "tiny-bert", "--task", "rotten-tomatoes", "--budget", "2k"]
    args += ["--max-steps", "3", "--max-train", "32", "--max-eval", "16", "--max-length", "16", "--batch-size", "8"]
    code = cli([*args, "--runs-dir", str(tmp_path), "--lr", "0.05"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    config = PeftConfig.from_pretrained(str(run / "final"))
    assert config.peft_type.value.lower() == method.replace("-", "")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["method"], summary["status"], summary["step"]) == (method, "completed", 3)
    assert 0 < summary["method_params"] <= 2000
