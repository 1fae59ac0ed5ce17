"""sparse_spectrum's drawn frequencies travel in the adapter file and are checked against the layer on load."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_methods import tiny_vit

from surmlab import load_adapter, save_adapter
from surmlab.methods import prepare


def test_sparse_spectrum_frequencies_are_in_the_adapter_file_and_checked(tmp_path):
    prepared = prepare("surm-sparse_spectrum", tiny_vit(), head=["head"], budget=4000)
    with torch.no_grad():
        for p in prepared.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_adapter(prepared.model, tmp_path)
    weights = load_file(str(tmp_path / "surm_model.safetensors"))
    key = "blocks.0.attn.qkv.updates.q.frequencies"
    update = prepared.model.blocks[0].attn.qkv.updates["q"]
    assert torch.equal(weights[key], update.frequencies)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_adapter(tiny_vit(), tmp_path)(x), prepared.model(x), rtol=0, atol=0)
    # a saved draw replaces the seed's: another valid draw of the same size is what the loaded model uses
    other = weights[key].flip(0).contiguous()
    save_file({**weights, key: other}, str(tmp_path / "surm_model.safetensors"))
    loaded = load_adapter(tiny_vit(), tmp_path)
    assert torch.equal(loaded.blocks[0].attn.qkv.updates["q"].frequencies, other)
    # a draw that does not fit the 64x64 slice is refused by name before anything runs
    bad = other.clone()
    bad[0] = torch.tensor([64, 0])
    save_file({**weights, key: bad}, str(tmp_path / "surm_model.safetensors"))
    with pytest.raises(ValueError, match=r"adapter tensor blocks.0.attn.qkv.updates.q.frequencies in .*\(64, 0\) is "
                       r"not one of its frequencies"):  # fmt: skip
        load_adapter(tiny_vit(), tmp_path)
    # an older file without the frequencies still loads: the seed's draw stands
    save_file(
        {k: v for k, v in weights.items() if not k.endswith("frequencies")}, str(tmp_path / "surm_model.safetensors")
    )
    torch.testing.assert_close(load_adapter(tiny_vit(), tmp_path)(x), prepared.model(x), rtol=0, atol=0)
