"""``nn.MultiheadAttention``'s fused in-projection (``in_proj_weight``, 3E x E) as the SURM target ``<mha>.in_proj``.

Every check compares with an independent oracle: a fresh plain ``nn.MultiheadAttention`` whose ``in_proj_weight``
is set by hand to ``W + sum alpha_i S_i``, with ``S`` built from the update's parameters by the family's definition
(``tests/oracles.py``), or a reload in a fresh process."""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch
from oracles import ORACLES, oracle_dense
from torch import nn

from surmlab import (
    SurmConfig,
    delete_adapter,
    disable_adapter,
    inject,
    load_adapter,
    merge,
    plan_for,
    save_adapter,
    set_adapter,
    unload,
    unmerge,
)
from surmlab.methods import preset_targets
from surmlab.structures import FAMILIES
from surmlab.tuner import surm_layers

E, HEADS = 16, 4
TARGET = "self_attn.in_proj"
PLAIN_KEYS = [
    "self_attn.in_proj_weight",
    "self_attn.in_proj_bias",
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
]
FAMILY_NAMES = list(FAMILIES)


class Block(nn.Module):
    def __init__(self, batch_first: bool = True, **kwargs) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(E, HEADS, batch_first=batch_first, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.self_attn(x, x, x, need_weights=False)[0]


def block(batch_first: bool = True, **kwargs) -> Block:
    torch.manual_seed(1)
    return Block(batch_first, **kwargs)


def tokens(batch_first: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn((2, 5, E) if batch_first else (5, 2, E), generator=generator)


def config(family: str = "lowrank", **kwargs) -> SurmConfig:
    hyper = kwargs.pop("hyper", ORACLES[family].example(E, E))  # fits the 48x16 layer and each 16x16 third
    return SurmConfig(family=family, target_modules=[TARGET], hyper=hyper, modules_to_save=[], **kwargs)


def perturb(layer, name: str | None = None, std: float = 0.05) -> None:
    with torch.no_grad():
        for p in layer.slot(name).updates.parameters():
            p.normal_(0.0, std)


def dense_update(layer, name: str | None = None) -> torch.Tensor:
    """``alpha S`` of one adapter as a 3E x E float64 matrix, zeros outside its row slices, from the oracles."""
    slot = layer.slot(name)
    s = torch.zeros(3 * E, E, dtype=torch.float64)
    for slice_name, start, stop in slot.slices:
        s[start:stop] = slot.alpha * torch.from_numpy(oracle_dense(slot.updates[slice_name]))
    return s


def oracle(weight: torch.Tensor, batch_first: bool = True, **kwargs) -> Block:
    """A plain attention (the same seed) whose in_proj_weight is ``weight``, set by hand."""
    plain = block(batch_first, **kwargs)
    with torch.no_grad():
        plain.self_attn.in_proj_weight.copy_(weight.float())
    return plain


def pristine(**kwargs) -> torch.Tensor:
    return block(**kwargs).self_attn.in_proj_weight.detach().double()


def close(got, want, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(got.detach().double().numpy(), want.detach().double().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_in_proj_matches_a_plain_attention_with_w_plus_s(family, batch_first):
    x = tokens(batch_first)
    model = inject(block(batch_first), config(family))
    layer = surm_layers(model)[TARGET]
    assert layer.read_by_parent and (layer.out_features, layer.in_features) == (3 * E, E)
    perturb(layer)
    want_weight = pristine(batch_first=batch_first) + dense_update(layer)
    close(layer.delta_weight(), dense_update(layer), rtol=1e-5, atol=1e-6)
    plain = oracle(want_weight, batch_first)
    want = plain(x)
    assert not torch.allclose(want, block(batch_first)(x), atol=1e-3)  # the update changes the output
    close(model(x), want)  # training mode: F.multi_head_attention_forward
    model.eval()
    plain.eval()
    with torch.inference_mode():  # the fast path (torch._native_multi_head_attention when batch_first)
        close(model(x), plain(x))


def test_circulant_update_cross_checked_with_scipy():
    """The circulant layout written out by hand: block (a, b) of the 3 x 2 grid is circulant(w[a, b])."""
    model = inject(block(), config("circulant", hyper={"block_size": 8}))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    w = layer.updates["full"].weight.detach().double().numpy()
    assert w.shape == (6, 2, 8)
    s = np.block([[scipy.linalg.circulant(w[a, b]) for b in range(2)] for a in range(6)])
    close(layer.delta_weight(), torch.from_numpy(s), rtol=1e-5, atol=1e-6)
    x = tokens()
    close(model(x), oracle(pristine() + torch.from_numpy(s))(x))


def test_attention_without_bias():
    model = inject(block(bias=False), config("kronecker"))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    assert model.self_attn.in_proj_bias is None
    assert list(model.state_dict())[:2] == ["self_attn.in_proj_weight", "self_attn.out_proj.weight"]
    x = tokens()
    close(model(x), oracle(pristine(bias=False) + dense_update(layer), bias=False)(x))


@pytest.mark.parametrize("family", ["lowrank", "circulant"])
def test_qkv_slices_change_only_q_and_v_rows(family):
    model = inject(block(), config(family, qkv_slices={"in_proj": ["q", "v"]}))
    layer = surm_layers(model)[TARGET]
    assert layer.slices == [("q", 0, E), ("v", 2 * E, 3 * E)]
    perturb(layer)
    w = pristine()
    effective = model.state_dict()["self_attn.in_proj_weight"].double()
    torch.testing.assert_close(effective[E : 2 * E], w[E : 2 * E], rtol=0, atol=0)  # k rows untouched
    for slice_name, start, stop in layer.slices:
        s = torch.from_numpy(oracle_dense(layer.updates[slice_name]))
        close(effective[start:stop], w[start:stop] + s, rtol=1e-5, atol=1e-6)
        assert s.abs().max() > 1e-3
    x = tokens()
    close(model(x), oracle(w + dense_update(layer))(x))


def test_gradients_reach_the_update_and_not_w():
    """For lowrank ``S = B A`` the gradients follow from dL/dW of the plain attention: dB = G A^T, dA = B^T G."""
    x = tokens()
    model = inject(block(), config("lowrank", hyper={"rank": 3}, alpha=0.7))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    model(x).square().sum().backward()
    base = layer.base_layer
    assert not base.weight.requires_grad and base.weight.grad is None
    assert not base.bias.requires_grad and base.bias.grad is None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{TARGET}.updates.full.a", f"{TARGET}.updates.full.b"}
    plain = oracle(pristine() + dense_update(layer))
    plain(x).square().sum().backward()
    g = plain.self_attn.in_proj_weight.grad.double()
    update = layer.updates["full"]
    a, b = update.a.detach().double(), update.b.detach().double()
    close(update.b.grad, 0.7 * g @ a.T)
    close(update.a.grad, 0.7 * b.T @ g)


def test_merge_equals_unmerged_and_unmerge_restores_w():
    x = tokens()
    model = inject(block(), config("toeplitz"))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    weight = model.self_attn.in_proj.base_layer.weight
    before = weight.detach().clone()
    unmerged = model(x).detach()
    merge(model)
    close(weight, pristine() + dense_update(layer), rtol=1e-5, atol=1e-6)
    close(model.self_attn.in_proj_weight, weight, rtol=0, atol=0)  # merged: nothing added on top
    close(model(x), unmerged)
    unmerge(model)
    torch.testing.assert_close(weight, before, rtol=0, atol=1e-6)
    close(model(x), unmerged)


@pytest.mark.parametrize("merged", [False, True])
def test_state_dict_keeps_the_plain_keys_and_loads_into_a_plain_attention(merged):
    x = tokens()
    model = inject(block(), config("circulant"))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    want = oracle(pristine() + dense_update(layer))(x)
    if merged:
        merge(model)
    state = model.state_dict()
    assert list(state)[:4] == PLAIN_KEYS == list(block().state_dict())
    assert all(k.startswith(f"{TARGET}.") for k in list(state)[4:])
    assert (f"{TARGET}.base_layer.weight" in state) != merged
    plain = block()
    plain.load_state_dict({k: v for k, v in state.items() if k in PLAIN_KEYS})  # strict: exactly its keys
    close(plain(x), want)
    again = inject(block(), config("circulant"))  # an adapted model takes the state dict back
    again.load_state_dict(state)
    assert surm_layers(again)[TARGET].merged == merged
    close(again(x), want)
    if merged:
        unmerge(again)
        close(again.self_attn.in_proj.base_layer.weight, pristine(), rtol=1e-5, atol=1e-6)


def test_a_plain_state_dict_loads_as_the_base():
    model = inject(block(), config("lowrank"))
    perturb(surm_layers(model)[TARGET])
    other = Block()  # another seed: other weights
    model.load_state_dict(other.state_dict(), strict=False)
    assert model.self_attn.in_proj.base_layer.weight.data_ptr() != other.self_attn.in_proj_weight.data_ptr()
    torch.testing.assert_close(model.self_attn.in_proj.base_layer.weight, other.self_attn.in_proj_weight)
    assert not surm_layers(model)[TARGET].merged


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from surmlab import load_adapter

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = nn.MultiheadAttention({E}, {HEADS}, batch_first=True)

        def forward(self, x):
            return self.self_attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(1)
    model = load_adapter(Block(), sys.argv[1])
    torch.save(model(torch.load(sys.argv[2])).detach(), sys.argv[3])
    """
)


def test_save_and_load_in_a_fresh_process(tmp_path):
    x = tokens()
    model = inject(block(), config("kronecker", qkv_slices={"in_proj": ["q", "v"]}))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    want = oracle(pristine() + dense_update(layer))(x)
    save_adapter(model, tmp_path / "adapter")
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "reload.py"
    script.write_text(FRESH_PROCESS.format(E=E, HEADS=HEADS))
    args = [sys.executable, str(script), str(tmp_path / "adapter"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    close(torch.load(tmp_path / "y.pt"), want)
    close(load_adapter(block(), tmp_path / "adapter")(x), want)  # and in this process


def test_two_named_adapters_add_up():
    x = tokens()
    model = inject(block(), config("lowrank", hyper={"rank": 2}), name="a")
    inject(model, config("circulant", hyper={"block_size": 8}, alpha=0.5, qkv_slices={"in_proj": ["k"]}), name="b")
    layer = surm_layers(model)[TARGET]
    perturb(layer, "a")
    perturb(layer, "b")
    w = pristine()
    close(model(x), oracle(w + dense_update(layer, "a"))(x))  # "b" added inactive
    set_adapter(model, ["a", "b"])
    want = oracle(w + dense_update(layer, "a") + dense_update(layer, "b"))(x)
    close(model(x), want)
    merge(model)
    close(model(x), want)
    unmerge(model)
    set_adapter(model, "b")
    close(model(x), oracle(w + dense_update(layer, "b"))(x))
    delete_adapter(model, "a")
    delete_adapter(model, "b")
    assert type(model.self_attn) is nn.MultiheadAttention
    close(model(x), block()(x))


def test_unload_gives_back_a_plain_attention_with_its_own_parameter():
    x = tokens()
    model = block()
    weight, bias = model.self_attn.in_proj_weight, model.self_attn.in_proj_bias
    inject(model, config("lowrank"))
    assert model.self_attn.in_proj.base_layer.weight is weight  # moved, not copied
    perturb(surm_layers(model)[TARGET])
    unload(model)
    assert type(model.self_attn) is nn.MultiheadAttention and "in_proj" not in model.self_attn._modules
    assert model.self_attn.in_proj_weight is weight and model.self_attn.in_proj_bias is bias
    assert list(model.state_dict()) == PLAIN_KEYS
    # inject froze the attention (unload leaves flags alone), and SDPA picks its kernel by requires_grad
    close(model(x), block().requires_grad_(False)(x), rtol=0, atol=0)
    merged = inject(block(), config("lowrank"))
    layer = surm_layers(merged)[TARGET]
    perturb(layer)
    want_weight = pristine() + dense_update(layer)
    unload(merged, merge=True)
    assert type(merged.self_attn) is nn.MultiheadAttention
    close(merged.self_attn.in_proj_weight, want_weight, rtol=1e-5, atol=1e-6)


def test_a_deep_copy_keeps_the_update():
    x = tokens()
    model = inject(block(), config("circulant"))
    perturb(surm_layers(model)[TARGET])
    twin = copy.deepcopy(model)
    close(twin(x), model(x), rtol=0, atol=0)
    assert twin.self_attn.in_proj.base_layer.weight is not model.self_attn.in_proj.base_layer.weight


@pytest.mark.parametrize("family", ["circulant", "lowrank", "kronecker", "toeplitz"])
@pytest.mark.parametrize("slices", [None, ["q", "v"]])
def test_the_budget_solver_counts_in_proj(family, slices):
    qkv = {"in_proj": slices} if slices else {}
    cfg = SurmConfig(family=family, target_modules=[TARGET], budget=400, nearest=True, qkv_slices=qkv)
    plan = plan_for(block(), cfg)
    shapes = [(E, E), (E, E)] if slices else [(3 * E, E)]
    names = [f"{TARGET}[{s}]" for s in slices] if slices else [TARGET]
    assert [(t.name, t.out_features, t.in_features) for t, _, _ in plan.per_layer] == [
        (n, o, i) for n, (o, i) in zip(names, shapes, strict=True)
    ]
    assert plan.total == sum(
        ORACLES[family].count(o, i, h) for (o, i), (_, h, _) in zip(shapes, plan.per_layer, strict=True)
    )
    model = inject(block(), cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == plan.total


def test_in_proj_of_a_transformer_encoder_layer_in_its_fast_path():
    """The encoder layer's own fast path reads ``self_attn.in_proj_weight`` outside the attention's forward."""
    torch.manual_seed(3)
    encoder = nn.TransformerEncoderLayer(E, HEADS, 32, dropout=0.0, batch_first=True)
    plain = copy.deepcopy(encoder)
    w = encoder.self_attn.in_proj_weight.detach().double().clone()
    inject(encoder, config("lowrank"))
    layer = surm_layers(encoder)[TARGET]
    perturb(layer)
    with torch.no_grad():
        plain.self_attn.in_proj_weight.copy_((w + dense_update(layer)).float())
    x = tokens()
    close(encoder(x), plain(x))
    encoder.eval()
    plain.eval()
    with torch.inference_mode():
        close(encoder(x), plain(x))


def test_attention_with_other_key_dims_is_refused_by_name():
    model = block(kdim=8, vdim=8)
    with pytest.raises(ValueError, match=r"target self_attn\.in_proj: .*kdim=8, vdim=8 and embed_dim=16.*separate"):
        inject(model, config("lowrank"))
    assert type(model.self_attn) is nn.MultiheadAttention and not hasattr(model, "surm_config")


def test_adapter_mode_is_refused_for_layers_read_through_weight():
    for target in (TARGET, "self_attn.out_proj"):
        cfg = SurmConfig(family="lowrank", mode="adapter", target_modules=[target], hyper={"rank": 2})
        with pytest.raises(ValueError, match=rf"target {target} is read through its \.weight .* use mode='lora'"):
            inject(block(), cfg)


def test_all_linear_leaves_in_proj_alone():
    """``all-linear`` means the nn.Linear layers (out_proj here), before and after in_proj is adapted."""
    model = inject(block(), SurmConfig(family="lowrank", target_modules="all-linear", hyper={"rank": 2}))
    assert list(surm_layers(model)) == ["self_attn.out_proj"]
    inject(model, config("lowrank"), name="qkv")
    inject(model, SurmConfig(family="lowrank", target_modules="all-linear", hyper={"rank": 2}), name="more")
    assert surm_layers(model)[TARGET].adapter_names == ["qkv"]


def test_other_methods_are_told_in_proj_is_surm_only():
    with pytest.raises(ValueError, match=r"'self_attn\.in_proj' names the fused in-projection .* only SURM"):
        preset_targets(block(), "lora", [TARGET])


def test_disable_adapter_dtype_and_a_pickled_model(tmp_path):
    x = tokens()
    model = inject(block(), config("circulant"))
    layer = surm_layers(model)[TARGET]
    perturb(layer)
    want = oracle(pristine() + dense_update(layer))(x)
    with disable_adapter(model):
        close(model(x), block().requires_grad_(False)(x), rtol=0, atol=0)
    torch.save(model, tmp_path / "model.pt")
    close(torch.load(tmp_path / "model.pt", weights_only=False)(x), want)
    model.double()
    assert model.self_attn.in_proj_weight.dtype == torch.float64
    close(model(x.double()), want)
