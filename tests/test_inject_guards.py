"""inject is atomic; merge refuses quantised or packed weights by name before anything changes;
``all-linear`` leaves out the output layer and tied layers; decoder presets follow the architecture."""

import pytest
import torch
import transformers
from test_save_routes import batch, tiny_bert
from torch import nn

from surmlab import SurmConfig, inject, merge, unload
from surmlab.tuner import detect_preset, surm_layers

LOWRANK = SurmConfig(family="lowrank", hyper={"rank": 2})


class Int8Linear(nn.Linear):
    """A weight-only int8 linear layer (per-row scales), as quantisation libraries store one."""

    def __init__(self, layer: nn.Linear):
        super().__init__(layer.in_features, layer.out_features, bias=layer.bias is not None)
        scale = layer.weight.detach().abs().amax(dim=1, keepdim=True) / 127
        self.weight = nn.Parameter((layer.weight.detach() / scale).round().to(torch.int8), requires_grad=False)
        self.register_buffer("scale", scale)
        if layer.bias is not None:
            self.bias = nn.Parameter(layer.bias.detach().clone())

    def forward(self, x):
        return nn.functional.linear(x, self.weight.float() * self.scale, self.bias)


class Params4bit(nn.Parameter):
    """Named like bitsandbytes' packed 4-bit weight class."""


def quantised_bert():
    model = tiny_bert()
    attention = model.bert.encoder.layer[1].attention.self
    attention.query = Int8Linear(attention.query)
    return model


@torch.no_grad()
def perturbed(model):
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_merge_refuses_an_int8_base_by_name_before_changing_anything():
    model = perturbed(inject(quantised_bert(), SurmConfig(hyper={"block_size": 16})))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(input_ids=batch()).logits  # the activation-space product serves an int8 base
    with pytest.raises(ValueError, match=r"cannot merge bert\.encoder\.layer\.1\.attention\.self\.query: .*int8"):
        merge(model)
    with pytest.raises(ValueError, match=r"cannot merge bert\.encoder\.layer\.1\.attention\.self\.query"):
        unload(model, merge=True)
    assert not any(layer.merged for layer in surm_layers(model).values()) and len(surm_layers(model)) == 4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=batch()).logits, out, rtol=0, atol=0)


def test_merge_refuses_a_packed_weight_class_and_dense_product_on_int8():
    model = tiny_bert()
    query = model.bert.encoder.layer[0].attention.self.query
    query.weight = Params4bit(query.weight.detach().clone(), requires_grad=False)
    inject(model, LOWRANK)
    with pytest.raises(ValueError, match=r"cannot merge bert\.encoder\.layer\.0\.attention\.self\.query: .*Params4bit"):
        merge(model)
    with pytest.raises(ValueError, match=r"product='dense' .*bert\.encoder\.layer\.1\.attention\.self\.query"):
        inject(quantised_bert(), SurmConfig(hyper={"block_size": 16}, product="dense"))


class FrozenHead(nn.Linear):
    """A head that refuses to be unfrozen (e.g. a frozen wrapper from another library)."""

    def requires_grad_(self, requires_grad=True):
        raise RuntimeError("this head is frozen")


def test_inject_is_atomic():
    model = tiny_bert()
    model.classifier = FrozenHead(64, 3)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    with pytest.raises(RuntimeError, match="this head is frozen"):
        inject(model, SurmConfig(hyper={"block_size": 16}))
    assert dict(model.named_modules()) == modules and not hasattr(model, "surm_config")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    inject(model, SurmConfig(hyper={"block_size": 16}, modules_to_save=[]))  # and it can be injected after


def test_a_non_float_head_is_refused_up_front():
    model = tiny_bert()
    model.classifier.weight = nn.Parameter(model.classifier.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match=r"modules_to_save classifier holds non-float parameters \(classifier\.weight"):
        inject(model, SurmConfig(hyper={"block_size": 16}))
    assert not surm_layers(model) and not hasattr(model, "surm_config")


def tiny(model_type, **extra):
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    config = config_class(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, head_dim=8, pad_token_id=0, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


DECODERS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3"]


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_presets_follow_the_architecture(model_type):
    model = tiny(model_type)
    preset = detect_preset(model)
    assert preset is not None and model_type in preset.model_types
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    perturbed(inject(model, LOWRANK))
    wanted = ("qkv_proj",) if model_type == "phi3" else ("q_proj", "v_proj")
    names = sorted(surm_layers(model))
    assert names and all(n.rsplit(".", 1)[-1] in wanted for n in names) and len(names) == 2 * len(wanted)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merge(model)
        torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
    assert (adapted - before).abs().max() > 1e-4


def test_all_linear_leaves_out_the_output_layer():
    model = tiny("llama", tie_word_embeddings=False)
    inject(model, SurmConfig(family="lowrank", hyper={"rank": 2}, target_modules="all-linear"))
    names = set(surm_layers(model))
    assert "lm_head" not in names and len(names) == 2 * 7  # q k v o gate up down


class TiedDecoder(nn.Module):
    """An embedding, one hidden layer and an output layer sharing the embedding's weight."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 16)
        self.hidden = nn.Linear(16, 16)
        self.decode = nn.Linear(16, 10, bias=False)
        self.decode.weight = self.embed.weight

    def forward(self, ids):
        return self.decode(torch.tanh(self.hidden(self.embed(ids))))


def test_all_linear_leaves_out_a_layer_tied_to_an_embedding():
    model = inject(TiedDecoder(), SurmConfig(family="lowrank", hyper={"rank": 2}, target_modules="all-linear"))
    assert set(surm_layers(model)) == {"hidden"}
    before = model.embed.weight.clone()
    merge(perturbed(model))
    assert torch.equal(model.embed.weight, before)  # a merge never touches the embeddings
