"""Every method is prepared by one call; counts are checked against the real modules and PEFT."""

import pytest
import timm
import torch
from transformers import BertConfig, BertForSequenceClassification

from surmlab.budget import BudgetError
from surmlab.methods import METHODS, lokr_count, method_info, prepare, summarize_layers
from surmlab.tuner import surm_layers


def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=3, img_size=32, embed_dim=64, depth=2, num_heads=4
    ).eval()


def tiny_bert():
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, num_labels=2
    )
    return BertForSequenceClassification(cfg).eval()


def head_count(model, head):
    return sum(p.numel() for p in model.get_submodule(head).parameters())


BUDGET = 4000


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_prepares_with_exact_counts_on_vit(method):
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    budgeted = METHODS[method].budgeted
    prepared = prepare(method, model, head=["head"], budget=BUDGET if budgeted else None, nearest=False)
    trainable = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    assert prepared.trainable == trainable
    assert prepared.head_params == head_count(tiny_vit(), "head")
    assert prepared.method_params == trainable - prepared.head_params
    if budgeted:
        assert 0 < prepared.method_params <= BUDGET
    # every method starts exactly at the pretrained model (PEFT's C3A included: its kernel starts at zero)
    torch.testing.assert_close(prepared.model(x), before, rtol=0, atol=1e-6)
    # the head and the method's own parameters learn: one step moves the output
    opt = torch.optim.SGD([p for p in prepared.model.parameters() if p.requires_grad], lr=0.5)
    prepared.model(x).square().sum().backward()
    opt.step()
    assert not torch.allclose(prepared.model(x), before)


def test_lora_and_surm_lowrank_spend_the_same_budget_on_bert():
    """Both adapt query and value (48x48, 2 layers): r * (48 + 48) * 4 parameters each."""
    a = prepare("lora", tiny_bert(), head=["classifier"], budget=2000)
    b = prepare("surm-lowrank", tiny_bert(), head=["classifier"], budget=2000)
    rank = 2000 // (96 * 4)
    assert a.hyper["rank"] == b.hyper["rank"] == rank
    assert a.method_params == b.method_params == rank * 96 * 4


def test_lokr_count_matches_peft():
    for rank, factor in [(1, -1), (4, -1), (64, -1), (2, 4), (8, 16)]:
        prepared = prepare("lokr", tiny_bert(), head=["classifier"], hyper={"rank": rank, "decompose_factor": factor})
        assert prepared.method_params == 4 * lokr_count(48, 48, rank, factor)


def test_houlsby_adapter_count_and_placement():
    prepared = prepare("adapter", tiny_bert(), head=["classifier"], hyper={"bottleneck": 5})
    # after the attention output and the MLP output of each of the 2 layers: 4 adapters of width 48
    assert prepared.method_params == 4 * (2 * 48 * 5 + 5 + 48)


def test_bitfit_trains_exactly_the_biases():
    prepared = prepare("bitfit", tiny_bert(), head=["classifier"])
    names = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in tiny_bert().named_parameters() if n.endswith("bias") or n.startswith("classifier")}


def test_layernorm_trains_exactly_the_norms():
    prepared = prepare("layernorm", tiny_vit(), head=["head"])
    names = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in tiny_vit().named_parameters() if "norm" in n or n.startswith("head.")}
    assert names == expected


def test_bad_method_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="unknown method 'nope'; known: surm-circulant"):
        prepare("nope", tiny_vit(), head=["head"])
    with pytest.raises(BudgetError, match="lora needs --budget"):
        prepare("lora", tiny_vit(), head=["head"])
    with pytest.raises(BudgetError, match="bitfit has no size knob"):
        prepare("bitfit", tiny_vit(), head=["head"], budget="10k")
    with pytest.raises(BudgetError, match="infeasible for adapter: achievable counts range from"):
        prepare("adapter", tiny_vit(), head=["head"], budget=10)
    with pytest.raises(ValueError, match="head \\['classifier'\\] matches no module"):
        prepare("linear-probe", tiny_vit(), head=["classifier"])
    with pytest.raises(BudgetError, match=r"give either hyper-parameters \{'block_size': 8\} or a budget \(4k\)"):
        prepare("surm-circulant", tiny_vit(), head=["head"], budget="4k", hyper={"block_size": 8})
    with pytest.raises(ValueError, match=r"c3a takes hyper-parameters block_size, init_weights .*got \['blocksize'\]"):
        prepare("c3a", tiny_vit(), head=["head"], hyper={"blocksize": 8})
    with pytest.raises(ValueError, match=r"bitfit has no hyper-parameters; got \['rank'\]"):
        prepare("bitfit", tiny_vit(), head=["head"], hyper={"rank": 8})
    with pytest.raises(ValueError, match="mode 'adapter' applies to surm-\\* methods only"):
        prepare("lora", tiny_vit(), head=["head"], budget=2000, mode="adapter")


# -- fair baselines --------------------------------------------------------------------------------------


def adapted_rows(prepared):
    """``{layer name: [(start, stop), ...]}`` of the rows each wrapped layer adapts."""
    return {n: [(a, b) for _, a, b in layer.slices] for n, layer in surm_layers(prepared.model).items()}


def test_lora_adapts_exactly_the_rows_surm_adapts_on_a_fused_qkv():
    """On timm's fused qkv both adapt only the q and v thirds: the k rows never change."""
    lora = prepare("lora", tiny_vit(), head=["head"], budget=BUDGET)
    surm = prepare("surm-circulant", tiny_vit(), head=["head"], budget=BUDGET)
    d = 64
    assert (
        adapted_rows(lora) == adapted_rows(surm) == {f"blocks.{i}.attn.qkv": [(0, d), (2 * d, 3 * d)] for i in (0, 1)}
    )
    assert lora.targets == surm.targets == "blocks.*.attn.qkv[q,v] (x2)"
    # rank r on q and v of 2 layers: r * (64 + 64) * 4
    assert lora.method_params == lora.hyper["rank"] * 128 * 4 <= BUDGET
    # after a training step the merged k rows equal the pretrained ones, q and v rows moved
    base = tiny_vit().blocks[0].attn.qkv.weight.detach().clone()
    x = torch.randn(2, 3, 32, 32)
    opt = torch.optim.SGD([p for p in lora.model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # B starts at zero: the first step moves B, the second A and the product
        opt.zero_grad()
        lora.model(x).square().sum().backward()
        opt.step()
    delta = surm_layers(lora.model)["blocks.0.attn.qkv"].delta_weight()
    assert delta[d : 2 * d].abs().max() == 0 and delta[:d].abs().max() > 0 and delta[2 * d :].abs().max() > 0
    assert torch.equal(lora.model.blocks[0].attn.qkv.base_layer.weight, base)


def test_lora_equals_peft_lora_on_an_unfused_model():
    """Oracle: PEFT's own LoRA on BERT's separate query/value layers. With the same A and B the two
    give the same outputs and the same gradients (scaling lora_alpha / r = 2 on both)."""
    ours = prepare("lora", tiny_bert(), head=["classifier"], hyper={"rank": 3})
    peft = prepare("peft-lora", tiny_bert(), head=["classifier"], hyper={"rank": 3})
    assert ours.hyper == {"rank": 3, "lora_alpha": 6.0} and peft.hyper == {"rank": 3, "lora_alpha": 6}
    assert ours.method_params == peft.method_params == 3 * 96 * 4
    assert (
        ours.targets
        == peft.targets
        == ("bert.encoder.layer.*.attention.self.query (x2), bert.encoder.layer.*.attention.self.value (x2)")
    )
    torch.manual_seed(1)
    peft_modules = {n.removeprefix("base_model.model."): m for n, m in peft.model.named_modules()}
    for name, layer in surm_layers(ours.model).items():
        lowrank = layer.updates["full"]
        peft_layer = peft_modules[name]
        # LoRA's initialisation: A Kaiming-uniform (bound 1/sqrt(in) for a=sqrt(5)), B zero
        assert lowrank.a.abs().max() <= 1 / 48**0.5 and lowrank.b.abs().max() == 0
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(torch.randn(3, 48))
            peft_layer.lora_B["default"].weight.copy_(torch.randn(48, 3) * 0.1)
            lowrank.a.copy_(peft_layer.lora_A["default"].weight)
            lowrank.b.copy_(peft_layer.lora_B["default"].weight)
    ids = torch.randint(0, 100, (2, 7))
    out_ours, out_peft = ours.model(input_ids=ids).logits, peft.model(input_ids=ids).logits
    torch.testing.assert_close(out_ours, out_peft, rtol=1e-5, atol=1e-6)
    out_ours.square().sum().backward()
    out_peft.square().sum().backward()
    for name, layer in surm_layers(ours.model).items():
        peft_layer = peft_modules[name]
        torch.testing.assert_close(layer.updates["full"].b.grad, peft_layer.lora_B["default"].weight.grad)
        torch.testing.assert_close(layer.updates["full"].a.grad, peft_layer.lora_A["default"].weight.grad)


def test_lora_alpha_sets_the_scale():
    prepared = prepare("lora", tiny_bert(), head=["classifier"], hyper={"rank": 4, "lora_alpha": 2})
    assert {layer.alpha for layer in surm_layers(prepared.model).values()} == {0.5}
    with pytest.raises(
        ValueError, match=r"lora takes hyper-parameters rank, lora_alpha \(rank required\); got \['r'\]"
    ):
        prepare("lora", tiny_bert(), head=["classifier"], hyper={"r": 4})


def test_all_linear_through_prepare_leaves_the_head_out():
    prepared = prepare("surm-circulant", tiny_vit(), head=["head"], budget=20_000, targets="all-linear")
    wrapped = surm_layers(prepared.model)
    assert "head" not in wrapped and len(wrapped) == 2 * 4  # qkv, proj, fc1, fc2 per block
    assert prepared.model.surm_plan.hyper["block_size"] > 1
    assert prepared.head_params == head_count(tiny_vit(), "head")


def test_surm_adapter_files_carry_the_head(tmp_path):
    """What ``prepare`` injects saves the classifier head inside the adapter file."""
    from surmlab import load_adapter, save_adapter

    prepared = prepare("surm-circulant", tiny_vit(), head=["head"], budget=BUDGET)
    with torch.no_grad():
        for p in prepared.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_adapter(prepared.model, tmp_path)
    x = torch.randn(2, 3, 32, 32)
    fresh = load_adapter(tiny_vit(), tmp_path)
    torch.testing.assert_close(fresh(x), prepared.model(x), rtol=0, atol=0)


def test_summarize_layers_groups_indices_and_slices():
    names = [f"blocks.{i}.attn.qkv[{s}]" for i in range(3) for s in "qv"] + ["head"]
    assert summarize_layers(names) == "blocks.*.attn.qkv[q,v] (x3), head"
    assert prepare("bitfit", tiny_vit(), head=["head"]).targets == "all biases"
    assert prepare("linear-probe", tiny_vit(), head=["head"]).targets == "nothing (head only)"


def test_cli_targets_all_linear_is_every_linear_layer(capsys):
    """``--targets all-linear`` is the keyword, not a module suffix (which would match nothing)."""
    from surmlab.cli import _train_config, build_parser
    from surmlab.cli import main as cli

    args = build_parser().parse_args(["train", "--targets", "all-linear"])
    assert _train_config(args).targets == "all-linear"
    assert _train_config(build_parser().parse_args(["train", "--targets", "query", "value"])).targets == [
        "query",
        "value",
    ]
    code = cli(["budget", "--backbone", "tiny-bert", "--method", "surm-circulant", "--budget", "20k"] +
               ["--targets", "all-linear"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("model.")]
    assert len(rows) == 2 * 6 and not any("classifier" in r for r in rows)  # 6 linears per layer, not the head
    assert "16,384 method + 130 head" in out


# -- the registry ----------------------------------------------------------------------------------------


def test_every_structure_family_is_a_method_at_its_own_learning_rate():
    from surmlab.structures import FAMILIES

    surm = {name: m for name, m in METHODS.items() if m.kind == "surm"}
    assert sorted(surm) == sorted(f"surm-{family}" for family in FAMILIES)
    for family, cls in FAMILIES.items():
        method = surm[f"surm-{family}"]
        assert (method.structure, method.lr, method.takes_mode, method.budgeted) == (family, cls.default_lr, True, True)
    assert [m for m in METHODS.values() if m.takes_mode] == list(surm.values())  # no baseline takes SURM's modes


@pytest.fixture
def scratch_method():
    """Registers ``scale-head`` for one test and removes it afterwards."""
    from surmlab.methods import Built, register_method

    @register_method("scale-head", kind="selective", lr=0.25, description="a test baseline")
    def build(model, request):
        return Built(model, {}, "nothing (head only)")

    yield build
    METHODS.pop("scale-head")


def test_a_baseline_is_one_decorated_function(scratch_method):
    from surmlab.methods import method_info

    assert method_info("scale-head").build is scratch_method
    assert list(METHODS).index("scale-head") < list(METHODS).index("full")  # listed with its kind
    prepared = prepare("scale-head", tiny_vit(), head=["head"])
    assert (prepared.lr, prepared.method_params, prepared.targets) == (0.25, 0, "nothing (head only)")
    with pytest.raises(ValueError, match="'scale-head' is registered twice"):
        from surmlab.methods import register_method

        register_method("scale-head", kind="selective", lr=1.0, description="again")(scratch_method)


def test_the_mode_rule_is_said_once_in_the_registry():
    """Whether a method takes SURM's mode, and where its layers go, is asked of its record only."""
    assert method_info("adapter") is method_info("houlsby")  # the Houlsby method's old name still works
    assert method_info("surm-circulant").mode_for("adapter") == "adapter"
    assert [method_info(m).mode_for("adapter") for m in ("lora", "houlsby", "bitfit", "c3a")] == ["lora"] * 4
    assert method_info("houlsby").placement("lora") == "adapter"
    assert (
        method_info("surm-ldr").placement("adapter") == "adapter" and method_info("lora").placement("adapter") == "lora"
    )
    prepared = prepare("adapter", tiny_bert(), head=["classifier"], hyper={"bottleneck": 2})
    assert prepared.method == "houlsby"  # runs record the registry name, whatever name asked for it


# -- PEFT's structured and multiplicative methods ----------------------------------------------------------

BERT_QV = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]


def peft_configs():
    """PEFT's own configs, written here independently of the lab's builders: method -> (knob, values, config)."""
    import peft

    return {
        "shira": ("r", [1, 4, 7], lambda v, t: peft.ShiraConfig(r=v, random_seed=0, target_modules=t)),
        "miss": ("r", [1, 5, 48], lambda v, t: peft.MissConfig(r=v, target_modules=t)),
        "gralora": ("r", [2, 8], lambda v, t: peft.GraloraConfig(r=v, gralora_k=2, target_modules=t)),
        "fourierft": ("n_frequency", [1, 300], lambda v, t: peft.FourierFTConfig(n_frequency=v, target_modules=t)),
        "vera": ("r", [1, 64, 700], lambda v, t: peft.VeraConfig(r=v, target_modules=t)),
        "oft": ("oft_block_size", [2, 8, 48], lambda v, t: peft.OFTConfig(r=0, oft_block_size=v, target_modules=t)),
        "boft": ("boft_block_size", [2, 16], lambda v, t: peft.BOFTConfig(boft_block_size=v, target_modules=t)),
        "hra": ("r", [2, 10], lambda v, t: peft.HRAConfig(r=v, target_modules=t)),
    }


@pytest.mark.parametrize("method", sorted(peft_configs()))
def test_structured_peft_counts_equal_what_peft_trains(method):
    """Oracle: the trainable count PEFT reports for its own module, built here from PEFT's config, equals
    the lab's count formula and what the lab's builder trains, for several knob values (on 4 BERT layers)."""
    from peft import get_peft_model

    from surmlab.budget import Target
    from surmlab.methods import peft_structured

    knob_name, values, config = peft_configs()[method]
    shapes = [Target(n, 48, 48) for n in BERT_QV]
    knob = getattr(peft_structured, f"{method}_knob")(*((shapes, 2) if method == "gralora" else (shapes,)))
    assert knob.name == knob_name
    for value in values:
        theirs = get_peft_model(tiny_bert(), config(value, BERT_QV)).get_nb_trainable_parameters()[0]
        ours = prepare(method, tiny_bert(), head=["classifier"], hyper={knob_name: value})
        assert knob.total(shapes, value) == theirs == ours.method_params, (method, value)
        assert ours.hyper[knob_name] == value


@pytest.mark.parametrize("method", sorted(peft_configs()))
def test_structured_peft_budget_takes_the_largest_setting_that_fits(method):
    """On ViT's fused qkv (192 x 64, two layers) the solved knob's count is at most the budget, and the
    next feasible setting would exceed it."""
    from surmlab.budget import Target
    from surmlab.methods import peft_structured

    prepared = prepare(method, tiny_vit(), head=["head"], budget=BUDGET)
    shapes = [Target(f"blocks.{i}.attn.qkv", 192, 64) for i in range(2)]
    args = (shapes, 2) if method == "gralora" else (shapes,)
    knob = getattr(peft_structured, f"{method}_knob")(*args)
    value = prepared.hyper[knob.name]
    assert prepared.method_params == knob.total(shapes, value) <= BUDGET
    later = [v for v in knob.values if v > value]
    assert not later or knob.total(shapes, later[0]) > BUDGET


def test_structured_peft_bad_budgets_and_knobs_name_the_feasible_values():
    with pytest.raises(BudgetError, match=r"infeasible for hra: .* feasible counts are 256, 512, 768, \.\.\., 8,192 "
                       r"\(r = 2, 4, 6, \.\.\., 64\)"):  # fmt: skip
        prepare("hra", tiny_vit(), head=["head"], budget=100)
    with pytest.raises(BudgetError, match=r"infeasible for oft: .*feasible counts are 64, 192, 448, 960, 1,984, 4,032 "
                       r"\(oft_block_size = 2, 4, 8, 16, 32, 64\)"):  # fmt: skip
        prepare("oft", tiny_vit(), head=["head"], budget=10_000)
    with pytest.raises(
        ValueError, match=r"oft oft_block_size must be one of 2, 4, 8, 16, 32, 64 on these layers, got 6"
    ):
        prepare("oft", tiny_vit(), head=["head"], hyper={"oft_block_size": 6})
    with pytest.raises(ValueError, match=r"gralora_k must divide every layer \(192x64\): one of \[1, 2, .*64\], got 3"):
        prepare("gralora", tiny_vit(), head=["head"], hyper={"r": 6, "gralora_k": 3})
    with pytest.raises(ValueError, match=r"gralora r must be one of 4, 8, 12, \.\.\., 64 on these layers, got 6"):
        prepare("gralora", tiny_vit(), head=["head"], hyper={"r": 6, "gralora_k": 4})
