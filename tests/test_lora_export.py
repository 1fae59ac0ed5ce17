"""export_lora writes a PEFT LoRA adapter that the installed peft loads: exact for lowrank, the reported
truncation error for the other families (checked against numpy's SVD of an independent dense oracle)."""

import numpy as np
import pytest
import torch
from oracles import oracle_dense, to_numpy
from test_save_routes import batch, tiny_bert

from surmlab import SurmConfig, export_lora, inject
from surmlab.tuner import surm_layers


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@torch.no_grad()
def trained(config, std=0.05):
    model = inject(tiny_bert(), config)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * std)
    return model.eval()


@torch.no_grad()
def logits(model):
    return model.eval()(input_ids=batch()).logits


def peft_load(folder):
    from peft import PeftModel

    return PeftModel.from_pretrained(tiny_bert(), str(folder)).eval()


def peft_delta(peft_model, name):
    """The update PEFT itself applies to layer ``name``: its own get_delta_weight."""
    layer = peft_model.base_model.model.get_submodule(name)
    return to_numpy(layer.get_delta_weight("default"))


def test_lowrank_exports_exactly_and_peft_gives_the_same_outputs(tmp_path, capsys):
    model = trained(SurmConfig(family="lowrank", hyper={"rank": 2}, alpha=1.5))
    rows = export_lora(model, tmp_path)
    assert all(r.exact and r.rank == 2 and r.relative_error < 1e-6 for r in rows) and len(rows) == 4  # fp32 rounding
    assert "rank 2, relative error" in capsys.readouterr().out
    loaded = peft_load(tmp_path)
    assert (logits(tiny_bert()) - logits(model)).abs().max() > 1e-3  # the comparison below can fail
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-6)
    for name, layer in surm_layers(model).items():
        update = layer.updates["full"]
        want = 1.5 * to_numpy(update.b) @ to_numpy(update.a)
        np.testing.assert_allclose(peft_delta(loaded, name), want, atol=1e-6)


def test_circulant_reports_the_truncation_error_of_numpy_svd(tmp_path):
    model = trained(SurmConfig(family="circulant", hyper={"block_size": 16}, alpha=2.0))
    rows = export_lora(model, tmp_path, rank=5, verbose=False)
    loaded = peft_load(tmp_path)
    for row in rows:
        layer = surm_layers(model)[row.name]
        dense = 2.0 * oracle_dense(layer.updates["full"])  # from the definition, not from surmlab
        s = np.linalg.svd(dense, compute_uv=False)
        want = np.sqrt((s[5:] ** 2).sum() / (s**2).sum())
        assert row.rank == 5 and not row.exact
        assert row.relative_error == pytest.approx(want, rel=1e-6)
        got = np.linalg.norm(dense - peft_delta(loaded, row.name)) / np.linalg.norm(dense)
        assert got == pytest.approx(want, rel=1e-4)  # what PEFT serves is that truncation
        assert want > 0.05  # a circulant update is not rank 5: the error is real
    full = export_lora(model, tmp_path / "full", verbose=False)  # numerical rank: exact
    assert all(r.rank == 64 and r.relative_error < 1e-6 for r in full)
    torch.testing.assert_close(logits(peft_load(tmp_path / "full")), logits(model), rtol=0, atol=1e-5)


def test_energy_keeps_the_fewest_singular_values(tmp_path):
    model = trained(SurmConfig(family="toeplitz", hyper={"block_size": 16}))
    rows = export_lora(model, tmp_path, energy=0.9, verbose=False)
    for row in rows:
        s = np.linalg.svd(oracle_dense(surm_layers(model)[row.name].updates["full"]), compute_uv=False)
        share = np.cumsum(s**2) / (s**2).sum()
        assert row.rank == int(np.searchsorted(share, 0.9) + 1)
        assert row.relative_error == pytest.approx(np.sqrt(1 - share[row.rank - 1]), rel=1e-5)
    peft_load(tmp_path)  # per-layer ranks load (rank_pattern)


def test_the_head_travels_as_modules_to_save(tmp_path):
    model = trained(SurmConfig(family="lowrank", hyper={"rank": 1}), std=0.3)
    export_lora(model, tmp_path, verbose=False)
    loaded = peft_load(tmp_path)
    head = loaded.base_model.model.classifier
    torch.testing.assert_close(head.modules_to_save["default"].weight, model.classifier.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("config", "kwargs", "pattern"),
    [
        (SurmConfig(hyper={"block_size": 16}), {"rank": 65}, r"export rank 65 is larger than layer .* \(64x64\)"),
        (SurmConfig(hyper={"block_size": 16}), {"rank": 2, "energy": 0.9}, r"give rank \(2\) or energy \(0\.9\)"),
        (SurmConfig(hyper={"block_size": 16}), {"energy": 1.5}, r"energy must be a share in \(0, 1\]"),
        (SurmConfig(hyper={"block_size": 16}), {"rank": 0}, r"rank must be a positive integer"),
        (SurmConfig(mode="adapter", hyper={"block_size": 16}), {}, r"adapter-mode layer .* no LoRA adapter"),
    ],
)
def test_bad_exports_are_refused_before_anything_is_written(config, kwargs, pattern, tmp_path):
    with pytest.raises(ValueError, match=pattern):
        export_lora(inject(tiny_bert(), config), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=32, patch_size=8, embed_dim=64,
        depth=2, num_heads=4,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("family, hyper", [("lowrank", {"rank": 3}), ("circulant", {"block_size": 16})])
def test_fused_qkv_slices_export_as_whole_layer_loras(family, hyper, tmp_path):
    """The preset adapts the q and v thirds of timm's fused qkv: B is zero on the k rows."""
    from peft import PeftModel

    model = inject(tiny_vit(), SurmConfig(family=family, hyper=hyper))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    rows = export_lora(model, tmp_path, verbose=False)
    assert {r.rank for r in rows} == ({6} if family == "lowrank" else {64})  # q and v: 2 x rank, or in_features
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = PeftModel.from_pretrained(tiny_vit(), str(tmp_path)).eval()
    with torch.no_grad():
        assert (tiny_vit()(x) - model(x)).abs().max() > 1e-3
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)
    k_rows = peft_delta(loaded, rows[0].name)[64:128]
    assert np.abs(k_rows).max() < 1e-6


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("conv", r"conv is an nn\.Conv2d; export_lora writes LoRA for linear layers only"),
        ("attn.in_proj", r"attn\.in_proj is read through \.weight by its nn\.MultiheadAttention"),
        ("attn.out_proj", r"attn\.out_proj is read through \.weight by its nn\.MultiheadAttention"),
    ],
)
def test_layers_peft_lora_could_not_express_are_refused(target, pattern, tmp_path):
    """A conv's update is on its flattened kernel, and PEFT's LoRA on an attention's in_proj/out_proj name would
    wrap a module the attention never calls: refused by name, nothing written."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 8, 3)
            self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)

    model = inject(Net(), SurmConfig(family="lowrank", target_modules=[target], hyper={"rank": 2}))
    with pytest.raises(ValueError, match=pattern):
        export_lora(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
