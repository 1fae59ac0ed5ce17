"""Every method is prepared by one call; counts are checked against the real modules and PEFT."""

import pytest
import timm
import torch
from transformers import BertConfig, BertForSequenceClassification

from surmlab.budget import BudgetError
from surmlab.methods import METHODS, lokr_count, prepare


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
    assert prepared.budget_params == trainable - prepared.head_params
    if budgeted:
        assert 0 < prepared.budget_params <= BUDGET
    if method != "c3a":  # PEFT's C3A starts from a non-zero (xavier) kernel by design
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
    assert a.budget_params == b.budget_params == rank * 96 * 4


def test_lokr_count_matches_peft():
    for rank, factor in [(1, -1), (4, -1), (64, -1), (2, 4), (8, 16)]:
        prepared = prepare("lokr", tiny_bert(), head=["classifier"], hyper={"rank": rank, "decompose_factor": factor})
        assert prepared.budget_params == 4 * lokr_count(48, 48, rank, factor)


def test_houlsby_adapter_count_and_placement():
    prepared = prepare("adapter", tiny_bert(), head=["classifier"], hyper={"bottleneck": 5})
    # after the attention output and the MLP output of each of the 2 layers: 4 adapters of width 48
    assert prepared.budget_params == 4 * (2 * 48 * 5 + 5 + 48)


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
    with pytest.raises(ValueError, match="mode 'adapter' applies to surm-\\* methods only"):
        prepare("lora", tiny_vit(), head=["head"], budget=2000, mode="adapter")
