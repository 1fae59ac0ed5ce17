"""PEFT parity: adapter dropout, init options and Hugging Face ``Conv1D`` layers (GPT-2), each checked
against an independent oracle (dense matrices built from the families' definitions, the same map as a
plain ``nn.Linear``, the plain model class)."""

import copy
import json
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import oracle_dense, rel_err
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification
from transformers.pytorch_utils import Conv1D

from surmlab import SurmConfig, SurmLinear, disable_adapter, inject, load_adapter, merge, save_adapter, unmerge
from surmlab.layer import NOISE_STD
from surmlab.structures import FAMILIES
from surmlab.tuner import plan_for, surm_layers

FAMILY_NAMES = list(FAMILIES)
MODES = ["lora", "adapter"]
PRODUCTS = ["fft", "dense"]


def hyper_for(family, out_features=48, in_features=32, budget=300):
    """Hyper-parameters the solver picks for one ``out x in`` layer near ``budget``."""
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(in_features, out_features))
    return dict(plan_for(model, SurmConfig(family=family, target_modules=["fc"], budget=budget, nearest=True)).hyper)


@torch.no_grad()
def randomise(layer, std=0.05):
    for p in layer.updates.parameters():
        p.normal_(0.0, std)
    if layer.adapter_bias is not None:
        layer.adapter_bias.normal_(0.0, std)


def oracle_delta(layer):
    """``alpha S`` (out x in) of a LoRA-mode layer, from the families' definitions, zero rows where unadapted."""
    delta = np.zeros((layer.out_features, layer.in_features))
    for name, start, stop in layer.slices:
        delta[start:stop] = oracle_dense(layer.updates[name])
    return torch.from_numpy(layer.alpha * delta)


def oracle_forward(layer, x, x_update=None):
    """The layer's map in float64 (gelu in adapter mode); in LoRA mode the update acts on ``x_update`` (a
    dropped input) when given."""
    weight = layer.base_layer.weight.detach().double()
    weight = weight.T if isinstance(layer.base_layer, Conv1D) else weight  # Conv1D stores in x out
    y = x.double() @ weight.T + layer.base_layer.bias.detach().double()
    if layer.mode == "adapter":
        s = torch.from_numpy(oracle_dense(layer.updates["adapter"]))
        return y + F.gelu(y @ s.T) + layer.adapter_bias.detach().double()
    return y + (x if x_update is None else x_update).double() @ oracle_delta(layer).T


# -- dropout ---------------------------------------------------------------------------------------------


def dropout_mask(seed, shape, p):
    """The mask nn.Dropout draws after ``torch.manual_seed(seed)`` on a tensor of ``shape``: 0 or 1 / (1 - p)."""
    torch.manual_seed(seed)
    return F.dropout(torch.ones(shape), p, training=True)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_dropout_drops_the_update_input_only(family, product):
    """Train mode: W x + b + alpha S (m * x) with the mask m nn.Dropout draws; eval mode: no dropout at all."""
    torch.manual_seed(0)
    layer = SurmLinear(nn.Linear(32, 48), family, hyper_for(family), alpha=0.7, product=product, dropout=0.3)
    randomise(layer)
    x = torch.randn(5, 32)
    layer.train()
    torch.manual_seed(11)
    got = layer(x)
    mask = dropout_mask(11, x.shape, 0.3)
    assert 0 < (mask == 0).sum() < mask.numel()
    assert rel_err(got, oracle_forward(layer, x, x * mask)) < 1e-5
    assert rel_err(got, oracle_forward(layer, x)) > 1e-3  # the dropout is visible
    layer.eval()
    assert rel_err(layer(x), oracle_forward(layer, x)) < 1e-5


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("family", ["circulant", "lowrank"])
def test_adapter_mode_dropout_drops_the_branch_input(family, product):
    """Adapter mode: h + act(S (m * h)) + b, h = W x + b_W."""
    torch.manual_seed(0)
    hyper = hyper_for(family, 32, 32)
    layer = SurmLinear(nn.Linear(32, 32), family, hyper, mode="adapter", product=product, dropout=0.5)
    randomise(layer)
    x = torch.randn(5, 32)
    layer.train()
    torch.manual_seed(3)
    got = layer(x)
    mask = dropout_mask(3, x.shape, 0.5)
    with torch.no_grad():
        h = layer.base_layer(x).double()
    s = torch.from_numpy(oracle_dense(layer.updates["adapter"]))
    want = h + F.gelu((h * mask) @ s.T) + layer.adapter_bias.detach().double()
    assert rel_err(got, want) < 1e-5
    layer.eval()
    want_eval = h + F.gelu(h @ s.T) + layer.adapter_bias.detach().double()
    assert rel_err(layer(x), want_eval) < 1e-5


def test_dropout_off_draws_nothing_and_changes_nothing():
    """dropout=0 (the default): no dropout module, no random draw in a training forward, the output unchanged."""
    torch.manual_seed(0)
    base = nn.Linear(32, 48)
    layer = SurmLinear(base, "circulant", {"block_size": 16}).train()
    assert layer.dropout is None
    randomise(layer)
    x = torch.randn(5, 32)
    state = torch.get_rng_state()
    got = layer(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert rel_err(got, oracle_forward(layer, x)) < 1e-5


def test_inject_passes_dropout_and_init_to_every_layer():
    model = tiny_gpt2()
    inject(model, SurmConfig(family="lowrank", budget=2000, nearest=True, dropout=0.25, init="noise"))
    layers = surm_layers(model)
    assert layers and all(layer.dropout is not None and layer.dropout.p == 0.25 for layer in layers.values())
    assert all(layer.delta_weight().abs().max() > 0 for layer in layers.values())
    assert model.surm_config.dropout == 0.25 and model.surm_config.init == "noise"


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("dropout", 1.0, "dropout must be a number in [0, 1), got 1.0"),
        ("dropout", -0.1, "dropout must be a number in [0, 1), got -0.1"),
        ("dropout", "0.1", "dropout must be a number in [0, 1), got '0.1'"),
        ("dropout", float("nan"), "dropout must be a number in [0, 1), got nan"),
        ("init", "ones", "unknown init 'ones'; known: zero, noise"),
    ],
)
def test_bad_dropout_and_init_are_named(field, value, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        SurmConfig(**{field: value})


def test_config_with_dropout_and_init_round_trips_json():
    config = SurmConfig(dropout=0.1, init="noise")
    assert SurmConfig.from_json(config.to_json()) == config
    assert SurmConfig.from_dict({"family": "circulant"}).dropout == 0.0  # older files: off, zero init


# -- init -------------------------------------------------------------------------------------------------


def two_layer_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(32, 32))
    model.add_module("act", nn.Tanh())
    model.add_module("fc2", nn.Linear(32, 48))
    return model.eval()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_init_zero_keeps_outputs_noise_changes_them_seeded(family, mode):
    base = two_layer_model()
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = base(x)
    targets = ["fc1"] if mode == "adapter" else ["fc1", "fc2"]

    def injected(init, seed):
        torch.manual_seed(seed)
        config = SurmConfig(family=family, mode=mode, target_modules=targets, budget=400, nearest=True, init=init)
        return inject(copy.deepcopy(base), config)

    zero = injected("zero", 0)
    with torch.no_grad():
        assert torch.equal(zero(x), want)
    noisy, again, other = injected("noise", 0), injected("noise", 0), injected("noise", 1)
    with torch.no_grad():
        out = noisy(x)
        assert rel_err(out, want) > 1e-6
        assert rel_err(out, want) < 0.1  # small: a perturbation, not a new model
        assert torch.equal(again(x), out)  # seeded by torch.manual_seed
        assert not torch.equal(other(x), out)
    # The parameters the zero init leaves at zero are exactly the ones drawn, from N(0, NOISE_STD^2).
    zero_params, noisy_params = dict(zero.named_parameters()), dict(noisy.named_parameters())
    drawn = [n for n, p in zero_params.items() if ".updates." in n and not p.any()]
    assert drawn
    values = torch.cat([noisy_params[n].detach().flatten() for n in drawn])
    assert values.ne(0).all()
    assert 0.7 * NOISE_STD < values.std() < 1.3 * NOISE_STD
    assert values.mean().abs() < 0.3 * NOISE_STD


# -- Hugging Face Conv1D (GPT-2) --------------------------------------------------------------------------


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_positions=32, num_labels=3, pad_token_id=0)
    return GPT2ForSequenceClassification(config).eval()


def tokens():
    return torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(9))


def logits(model):
    with torch.no_grad():
        return model(input_ids=tokens()).logits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_conv1d_equals_the_same_map_as_linear(family, product, mode):
    """A wrapped Conv1D computes what the same weights as an nn.Linear, wrapped with the same update, compute."""
    torch.manual_seed(0)
    conv = Conv1D(48 if mode == "lora" else 32, 32)
    nn.init.normal_(conv.bias)
    linear = nn.Linear(32, conv.nf)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    hyper = hyper_for(family, conv.nf, 32)
    a = SurmLinear(conv, family, hyper, mode=mode, product=product)
    b = SurmLinear(linear, family, hyper, mode=mode, product=product)
    randomise(a)
    b.updates.load_state_dict(a.updates.state_dict())
    if mode == "adapter":
        b.adapter_bias.data.copy_(a.adapter_bias)
    assert (a.out_features, a.in_features) == (conv.nf, 32)
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-6)
        assert rel_err(a(x), oracle_forward(a, x)) < 1e-5


def test_gpt2_preset_adapts_the_q_and_v_thirds_of_c_attn():
    model = inject(tiny_gpt2(), SurmConfig(family="circulant", budget=2000, nearest=True))
    layers = surm_layers(model)
    assert sorted(layers) == [f"transformer.h.{i}.attn.c_attn" for i in range(2)]
    assert all(layer.slices == [("q", 0, 64), ("v", 128, 192)] for layer in layers.values())
    assert model.surm_config.modules_to_save == ["score"]
    adapter = inject(tiny_gpt2(), SurmConfig(family="circulant", mode="adapter", budget=2000, nearest=True))
    assert sorted(surm_layers(adapter)) == sorted(
        f"transformer.h.{i}.{n}" for i in range(2) for n in ("attn.c_proj", "mlp.c_proj")
    )


def test_all_linear_on_gpt2_takes_every_conv1d_but_not_the_head():
    model = inject(tiny_gpt2(), SurmConfig(family="circulant", target_modules="all-linear", budget=5000, nearest=True))
    want = [
        f"transformer.h.{i}.{n}" for i in range(2) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert sorted(surm_layers(model)) == sorted(want)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gpt2_against_a_dense_oracle_merged_and_unmerged(family):
    """Logits equal those of the plain GPT-2 whose c_attn weights (in x out) hold W + (alpha S).T on the q and
    v columns, S from the families' definitions; merge gives the same, unmerge restores the weights."""
    base = tiny_gpt2()
    model = inject(copy.deepcopy(base), SurmConfig(family=family, budget=2000, nearest=True, alpha=0.5))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    oracle = copy.deepcopy(base)
    with torch.no_grad():
        for name, layer in surm_layers(model).items():
            weight = oracle.get_submodule(name).weight
            weight.copy_((weight.double() + oracle_delta(layer).T).float())
    want = logits(oracle)
    assert rel_err(want, logits(base)) > 1e-4  # the update is visible
    assert rel_err(logits(model), want) < 1e-5
    merge(model)
    assert rel_err(logits(model), want) < 1e-5
    unmerge(model)
    for name, layer in surm_layers(model).items():
        torch.testing.assert_close(layer.base_layer.weight, base.get_submodule(name).weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_gpt2_adapter_save_load_round_trip(mode, tmp_path):
    base = tiny_gpt2()
    model = inject(copy.deepcopy(base), SurmConfig(family="monarch", mode=mode, budget=3000, nearest=True))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    with torch.no_grad():
        nn.init.normal_(model.score.weight, std=0.1)
    want = logits(model)
    save_adapter(model, tmp_path / "adapter")
    fresh = tiny_gpt2(seed=1)
    fresh.load_state_dict(base.state_dict())
    assert rel_err(logits(fresh), want) > 1e-4
    load_adapter(fresh, tmp_path / "adapter")
    torch.testing.assert_close(logits(fresh), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("merged", [False, True])
def test_gpt2_state_dict_loads_into_the_plain_class(merged):
    """The plain GPT2 class loads an injected model's state dict (effective weight, Conv1D layout) as the
    fine-tuned model."""
    model = inject(tiny_gpt2(), SurmConfig(family="lowrank", budget=3000, nearest=True))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    want = logits(model)
    if merged:
        merge(model)
    plain = tiny_gpt2(seed=2)
    missing, _ = plain.load_state_dict(model.state_dict(), strict=False)  # the update tensors are extra
    assert missing == []
    torch.testing.assert_close(logits(plain), want, rtol=1e-5, atol=1e-6)


def test_gpt2_lora_export_loads_in_peft_as_the_same_model(tmp_path):
    """The real PEFT library, given the exported LoRA (its Conv1D layers fan_in_fan_out), computes our logits."""
    from peft import PeftModel

    from surmlab import export_lora

    base = tiny_gpt2()
    model = inject(copy.deepcopy(base), SurmConfig(family="lowrank", budget=3000, nearest=True))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    want = logits(model)
    export_lora(model, tmp_path / "lora", verbose=False)
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["fan_in_fan_out"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fan_in_fan_out")  # PEFT's warning when it corrects the flag
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "lora").eval()
    assert rel_err(logits(base), want) > 1e-4
    torch.testing.assert_close(logits(peft_model), want, rtol=1e-5, atol=1e-6)


# -- disable_adapter --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ["circulant", "lowrank", "sparse_spectrum"])
def test_disable_adapter_gives_the_base_model_then_the_adapted_one(family, mode):
    base = tiny_gpt2()
    model = inject(copy.deepcopy(base), SurmConfig(family=family, mode=mode, budget=3000, nearest=True))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    with torch.no_grad():
        nn.init.normal_(model.score.weight, std=0.1)
    head_only = copy.deepcopy(base)  # the oracle: the base model with the trained head
    head_only.score.load_state_dict(model.score.state_dict())
    adapted = logits(model)
    assert rel_err(adapted, logits(head_only)) > 1e-4
    with disable_adapter(model) as same:
        assert same is model
        torch.testing.assert_close(logits(model), logits(head_only), rtol=0, atol=0)
        with disable_adapter(model):  # nested: the inner exit leaves the outer block's state
            pass
        torch.testing.assert_close(logits(model), logits(head_only), rtol=0, atol=0)
    torch.testing.assert_close(logits(model), adapted, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), disable_adapter(model):
        raise RuntimeError("boom")
    torch.testing.assert_close(logits(model), adapted, rtol=0, atol=0)  # back on after an error too


def test_disable_adapter_refuses_merged_models_and_merging_inside():
    model = inject(tiny_gpt2(), SurmConfig(family="circulant", budget=3000, nearest=True))
    for layer in surm_layers(model).values():
        randomise(layer, std=0.02)
    weights = {n: layer.base_layer.weight.clone() for n, layer in surm_layers(model).items()}
    with disable_adapter(model), pytest.raises(ValueError, match=r"cannot merge inside disable_adapter\(\)"):
        merge(model)
    assert all(torch.equal(layer.base_layer.weight, weights[n]) for n, layer in surm_layers(model).items())
    merge(model)
    pattern = r"cannot disable the adapter of a merged model \(transformer\.h\.0\.attn\.c_attn is merged"
    with pytest.raises(ValueError, match=pattern), disable_adapter(model):
        pass
    assert not any(layer.disabled for layer in surm_layers(model).values())
    with pytest.raises(ValueError, match="model has no SURM layers"), disable_adapter(tiny_gpt2()):
        pass


# -- dropout in the lab's training loop --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["surm-circulant", "lora"])
def test_prepare_passes_dropout_to_every_layer(method):
    from surmlab.methods.prepare import prepare

    prepared = prepare(method, tiny_gpt2(), head=["score"], budget=3000, dropout=0.2)
    layers = surm_layers(prepared.model)
    assert layers and all(layer.dropout.p == 0.2 for layer in layers.values())


@pytest.mark.parametrize("method", ["peft-lora", "bitfit", "full"])
def test_dropout_on_a_method_without_it_is_refused_by_name(method):
    from surmlab.methods.prepare import prepare

    hyper = {"rank": 2} if method == "peft-lora" else None
    with pytest.raises(ValueError, match=f"dropout applies to surm-\\* methods and lora; {method} takes none"):
        prepare(method, tiny_gpt2(), head=["score"], hyper=hyper, dropout=0.1)


def test_resume_with_dropout_logs_what_the_uninterrupted_run_logs(tmp_path, monkeypatch):
    """Adapter dropout draws from torch's RNG, which checkpoints restore: a run stopped after step 3 and
    resumed logs every loss of the uninterrupted run, bit for bit."""
    from surmlab.runs import RunDir
    from surmlab.train import TrainConfig, train

    common = {"backbone": "tiny-bert", "task": "rotten-tomatoes", "method": "surm-circulant", "budget": "2k"}
    common |= {"max_train": 64, "max_eval": 16, "max_length": 16, "batch_size": 8, "log_every": 1}
    common |= {"max_steps": 8, "checkpoint_every": 4, "lr": 5e-2}

    def losses(run_dir):
        return [(r["step"], r["loss"]) for r in RunDir(run_dir).metrics() if "loss" in r]

    whole = train(TrainConfig(**common, dropout=0.5, runs_dir=str(tmp_path / "a")), progress=False)
    log = RunDir.log

    def log_then_stop(run, record):  # the user's stop request (``surmlab stop``), made right after step 3
        log(run, record)
        if record.get("step") == 3 and "loss" in record:
            run.request_stop()

    monkeypatch.setattr(RunDir, "log", log_then_stop)
    part = train(TrainConfig(**common, dropout=0.5, runs_dir=str(tmp_path / "b")), progress=False)
    monkeypatch.setattr(RunDir, "log", log)
    assert part.status == "stopped" and part.step == 3
    resumed = train(TrainConfig(), resume=part.run_dir, progress=False)
    assert resumed.step == 8 and RunDir(part.run_dir).config().train.dropout == 0.5
    assert losses(part.run_dir) == losses(whole.run_dir)
    plain = train(TrainConfig(**common, runs_dir=str(tmp_path / "c")), progress=False)
    assert losses(plain.run_dir)[1:] != losses(whole.run_dir)[1:]  # the adapter dropout is there to be resumed
