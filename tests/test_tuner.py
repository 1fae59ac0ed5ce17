"""The tuner on real model classes (timm ViT-S, Hugging Face BERT), built small and without downloads."""

import copy
import json
import math
import re
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from oracles import oracle_dense, rel_err
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

import surmlab
from surmlab import BudgetError, SurmConfig, SurmLinear, inject, load_adapter, merge, save_adapter, unload, unmerge
from surmlab.budget import Target, solve
from surmlab.structures import FAMILIES
from surmlab.tuner import surm_layers

FAMILY_NAMES = list(FAMILIES)  # every registered family
MODES = ["lora", "adapter"]
BACKBONES = ["vit", "bert"]
DEPTH = 2
BUDGET = {"vit": "20k", "bert": 3000}
HEAD = {"vit": "head", "bert": "classifier"}


def build_vit(seed=0, width=384):
    torch.manual_seed(seed)
    extra = {} if width == 384 else {"embed_dim": width, "num_heads": width // 64}
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=DEPTH, **extra
    )
    return model.eval()


def build_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=DEPTH,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


def build(backbone, seed=0):
    return build_vit(seed) if backbone == "vit" else build_bert(seed)


def inputs(backbone):
    g = torch.Generator().manual_seed(123)
    if backbone == "vit":
        return torch.randn(2, 3, 32, 32, generator=g)
    return torch.randint(0, 100, (2, 8), generator=g)


def labels(backbone):
    return torch.tensor([1, 2])


def run(model, x):
    out = model(x) if x.is_floating_point() else model(input_ids=x).logits
    return out


def surm_parameters(model):
    return {n: p for n, p in model.named_parameters() if ".updates." in n or n.endswith("adapter_bias")}


@torch.no_grad()
def perturb(model, std=0.02, head=None):
    """Random SURM parameters (and optionally head), so S != 0 and every check has something to see."""
    for p in surm_parameters(model).values():
        nn.init.normal_(p, std=std)
    if head is not None:
        for p in model.get_submodule(head).parameters():
            nn.init.normal_(p, std=std)


def expected_targets(backbone, mode):
    """The targets the presets should pick, written out by hand (shape of S: out x in)."""
    if backbone == "vit":
        names = ["attn.qkv[q]", "attn.qkv[v]"] if mode == "lora" else ["attn.proj", "mlp.fc2"]
        return [Target(f"blocks.{i}.{n}", 384, 384) for i in range(DEPTH) for n in names]
    names = ["attention.self.query", "attention.self.value"]
    if mode == "adapter":
        names = ["attention.output.dense", "output.dense"]
    return [Target(f"bert.encoder.layer.{i}.{n}", 64, 64) for i in range(DEPTH) for n in names]


def wrapped_names(backbone, mode):
    return sorted({t.name.split("[")[0] for t in expected_targets(backbone, mode)})


def config_for(backbone, family, mode, **kw):
    return SurmConfig(family=family, mode=mode, budget=BUDGET[backbone], nearest=True, **kw)


def assert_close_rel(got, want, tol=1e-5):
    err = rel_err(got, want)
    assert err < tol, f"relative error {err:.3g} >= {tol}"


def prepared(backbone, family, mode, **kw):
    base = build(backbone)
    model = inject(copy.deepcopy(base), config_for(backbone, family, mode, **kw))
    return base, model


combos = pytest.mark.parametrize(
    ("backbone", "family", "mode"), [(b, f, m) for b in BACKBONES for f in FAMILY_NAMES for m in MODES]
)


# -- step 0, counts, training ------------------------------------------------------------------------


@combos
def test_step0_unchanged_and_count_as_promised(backbone, family, mode):
    """At step 0 outputs equal the base model's; trainable minus head = the solver's promise."""
    base = build(backbone)
    model = copy.deepcopy(base)
    config = config_for(backbone, family, mode)
    promised = surmlab.plan_for(model, config)
    inject(model, config)
    x = inputs(backbone)
    with torch.no_grad():
        torch.testing.assert_close(run(model, x), run(base, x), rtol=0, atol=1e-6)
    assert sorted(surm_layers(model)) == wrapped_names(backbone, mode)
    head = sum(p.numel() for p in model.get_submodule(HEAD[backbone]).parameters())
    trainable, total = surmlab.trainable_parameters(model)
    by_hand = solve(family, expected_targets(backbone, mode), BUDGET[backbone], mode, nearest=True)
    assert trainable - head == promised.total == by_hand.total == model.surm_plan.total
    assert sum(p.numel() for p in surm_parameters(model).values()) == promised.total
    assert total == sum(p.numel() for p in base.parameters()) + promised.total
    # nothing but the updates and the head trains
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in surm_parameters(model) or name.startswith(HEAD[backbone] + ".")), name


@combos
def test_one_adamw_step_changes_outputs(backbone, family, mode):
    """Every update receives a non-zero gradient and one step on the updates alone moves the outputs."""
    _, model = prepared(backbone, family, mode)
    x = inputs(backbone)
    with torch.no_grad():
        before = run(model, x)
    params = list(surm_parameters(model).values())
    optimiser = torch.optim.AdamW(params, lr=1e-2)
    F.cross_entropy(run(model, x), labels(backbone)).backward()
    for name, layer in surm_layers(model).items():
        for slice_name, update in layer.updates.items():
            grad = sum(p.grad.abs().sum().item() for p in update.parameters() if p.grad is not None)
            assert grad > 0, f"{name}[{slice_name}] got no gradient"
    optimiser.step()
    with torch.no_grad():
        after = run(model, x)
    assert (after - before).abs().max() > 1e-3 * before.abs().max()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_merge_unmerge_round_trip(backbone, family):
    """LoRA mode: merged output == unmerged output; unmerge restores the base weights."""
    base, model = prepared(backbone, family, "lora")
    perturb(model)
    x = inputs(backbone)
    original = {n: p.detach().clone() for n, p in base.named_parameters()}
    with torch.no_grad():
        unmerged = run(model, x)
        merge(model)
        merged_out = run(model, x)
        merge(model)  # idempotent
        twice = run(model, x)
    assert_close_rel(merged_out, unmerged)
    torch.testing.assert_close(twice, merged_out)
    changed = [n for n, layer in surm_layers(model).items() if not torch.equal(layer.weight, original[f"{n}.weight"])]
    assert sorted(changed) == wrapped_names(backbone, "lora")
    unmerge(model)
    for name, layer in surm_layers(model).items():
        torch.testing.assert_close(layer.base_layer.weight, original[f"{name}.weight"], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert_close_rel(run(model, x), unmerged)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_adapter_mode_cannot_merge(family):
    _, model = prepared("bert", family, "adapter")
    with pytest.raises(ValueError, match=r"adapter mode .* cannot be merged"):
        merge(model)
    with pytest.raises(ValueError, match="cannot be merged"):
        unload(model, merge=True)


@combos
def test_save_load_round_trip(backbone, family, mode, tmp_path):
    """An adapter saved and loaded into a fresh model on the same base weights reproduces the outputs."""
    base, model = prepared(backbone, family, mode)
    perturb(model, head=HEAD[backbone])
    x = inputs(backbone)
    with torch.no_grad():
        want = run(model, x)
    save_adapter(model, tmp_path / "adapter")
    fresh = build(backbone, seed=1)
    fresh.load_state_dict(base.state_dict())
    with torch.no_grad():
        assert (run(fresh, x) - want).abs().max() > 1e-6  # the check below can fail
    load_adapter(fresh, tmp_path / "adapter")
    assert fresh.surm_config == model.surm_config
    with torch.no_grad():
        torch.testing.assert_close(run(fresh, x), want, rtol=1e-6, atol=1e-6)
    # loading again into an injected model overwrites its updates
    perturb(fresh)
    load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(run(fresh, x), want, rtol=1e-6, atol=1e-6)


@combos
def test_unload_restores_module_types(backbone, family, mode):
    base, model = prepared(backbone, family, mode)
    types = {n: type(m) for n, m in base.named_modules()}
    perturb(model)
    x = inputs(backbone)
    unload(model)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert not hasattr(model, "surm_config")
    with torch.no_grad():
        torch.testing.assert_close(run(model, x), run(base, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_unload_with_merge_keeps_the_update(backbone, family):
    _, model = prepared(backbone, family, "lora")
    perturb(model)
    x = inputs(backbone)
    with torch.no_grad():
        adapted = run(model, x)
    unload(model, merge=True)
    assert not surm_layers(model)
    with torch.no_grad():
        assert_close_rel(run(model, x), adapted)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bf16_backbone(family, mode):
    """A bf16 model: updates stay fp32, outputs stay bf16 and unchanged at step 0, gradients reach S."""
    base = build_bert().to(torch.bfloat16)
    x = inputs("bert")
    with torch.no_grad():
        want = run(base, x)
    for path in ("fft", "dense"):
        model = inject(copy.deepcopy(base), config_for("bert", family, mode, product=path))
        with torch.no_grad():
            got = run(model, x)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        F.cross_entropy(run(model, x).float(), labels("bert")).backward()
        for name, p in surm_parameters(model).items():
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, name
        assert sum(p.grad.abs().sum().item() for p in surm_parameters(model).values()) > 0


@pytest.mark.parametrize("mode", MODES)
def test_summary_rows_add_up(mode):
    _, model = prepared("vit", "ldr", mode)
    rows = surmlab.summary(model)
    assert sum(r["params"] for r in rows) == surmlab.trainable_parameters(model)[0]
    layers = sorted(r["layer"] for r in rows if r["kind"] != "saved module")
    assert layers == sorted(t.name for t in expected_targets("vit", mode))
    assert [r["layer"] for r in rows if r["kind"] == "saved module"] == ["head"]


# -- fused qkv slices ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_qkv_slices_touch_only_q_and_v_rows(family):
    """qkv_slices {attn.qkv: [q, v]}: merged W = W0 + alpha * [S_q; 0; S_v] (S from the scipy/numpy oracle)."""
    alpha = 0.5
    base = build_vit()
    config = SurmConfig(
        family=family,
        target_modules=["attn.qkv"],
        qkv_slices={"attn.qkv": ["q", "v"]},
        alpha=alpha,
        budget="20k",
        nearest=True,
    )
    model = inject(copy.deepcopy(base), config)
    perturb(model, std=0.5)
    d = 384
    x = torch.randn(2, 5, d)
    for i in range(DEPTH):
        layer = model.blocks[i].attn.qkv
        assert isinstance(layer, SurmLinear) and sorted(layer.updates) == ["q", "v"]
        w0 = base.blocks[i].attn.qkv.weight.detach().double().numpy()
        expected = w0.copy()
        expected[:d] += alpha * oracle_dense(layer.updates["q"])
        expected[2 * d :] += alpha * oracle_dense(layer.updates["v"])
        bias = base.blocks[i].attn.qkv.bias.detach().double().numpy()
        with torch.no_grad():
            assert_close_rel(layer(x), x.double().numpy() @ expected.T + bias)
    merge(model)
    for i in range(DEPTH):
        merged = model.blocks[i].attn.qkv.weight.detach()
        w0 = base.blocks[i].attn.qkv.weight.detach()
        assert torch.equal(merged[d : 2 * d], w0[d : 2 * d]), "k rows changed"
        assert not torch.equal(merged[:d], w0[:d]) and not torch.equal(merged[2 * d :], w0[2 * d :])
        layer = model.blocks[i].attn.qkv
        expected = w0.double().numpy().copy()
        expected[:d] += alpha * oracle_dense(layer.updates["q"])
        expected[2 * d :] += alpha * oracle_dense(layer.updates["v"])
        assert_close_rel(merged, expected)


def test_vit_preset_adapts_q_and_v_slices():
    _, model = prepared("vit", "circulant", "lora")
    assert model.surm_config.qkv_slices == {"attn.qkv": ["q", "v"]}
    assert sorted(model.blocks[0].attn.qkv.updates) == ["q", "v"]
    assert [s for s in model.blocks[0].attn.qkv.slices] == [("q", 0, 384), ("v", 768, 1152)]


# -- product path ------------------------------------------------------------------------------------


@combos
def test_fft_and_dense_paths_agree(backbone, family, mode):
    """product='fft' and product='dense' give the same outputs and the same gradients."""
    base = build(backbone)
    a = inject(copy.deepcopy(base), config_for(backbone, family, mode, product="fft"))
    b = inject(copy.deepcopy(base), config_for(backbone, family, mode, product="dense"))
    perturb(a, std=0.1)
    b.load_state_dict(a.state_dict())
    x = inputs(backbone)
    outs = []
    for model in (a, b):
        out = run(model, x)
        F.cross_entropy(out, labels(backbone)).backward()
        outs.append(out.detach())
    assert_close_rel(outs[0], outs[1])
    grads_a, grads_b = surm_parameters(a), surm_parameters(b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert_close_rel(grads_a[name].grad, grads_b[name].grad, tol=1e-4)


# -- target selection --------------------------------------------------------------------------------


def test_all_linear_wraps_every_linear_but_the_head():
    base = build_vit()
    model = inject(copy.deepcopy(base), SurmConfig(family="circulant", target_modules="all-linear", hyper={}))
    linear = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "head"]
    assert sorted(surm_layers(model)) == sorted(linear)
    assert isinstance(model.head, nn.Linear) and model.head.weight.requires_grad
    # non-square layers (fc1: 1536x384, fc2: 384x1536) get structured updates of their own shape
    assert model.blocks[0].mlp.fc1.updates["full"].dense().shape == (1536, 384)
    assert model.blocks[0].mlp.fc2.updates["full"].dense().shape == (384, 1536)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_non_square_bert_layers(family):
    """BERT's intermediate (128x64) and output (64x128) layers: step 0, count, merge."""
    base = build_bert()
    config = SurmConfig(family=family, target_modules=["intermediate.dense", "output.dense"], budget=3000, nearest=True)
    model = inject(copy.deepcopy(base), config)
    targets = [
        Target(f"bert.encoder.layer.{i}.{name}", *shape)
        for i in range(DEPTH)
        for name, shape in [
            ("attention.output.dense", (64, 64)),
            ("intermediate.dense", (128, 64)),
            ("output.dense", (64, 128)),
        ]
    ]
    assert sorted(surm_layers(model)) == sorted(t.name for t in targets)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert surmlab.trainable_parameters(model)[0] - head == solve(family, targets, 3000, nearest=True).total
    x = inputs("bert")
    with torch.no_grad():
        torch.testing.assert_close(run(model, x), run(base, x), rtol=0, atol=1e-6)
    perturb(model)
    with torch.no_grad():
        adapted = run(model, x)
        assert (adapted - run(base, x)).abs().max() > 0
        merge(model)
        assert_close_rel(run(model, x), adapted)


def test_regex_targets():
    base = build_vit()
    model = inject(
        copy.deepcopy(base), SurmConfig(family="lowrank", target_modules=r"blocks\.\d+\.mlp\.fc\d", hyper={})
    )
    assert sorted(surm_layers(model)) == [f"blocks.{i}.mlp.fc{j}" for i in range(DEPTH) for j in (1, 2)]


def test_suffix_target_without_qkv_on_vit():
    """A ViT lora config that does not target attn.qkv must not trip over the preset's qkv slices."""
    model = inject(build_vit(), SurmConfig(family="circulant", target_modules=["mlp.fc1"], hyper={"block_size": 64}))
    assert sorted(surm_layers(model)) == [f"blocks.{i}.mlp.fc1" for i in range(DEPTH)]


@pytest.mark.parametrize("exclude", [["attn.qkv"], r".*\.attn\.qkv"], ids=["suffix", "regex"])
def test_exclude(exclude):
    model = inject(build_vit(), SurmConfig(family="circulant", target_modules="all-linear", exclude=exclude))
    names = sorted(surm_layers(model))
    assert names and not any(n.endswith("attn.qkv") for n in names)
    assert isinstance(model.blocks[0].attn.qkv, nn.Linear)
    assert "blocks.0.attn.proj" in names


def test_exclude_with_suffix_list_on_bert():
    model = inject(build_bert(), SurmConfig(family="kronecker", exclude=["layer.0.attention.self.value"]))
    assert sorted(surm_layers(model)) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.1.attention.self.query",
        "bert.encoder.layer.1.attention.self.value",
    ]


# -- PEFT parity --------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self, in_features=24, out_features=16):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.out = nn.Linear(out_features, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


def test_lowrank_matches_peft_lora():
    """lowrank with PEFT's lora_A -> a, lora_B -> b and alpha = lora_alpha / r reproduces PEFT LoRA."""
    from peft import LoraConfig, get_peft_model

    r, lora_alpha = 4, 8
    base = Tiny()
    peft_model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["fc"], lora_dropout=0.0)
    )
    peft_layer = peft_model.base_model.model.fc
    nn.init.normal_(peft_layer.lora_B["default"].weight)  # PEFT zero-inits B
    ours = inject(
        copy.deepcopy(base),
        SurmConfig(family="lowrank", target_modules=["fc"], hyper={"rank": r}, alpha=lora_alpha / r),
    )
    update = ours.fc.updates["full"]
    with torch.no_grad():
        update.a.copy_(peft_layer.lora_A["default"].weight)
        update.b.copy_(peft_layer.lora_B["default"].weight)
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        assert_close_rel(ours(x), peft_model(x))
        assert_close_rel(ours.fc.delta_weight(), peft_layer.get_delta_weight("default"))
        assert (ours(x) - base(x)).abs().max() > 1e-3


def test_circulant_matches_peft_c3a():
    """circulant matches PEFT C3A's delta weight.

    PEFT's get_circulant_fast computes fft(ifft(x) * fft(w)).real, i.e. y_i = sum_k w[(k - i) mod b] x_k:
    its kernel w is the first *row* of each block, ours c is the first column (C[i, j] = c[(i - j) mod b]).
    So c[m] = w[(-m) mod b] (reverse, then roll by one), and PEFT divides by in_features: alpha = 1 / in.
    """
    from peft import C3AConfig, get_peft_model

    b, in_features, out_features = 8, 32, 16
    base = Tiny(in_features, out_features)
    peft_model = get_peft_model(copy.deepcopy(base), C3AConfig(block_size=b, target_modules=["fc"]))
    peft_layer = peft_model.base_model.model.fc
    kernel = peft_layer.c3a_kernel["default"]
    assert kernel.shape == (out_features // b, in_features // b, b)
    nn.init.normal_(kernel)
    layer = SurmLinear(copy.deepcopy(base.fc), "circulant", {"block_size": b}, alpha=1 / in_features, product="fft")
    with torch.no_grad():
        layer.updates["full"].weight.copy_(kernel[..., (-torch.arange(b)) % b])
    with torch.no_grad():
        assert_close_rel(layer.delta_weight(), peft_layer.get_delta_weight("default"))
        x = torch.randn(2, 5, in_features)
        assert_close_rel(layer(x), peft_layer(x))
    # the identity mapping would not do: the test can tell the layouts apart
    with torch.no_grad():
        layer.updates["full"].weight.copy_(kernel)
        assert rel_err(layer.delta_weight(), peft_layer.get_delta_weight("default")) > 1e-2


# -- bad input ---------------------------------------------------------------------------------------


def test_unknown_family_lists_known():
    with pytest.raises(ValueError, match="unknown structure 'foo'") as info:
        SurmConfig(family="foo")
    assert all(name in str(info.value) for name in FAMILY_NAMES)


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("mode", "prefix", "unknown mode 'prefix'; known: lora, adapter"),
        ("product", "gpu", "unknown product 'gpu'"),
        ("activation", "relu", "unknown activation 'relu'"),
        ("budget", "lots", "cannot read budget 'lots'"),
        ("target_modules", [], "target_modules is empty"),
        ("qkv_slices", {"attn.qkv": ["x"]}, "distinct slices among q, k, v"),
        ("qkv_slices", {"attn.qkv": ["q", "q"]}, "distinct slices among q, k, v"),
        ("alpha", "big", "alpha must be a finite number, got 'big'"),
        ("alpha", float("nan"), "alpha must be a finite number, got nan"),
        ("target_modules", 5, "target_modules must be a list of suffixes, a regex string, 'all-linear' or None; got 5"),
        ("target_modules", ["query", 3], "target_modules must be a list of suffixes"),
    ],
)
def test_config_validation(field, value, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        SurmConfig(**{field: value})


def test_qkv_slices_rejected_in_adapter_mode():
    with pytest.raises(ValueError, match="qkv_slices apply to the lora mode"):
        SurmConfig(mode="adapter", qkv_slices={"attn.qkv": ["q"]})


def test_config_json_round_trip():
    config = SurmConfig(family="ldr", hyper={"block_size": 8, "rank": 2}, qkv_slices={"attn.qkv": ["q", "v"]}, alpha=2)
    assert SurmConfig.from_json(config.to_json()) == config


def test_from_dict_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown SurmConfig fields \['blocksize', 'rank'\]"):
        SurmConfig.from_dict({"family": "circulant", "blocksize": 8, "rank": 2})


def test_non_dividing_block_size_names_layer_and_options():
    with pytest.raises(ValueError) as info:
        inject(build_vit(), SurmConfig(family="circulant", hyper={"block_size": 7}))
    message = str(info.value)
    assert "blocks.0.attn.qkv[q]" in message and "block_size=7" in message and "384x384" in message
    valid = ", ".join(str(k) for k in range(1, 385) if 384 % k == 0)
    assert valid in message


def test_infeasible_budget_in_inject():
    """ViT lora q,v at depth 2: four 384x384 slices, so circulant spans 4*384 .. 4*384*384."""
    model = build_vit()
    for budget in (100, 10**7):
        with pytest.raises(BudgetError) as info:
            inject(model, SurmConfig(family="circulant", budget=budget))
        numbers = {int(s.replace(",", "")) for s in re.findall(r"\d[\d,]*", str(info.value))}
        assert {4 * 384, 4 * 384 * 384, budget} <= numbers
    # the failed call left the model as it was: nothing wrapped, nothing frozen
    assert not surm_layers(model) and all(p.requires_grad for p in model.parameters())


def test_hyper_and_budget_together():
    with pytest.raises(ValueError, match="either hyper"):
        inject(build_bert(), SurmConfig(hyper={"block_size": 8}, budget=1000))


@pytest.mark.parametrize("target", [["no_such_layer"], r"no_such\..*"], ids=["suffix", "regex"])
def test_target_matching_nothing_is_named(target):
    with pytest.raises(ValueError, match="no_such") as info:
        inject(build_bert(), SurmConfig(target_modules=target))
    assert "match" in str(info.value)


def test_target_that_is_not_linear():
    with pytest.raises(ValueError, match=r"blocks\.0\.attn is a Attention; only nn.Linear"):
        inject(build_vit(), SurmConfig(target_modules=r"blocks\.0\.attn"))


def test_qkv_slices_on_non_fused_layer():
    with pytest.raises(ValueError, match=r"qkv_slices given for blocks\.0\.attn\.proj .*not a fused qkv layer"):
        inject(build_vit(), SurmConfig(target_modules=["attn.proj"], qkv_slices={"attn.proj": ["q"]}))
    with pytest.raises(ValueError, match=r"attention\.self\.query .*not a fused qkv layer"):
        inject(build_bert(), SurmConfig(qkv_slices={"attention.self.query": ["q"]}))


def test_qkv_slices_for_an_untargeted_layer():
    """Explicit qkv_slices naming a layer that is not targeted is an error (a preset's are not)."""
    with pytest.raises(ValueError, match=re.escape("qkv_slices names 'attn.qkv'")):
        inject(build_vit(), SurmConfig(target_modules=["attn.proj"], qkv_slices={"attn.qkv": ["q"]}))


def test_model_without_preset_needs_targets():
    with pytest.raises(ValueError, match=r"no target preset for Tiny; give target_modules.*fc, out"):
        inject(Tiny(), SurmConfig())


def test_target_that_is_also_a_saved_module():
    with pytest.raises(ValueError, match=r"head is both a target and in modules_to_save \['head'\]"):
        inject(build_vit(), SurmConfig(target_modules=["head"]))


def test_inject_twice():
    model = inject(build_bert(), SurmConfig())
    with pytest.raises(ValueError, match="already carries SURM layers"):
        inject(model, SurmConfig())


def test_merge_without_surm_layers():
    with pytest.raises(ValueError, match="no SURM layers"):
        merge(build_bert())


def test_load_vit_adapter_into_bert(tmp_path):
    save_adapter(inject(build_vit(), SurmConfig()), tmp_path)
    with pytest.raises(ValueError, match="saved for a VisionTransformer, not for this BertForSequenceClassification"):
        load_adapter(build_bert(), tmp_path)


def test_load_vit_adapter_into_narrower_vit(tmp_path):
    """A ViT-S (384) adapter into a ViT of width 192: the message names the layer and both shapes."""
    save_adapter(inject(build_vit(), SurmConfig(hyper={"block_size": 64})), tmp_path)
    narrow = build_vit(width=192)
    with pytest.raises(ValueError, match=r"adapter layer blocks\.0\.attn\.qkv\[q\] is 384x384 .* 192x192"):
        load_adapter(narrow, tmp_path)
    assert not surm_layers(narrow)


@pytest.mark.parametrize("mode", MODES)
def test_load_adapter_into_an_injected_model_equals_a_fresh_load(mode, tmp_path):
    """The file's alpha, activation and hyper-parameters win over what the model carried."""
    saved = perturbed(
        inject(build_bert(), SurmConfig(mode=mode, hyper={"block_size": 16}, alpha=0.5, activation="tanh"))
    )
    save_adapter(saved, tmp_path / "a")
    x = inputs("bert")
    fresh = load_adapter(build_bert(), tmp_path / "a")
    other = inject(build_bert(), SurmConfig(family="lowrank", mode=mode, alpha=2.0, activation="gelu"))
    loaded = load_adapter(other, tmp_path / "a")
    torch.testing.assert_close(run(loaded, x), run(fresh, x), rtol=0, atol=0)
    torch.testing.assert_close(run(loaded, x), run(saved, x), rtol=0, atol=0)
    assert {(layer.alpha, layer.activation) for layer in surm_layers(loaded).values()} == {(0.5, "tanh")}
    save_adapter(loaded, tmp_path / "b")  # and the next save writes the values it runs with
    config = surmlab.tuner.read_adapter_config(tmp_path / "b")["config"]
    assert (config["family"], config["alpha"], config["activation"]) == ("circulant", 0.5, "tanh")


def perturbed(model):
    perturb(model, head=HEAD["bert"])
    return model


def test_load_adapter_into_a_merged_model_is_refused_and_harmless(tmp_path):
    save_adapter(perturbed(inject(build_bert(), SurmConfig())), tmp_path)
    model = perturbed(inject(build_bert(), SurmConfig()))
    x = inputs("bert")
    before = run(model, x)
    merge(model)
    with pytest.raises(ValueError, match=r"into a merged model .*unmerge\(\) it first"):
        load_adapter(model, tmp_path)
    unload(model)  # unmerges: the base weights are the pretrained ones again
    for (name, p), (_, q) in zip(model.named_parameters(), build_bert().named_parameters(), strict=True):
        if not name.startswith("classifier"):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert before.shape == run(model, x).shape


def test_failed_load_keeps_the_previous_adapter(tmp_path):
    save_adapter(inject(build_bert(), SurmConfig()), tmp_path)
    meta = json.loads((tmp_path / "surm_config.json").read_text())
    meta["layers"]["bert.encoder.layer.9.attention.self.query"] = [64, 64]  # a layer this BERT lacks
    (tmp_path / "surm_config.json").write_text(json.dumps(meta))
    model = perturbed(inject(build_bert(), SurmConfig(hyper={"block_size": 8})))
    x = inputs("bert")
    before = run(model, x)
    with pytest.raises(
        ValueError, match=r"adapter layer bert\.encoder\.layer\.9\.attention\.self\.query .*does not exist"
    ):
        load_adapter(model, tmp_path)
    torch.testing.assert_close(run(model, x), before, rtol=0, atol=0)
    assert model.surm_config.hyper == {"block_size": 8} and len(surm_layers(model)) == 2 * DEPTH


def test_adapter_without_the_head_is_refused(tmp_path):
    trained = inject(build_bert(), SurmConfig(modules_to_save=[]))
    perturb(trained)  # the updates only: the head stays as built
    save_adapter(trained, tmp_path)
    with pytest.raises(
        ValueError, match=r"holds no weights for this BertForSequenceClassification's head \['classifier'\]"
    ):
        load_adapter(build_bert(seed=1), tmp_path)
    loaded = load_adapter(build_bert(), tmp_path, allow_missing_head=True)  # same seed: the same head
    torch.testing.assert_close(run(loaded, inputs("bert")), run(trained, inputs("bert")), rtol=0, atol=0)


class TorchTransformer(nn.Module):
    """torch's own encoder: its attention reads out_proj.weight and its fast path reads linear1.weight."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


@pytest.mark.parametrize(("target", "parent"), [("linear1", "TransformerEncoderLayer")])
def test_layers_read_through_weight_are_refused(target, parent):  # MultiheadAttention.out_proj: test_layer_types
    with pytest.raises(
        ValueError, match=rf"target encoder\.layers\.0\.(self_attn\.)?{target} cannot be adapted: its parent {parent}"
    ):
        inject(TorchTransformer(), SurmConfig(target_modules=[target]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_empty_batch_gives_an_empty_output(family, mode):
    base = nn.Linear(32, 32)
    layer = SurmLinear(base, family, {}, mode, product="fft")
    for shape in [(0, 32), (2, 0, 32)]:
        x = torch.zeros(shape, requires_grad=True)
        out = layer(x)
        assert out.shape == base(x).shape
        out.sum().backward()


def test_merge_while_other_threads_run_forwards():
    """200 forwards in 4 threads while a fifth merges and unmerges: every output is the model's."""
    import threading

    model = perturbed(inject(build_bert(), SurmConfig(product="fft")))
    x = inputs("bert")
    want = run(model, x).detach()
    bad, stop = [], threading.Event()

    def flip():
        while not stop.is_set():
            merge(model)
            unmerge(model)

    def forwards():
        for _ in range(50):
            with torch.no_grad():
                got = run(model, x)
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                bad.append((got - want).abs().max().item())

    flipper = threading.Thread(target=flip)
    workers = [threading.Thread(target=forwards) for _ in range(4)]
    flipper.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    flipper.join()
    assert not bad, f"{len(bad)} of 200 outputs were wrong (max error {max(bad):.3g})"


def test_surm_layers_deep_copy_and_pickle():
    import pickle

    model = perturbed(inject(build_bert(), SurmConfig()))
    x = inputs("bert")
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(run(clone, x), run(model, x), rtol=0, atol=0)
        merge(clone)  # the copy has a working lock of its own


def test_load_adapter_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("no surm_config.json in")):
        load_adapter(build_bert(), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing does not exist: give the folder"):
        load_adapter(build_bert(), tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"file is a file: give the folder"):
        load_adapter(build_bert(), tmp_path / "file")


def test_save_adapter_writes_safetensors_and_json(tmp_path):
    model = inject(build_bert(), SurmConfig(family="circulant", hyper={"block_size": 16}))
    save_adapter(model, tmp_path)
    meta = surmlab.tuner.read_adapter_config(tmp_path)
    assert meta["backbone"] == "BertForSequenceClassification"
    assert meta["config"]["hyper"] == {"block_size": 16} and meta["config"]["budget"] is None
    head = 64 * 3 + 3
    assert meta["trainable_parameters"] == 4 * (4 * 4 * 16) + head
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surm_config.json", "surm_model.safetensors"]
    assert meta["format"] == "surmlab-adapter"
    assert sum(math.prod(s) for s in meta["tensors"].values()) == meta["trainable_parameters"]


def test_training_a_merged_model_warns():
    model = inject(build_bert(), SurmConfig())
    merge(model).train()
    with pytest.warns(UserWarning, match=r"training a merged SURM layer.*unmerge\(\)"):
        run(model, inputs("bert"))
    unmerge(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(model, inputs("bert"))  # unmerged: no warning


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda d: (d / "surm_config.json").write_text("{not json"), r"surm_config\.json is not valid JSON"),
        (lambda d: (d / "surm_config.json").write_text("{}"), r"surm_config\.json lacks config, backbone"),
        (
            lambda d: (d / "surm_model.safetensors").write_bytes((d / "surm_model.safetensors").read_bytes()[:100]),
            r"surm_model\.safetensors is not a readable safetensors file",
        ),
    ],
)
def test_damaged_adapter_files_are_named(damage, pattern, tmp_path):
    save_adapter(inject(build_bert(), SurmConfig()), tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        load_adapter(build_bert(), tmp_path)


def test_configs_written_before_the_product_rename_still_load():
    """Adapter and run configs saved when the field was called ``path`` load as ``product``."""
    from surmlab.train import TrainConfig

    assert SurmConfig.from_dict({"family": "circulant", "path": "fft"}).product == "fft"
    assert TrainConfig.from_dict({"path": "dense"}).product == "dense"
    with pytest.raises(ValueError, match="unknown SurmConfig fields"):
        SurmConfig.from_dict({"path": "fft", "product": "dense"})
