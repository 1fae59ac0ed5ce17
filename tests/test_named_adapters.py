"""Named adapters (PEFT's ``adapter_name``): several adapters on one model, one or several active.

Every check of the map is against a float64 oracle built from the families' definitions
(``oracles.oracle_dense``): the active adapters on a layer compute ``(W + sum_i alpha_i S_i) x``, merged or not,
for every family paired with a different one.
"""

import re

import numpy as np
import pytest
import torch
from oracles import oracle_dense
from torch import nn

from surmlab import (
    SurmConfig,
    delete_adapter,
    disable_adapter,
    export_lora,
    inject,
    load_adapter,
    merge,
    save_adapter,
    set_adapter,
    unload,
    unmerge,
)
from surmlab.structures import FAMILIES
from surmlab.tuner import adapters, plan_for, summary, surm_layers

FAMILY_NAMES = list(FAMILIES)
# Each family next to a different one (the next in the registry), so every family meets another on one layer.
PAIRS = [(a, FAMILY_NAMES[(i + 1) % len(FAMILY_NAMES)]) for i, a in enumerate(FAMILY_NAMES)]


class Net(nn.Module):
    """Two 32 -> 48 -> 48 layers; ``fc1`` is what both adapters target, ``fc2`` only adapter ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 48), nn.Linear(48, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def config(family, targets=("fc1",), product="auto", alpha=1.0, **kw):
    model = Net()
    solved = plan_for(model, SurmConfig(family=family, target_modules=list(targets), budget=300, nearest=True))
    hyper = dict(solved.hyper)
    return SurmConfig(family=family, target_modules=list(targets), hyper=hyper, product=product, alpha=alpha, **kw)


def close(got, want, rtol, atol):
    np.testing.assert_allclose(got.detach().double().numpy(), want.detach().double().numpy(), rtol=rtol, atol=atol)


@torch.no_grad()
def randomise(model):
    for name, p in model.named_parameters():
        if ".updates." in name:
            p.normal_(0.0, 0.05)


def oracle_weight(layer, names):
    """``W + sum_i alpha_i S_i`` in float64 from the pristine weight and each adapter's dense ``S``."""
    weight = layer.base_layer.weight.detach().double().clone()
    for name in names:
        slot = layer.slot(name)
        for s, start, stop in slot.slices:
            weight[start:stop] += slot.alpha * torch.from_numpy(oracle_dense(slot.updates[s]))
    return weight


def oracle_out(model, x, active):
    """The two-layer net in float64 with each layer's active adapters folded into its weight."""
    layers = surm_layers(model)

    def linear(name, h):
        module = model.get_submodule(name)
        if name in layers:
            layer = layers[name]
            w = oracle_weight(layer, [n for n in active if n in layer.adapter_names])
            return h @ w.T + layer.base_layer.bias.double()
        return h @ module.weight.double().T + module.bias.double()

    return linear("fc2", torch.tanh(linear("fc1", x.double())))


def two_adapters(family_a, family_b, product_b="auto"):
    torch.manual_seed(0)
    model = Net()
    inject(model, config(family_a, alpha=0.7), name="a")
    inject(model, config(family_b, targets=("fc1", "fc2"), product=product_b, alpha=1.3), name="b")
    randomise(model)
    return model.eval()


@pytest.mark.parametrize("product_b", ["fft", "dense"])
@pytest.mark.parametrize(("family_a", "family_b"), PAIRS)
def test_two_active_adapters_add_up_merged_or_not(family_a, family_b, product_b):
    model = two_adapters(family_a, family_b, product_b)
    x = torch.randn(6, 32)
    pristine = {n: layer.base_layer.weight.detach().clone() for n, layer in surm_layers(model).items()}
    for active in (["a"], ["b"], ["a", "b"], ["b", "a"]):
        set_adapter(model, active)
        want = oracle_out(model, x, active)
        close(model(x).double(), want, rtol=1e-4, atol=1e-5)
        fc1 = surm_layers(model)["fc1"]
        want_weight = oracle_weight(fc1, active)
        merge(model)
        close(fc1.base_layer.weight, want_weight, rtol=1e-5, atol=1e-6)
        close(model(x).double(), want, rtol=1e-4, atol=1e-5)
        unmerge(model)
        for n, layer in surm_layers(model).items():
            torch.testing.assert_close(layer.base_layer.weight, pristine[n], rtol=0, atol=1e-6)
    with disable_adapter(model):
        close(model(x).double(), oracle_out(model, x, []), rtol=1e-5, atol=1e-6)
    close(model(x).double(), oracle_out(model, x, ["b", "a"]), rtol=1e-4, atol=1e-5)


def test_merge_some_of_the_active_ones_and_the_state_dict_holds_the_sum():
    model = two_adapters("circulant", "lowrank")
    set_adapter(model, ["a", "b"])
    x = torch.randn(4, 32)
    want = oracle_out(model, x, ["a", "b"])
    merge(model, names="b")
    fc1 = surm_layers(model)["fc1"]
    assert fc1.merged_names == ("b",)
    close(model(x).double(), want, rtol=1e-4, atol=1e-5)
    # The plain key holds the effective weight of the active adapters, whether merged or not.
    plain = Net()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".updates." not in k and "extra." not in k})
    close(plain(x).double(), want, rtol=1e-4, atol=1e-5)


def test_inactive_adapters_are_frozen_and_a_new_one_starts_inactive():
    model = Net()
    inject(model, config("circulant"))
    inject(model, config("lowrank", targets=("fc1", "fc2")), name="b")
    fc1, fc2 = surm_layers(model)["fc1"], surm_layers(model)["fc2"]
    assert fc1.active == ("default",) and fc2.active == ()
    assert all(p.requires_grad for p in fc1.updates.parameters())
    assert not any(p.requires_grad for p in fc1.slot("b").updates.parameters())
    assert model.surm_config.family == "circulant"
    set_adapter(model, "b")
    assert not any(p.requires_grad for p in fc1.updates.parameters())
    assert all(p.requires_grad for p in fc2.slot("b").updates.parameters())
    assert model.surm_config.family == "lowrank" and fc2.active == ("b",)
    assert [r["layer"] for r in summary(model)] == ["fc1 (default)", "fc1 (b)", "fc2 (b)"]


def test_delete_adapter_keeps_the_others_and_the_last_one_unwraps():
    model = two_adapters("circulant", "toeplitz")
    set_adapter(model, ["a", "b"])
    x = torch.randn(3, 32)
    delete_adapter(model, "a")  # fc1's own adapter: "b" takes its place
    assert list(adapters(model)) == ["b"] and surm_layers(model)["fc1"].adapter_names == ["b"]
    close(model(x).double(), oracle_out(model, x, ["b"]), rtol=1e-4, atol=1e-5)
    assert "fc1.updates.full.weight" in model.state_dict()
    delete_adapter(model, "b")
    assert type(model.fc1) is nn.Linear and type(model.fc2) is nn.Linear and not hasattr(model, "surm_config")


def test_save_and_load_named_adapters(tmp_path):
    model = two_adapters("monarch", "lowrank")
    save_adapter(model, tmp_path / "b", name="b")
    save_adapter(model, tmp_path / "a", name="a")
    x = torch.randn(5, 32)
    torch.manual_seed(0)
    fresh = Net()  # the same base weights as two_adapters' model
    load_adapter(fresh, tmp_path / "a", name="a")
    load_adapter(fresh, tmp_path / "b", name="b")
    set_adapter(model, ["a", "b"])
    set_adapter(fresh, ["a", "b"])
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    close(fresh(x).double(), oracle_out(model, x, ["a", "b"]), rtol=1e-4, atol=1e-5)
    # A file of one named adapter is a single-adapter file: it loads into a bare model as "default".
    torch.manual_seed(0)
    single = load_adapter(Net(), tmp_path / "b")
    set_adapter(model, "b")
    torch.testing.assert_close(single(x), model(x), rtol=0, atol=0)
    assert list(adapters(single)) == ["default"]


# -- bad input: a clear error naming the adapter and what exists, nothing half-applied ------------------------


def snapshot(model):
    return dict(model.named_modules()), {k: v.clone() for k, v in model.state_dict().items()}, adapters(model)


def assert_unchanged(model, before):
    modules, state, records = before
    assert dict(model.named_modules()) == modules and adapters(model) == records
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_bad_names_are_refused_whole(tmp_path):
    model = two_adapters("circulant", "lowrank")
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape("adapter 'a' exists") + ".*loaded adapters: \\['a', 'b'\\]"):
        inject(model, config("toeplitz"), name="a")
    unknown = "cannot activate adapter 'c': it is not loaded; loaded adapters: ['a', 'b']"
    with pytest.raises(ValueError, match=re.escape(unknown)):
        set_adapter(model, ["a", "c"])
    with pytest.raises(ValueError, match="cannot merge adapter 'c': it is not loaded; loaded adapters"):
        merge(model, names=["c"])
    with pytest.raises(ValueError, match=re.escape("cannot merge adapter(s) ['b']: not active (active: ['a'])")):
        merge(model, names="b")
    with pytest.raises(ValueError, match="cannot delete adapter 'z': it is not loaded"):
        delete_adapter(model, "z")
    with pytest.raises(ValueError, match=re.escape("adapter name 'a.b'")):
        inject(model, config("toeplitz"), name="a.b")
    save_adapter(model, tmp_path / "a", name="a")
    with pytest.raises(ValueError, match="adapter 'b' exists"):
        load_adapter(model, tmp_path / "a", name="b")
    assert_unchanged(model, before)


def test_a_mode_clash_on_one_layer_names_both_and_changes_nothing():
    model = Net()
    inject(model, config("circulant", targets=("fc2",)), name="a")
    before = snapshot(model)
    clash = SurmConfig(family="lowrank", mode="adapter", target_modules=["fc1", "fc2"], hyper={"rank": 2})
    with pytest.raises(ValueError, match=r"adapter 'b' \(adapter mode\) cannot share fc2 with adapter\(s\) \['a'\]"):
        inject(model, clash, name="b")
    assert_unchanged(model, before)  # fc1 was not wrapped either


def test_merged_models_refuse_changes_of_the_active_set():
    model = two_adapters("circulant", "lowrank")
    merge(model)
    with pytest.raises(ValueError, match=r"cannot change the active adapters .* unmerge"):
        set_adapter(model, ["a", "b"])
    with pytest.raises(ValueError, match=r"cannot delete adapter 'b' .* unmerge"):
        delete_adapter(model, "b")
    unload(model, merge=True)
    assert type(model.fc1) is nn.Linear


def test_export_lora_takes_one_adapter(tmp_path):
    model = two_adapters("lowrank", "circulant")
    with pytest.raises(ValueError, match=re.escape("fc1 holds adapters ['a', 'b'] (active: ['a'])")):
        export_lora(model, tmp_path)
    assert not any(tmp_path.iterdir())
