"""The lab's PEFT baselines save in PEFT's own format: peft's PeftModel.from_pretrained reloads the trained
model, the head the lab trains outside PEFT included."""

import pytest
import torch
from test_save_routes import batch, tiny_bert

from surmlab.methods.peft_baselines import save_peft_adapter
from surmlab.methods.prepare import prepare


@pytest.mark.parametrize("method", ["peft-lora", "c3a", "lokr"])
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
