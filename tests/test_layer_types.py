"""Layer types beyond ``nn.Linear``: ``nn.Embedding`` (the update on its table, ``W + alpha S`` looked up),
checked against the dense oracle of every family, through merge, the plain state dict, save/load, the budget
solver and two named adapters."""

import numpy as np
import pytest
import torch
from oracles import ORACLES, oracle_dense
from torch import nn

from surmlab import SurmConfig, inject, load_adapter, merge, plan_for, save_adapter, set_adapter, unmerge
from surmlab.structures import FAMILIES
from surmlab.tuner import surm_layers

FAMILY_NAMES = list(FAMILIES)
TABLE = (32, 16)  # (num_embeddings, embedding_dim): S is 32 x 16


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(*TABLE, padding_idx=0)
        self.head = nn.Linear(TABLE[1], 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(ids)))


def fresh():
    torch.manual_seed(0)
    return Tagger()


def table(layer, names):
    """``W + sum_i alpha_i S_i`` in float64 from the families' definitions."""
    w = layer.base_layer.weight.detach().double().reshape(layer.out_features, -1).clone()  # a kernel: flattened
    for name in names:
        slot = layer.slot(name)
        w += slot.alpha * torch.from_numpy(oracle_dense(slot.updates["full"]))
    return w


def close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(got.detach().double().numpy(), want.detach().double().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_embedding_update_on_the_table(family, tmp_path):
    ids = torch.tensor([[0, 5, 31], [7, 7, 2]])
    config = SurmConfig(family=family, target_modules=["embed"], budget=200, nearest=True, alpha=0.8)
    plan = plan_for(fresh(), config)
    assert plan.total == ORACLES[family].count(*TABLE, plan.per_layer[0][1])  # the closed form of the family table
    model = inject(fresh(), config)
    layer = surm_layers(model)["embed"]
    with torch.no_grad():
        for p in layer.updates.parameters():
            p.normal_(0.0, 0.05)
    want_table = table(layer, ["default"])
    want = want_table[ids]
    close(model.embed(ids), want)
    plain = Tagger()
    plain.load_state_dict(model.state_dict(), strict=False)  # the plain key holds the effective table
    close(plain.embed(ids), want)
    save_adapter(model, tmp_path)
    close(load_adapter(fresh(), tmp_path).embed(ids), want)
    pristine = layer.base_layer.weight.detach().clone()
    merge(model)
    close(layer.base_layer.weight, want_table)
    close(model.embed(ids), want)
    unmerge(model)
    torch.testing.assert_close(layer.base_layer.weight, pristine, rtol=0, atol=1e-6)


def test_two_adapters_on_an_embedding_add_up():
    model = fresh()
    inject(model, SurmConfig(family="lowrank", target_modules=["embed"], hyper={"rank": 2}), name="a")
    inject(
        model, SurmConfig(family="circulant", target_modules=["embed"], hyper={"block_size": 8}, alpha=0.5), name="b"
    )
    layer = surm_layers(model)["embed"]
    with torch.no_grad():
        for name in ("a", "b"):
            for p in layer.slot(name).updates.parameters():
                p.normal_(0.0, 0.05)
    set_adapter(model, ["a", "b"])
    ids = torch.tensor([1, 9, 30])
    close(model.embed(ids), table(layer, ["a", "b"])[ids])


# -- nn.MultiheadAttention.out_proj: the parent reads .weight, so .weight is the effective one ----------------


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def attention():
    torch.manual_seed(1)
    return Attention()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_multihead_attention_out_proj(family, tmp_path):
    x = torch.randn(2, 5, 16)
    config = SurmConfig(family=family, target_modules=["attn.out_proj"], budget=120, nearest=True)
    plan = plan_for(attention(), config)
    assert plan.total == ORACLES[family].count(16, 16, plan.per_layer[0][1])
    model = inject(attention(), config)
    layer = surm_layers(model)["attn.out_proj"]
    with torch.no_grad():
        for p in layer.updates.parameters():
            p.normal_(0.0, 0.05)
    # Oracle: a plain MultiheadAttention whose out_proj weight is W + S from the family's definition.
    plain = attention()
    with torch.no_grad():
        plain.attn.out_proj.weight.copy_(table(layer, ["default"]).float())
    want = plain(x)
    close(model(x), want, rtol=1e-4, atol=1e-5)
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.updates.parameters())
    model.eval()
    with torch.no_grad():  # the inference fast path reads the same weight
        close(model(x), want, rtol=1e-4, atol=1e-5)
    save_adapter(model, tmp_path)
    close(load_adapter(attention(), tmp_path)(x), want, rtol=1e-4, atol=1e-5)
    merge(model)
    close(model(x), want, rtol=1e-4, atol=1e-5)
    plain_reload = attention()
    plain_reload.load_state_dict(model.state_dict(), strict=False)
    close(plain_reload(x), want, rtol=1e-4, atol=1e-5)


# -- nn.Conv2d: S acts on the flattened kernel, out x (in / groups * kh * kw) ----------------------------------


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # MobileNetV2's kind: S is 8 x 9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(torch.tanh(self.conv(x)))


def convnet():
    torch.manual_seed(2)
    return ConvNet()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_conv2d_update_on_the_flattened_kernel(family, tmp_path):
    x = torch.randn(2, 4, 6, 6)
    config = SurmConfig(family=family, target_modules=["conv"], budget=150, nearest=True)
    plan = plan_for(convnet(), config)
    assert plan.total == ORACLES[family].count(8, 36, plan.per_layer[0][1])
    model = inject(convnet(), config)
    layer = surm_layers(model)["conv"]
    with torch.no_grad():
        for p in layer.updates.parameters():
            p.normal_(0.0, 0.05)
    # Oracle: the plain net with the kernel W + S (S from the family's definition, reshaped to out x in x kh x kw).
    plain = convnet()
    with torch.no_grad():
        plain.conv.weight.copy_(table(layer, ["default"]).float().view(8, 4, 3, 3))
    want = plain(x)
    close(model(x), want, rtol=1e-4, atol=1e-5)
    save_adapter(model, tmp_path)
    close(load_adapter(convnet(), tmp_path)(x), want, rtol=1e-4, atol=1e-5)
    reloaded = convnet()
    reloaded.load_state_dict(model.state_dict(), strict=False)
    close(reloaded(x), want, rtol=1e-4, atol=1e-5)
    merge(model)
    close(model.conv.base_layer.weight, plain.conv.weight, rtol=1e-5, atol=1e-6)
    close(model(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["circulant", "lowrank"])
def test_conv2d_on_timm_mobilenetv2(family):
    """The real MobileNetV2 architecture (timm, random weights; the pretrained ``mobilenetv2`` backbone has its
    own tests in test_cnn_backbone.py): every 1x1 and 3x3 conv of the first blocks adapted; the output equals
    the plain network holding the oracle's kernels."""
    import timm

    torch.manual_seed(3)
    base = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=3).eval()
    plain = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=3).eval()
    plain.load_state_dict(base.state_dict())
    targets = r"blocks\.[01]\.\d\.conv_(pw|dw|pwl)"
    model = inject(base, SurmConfig(family=family, target_modules=targets, budget=2000, nearest=True))
    layers = surm_layers(model)
    assert len(layers) == 8
    with torch.no_grad():
        for name, layer in layers.items():
            for p in layer.updates.parameters():
                p.normal_(0.0, 0.05)
            kernel = plain.get_submodule(name).weight
            kernel.copy_(table(layer, ["default"]).float().view_as(kernel))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = plain(x)
        close(model(x), want, rtol=1e-4, atol=1e-5)
        merge(model)
        close(model(x), want, rtol=1e-4, atol=1e-5)


def test_a_conv_with_its_own_forward_is_refused_by_name():
    """timm's Conv2dSame pads in its own forward; the update's convolution would skip that padding."""
    from timm.layers import Conv2dSame

    net = nn.Sequential(nn.Conv2d(3, 8, 1), Conv2dSame(8, 8, 3, stride=2))
    with pytest.raises(ValueError, match=r"target 1 is a Conv2dSame, a Conv2d with its own forward"):
        inject(net, SurmConfig(family="lowrank", target_modules=["0", "1"], hyper={"rank": 2}))
    assert isinstance(net[0], nn.Conv2d) and type(net[1]) is Conv2dSame  # nothing half-applied
