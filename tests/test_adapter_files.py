"""A surmlab adapter folder is its own format: PEFT and transformers do not take it for theirs, surmlab
does not take a PEFT folder for its own, and folders written under the old PEFT-like names still load."""

import json
import os

import pytest
import torch
from test_save_routes import batch, tiny_bert

from surmlab import SurmConfig, inject, load_adapter, save_adapter


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A folder that is not found locally must not send PEFT or transformers to the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@torch.no_grad()
def perturbed(model, std=0.05):
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * std)
    return model


@torch.no_grad()
def logits(model):
    return model.eval()(input_ids=batch()).logits


def test_a_folder_saved_under_the_old_names_still_loads(tmp_path):
    model = perturbed(inject(tiny_bert(), SurmConfig(hyper={"block_size": 16})))
    save_adapter(model, tmp_path)
    os.replace(tmp_path / "surm_config.json", tmp_path / "adapter_config.json")
    os.replace(tmp_path / "surm_model.safetensors", tmp_path / "adapter_model.safetensors")
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    del meta["format"]  # what older versions wrote
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    loaded = load_adapter(tiny_bert(), tmp_path)
    assert (logits(tiny_bert()) - logits(model)).abs().max() > 1e-3
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_peft_and_transformers_do_not_take_a_surmlab_folder_for_a_peft_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    save_adapter(inject(tiny_bert(), SurmConfig()), tmp_path)
    with pytest.raises(ValueError, match=r"Can't find 'adapter_config\.json'"):  # not KeyError: 'peft_type'
        PeftModel.from_pretrained(tiny_bert(), str(tmp_path))
    with pytest.raises((OSError, ValueError), match=r"config\.json"):  # not KeyError: 'base_model_name_or_path'
        AutoModelForSequenceClassification.from_pretrained(str(tmp_path))


def test_a_peft_adapter_given_to_load_adapter_is_named(tmp_path):
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a PEFT LORA adapter, not a surmlab one: load it with peft\.PeftModel"):
        load_adapter(tiny_bert(), tmp_path)
