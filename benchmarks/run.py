"""Run the speed/memory suite and write one JSON file.

    python -m benchmarks.run --profile quick --out benchmarks/results/quick-cpu.json
    python -m benchmarks.run --profile full --out benchmarks/results/full-cpu.json [--device cuda]

Profiles: ``quick`` (about 2 minutes on one core: three layer shapes at 512 and 2048 tokens, 2-block
models), ``full`` (about 15 minutes: every layer shape of the README at 512 and 2048 tokens, 8192 for
768x768, 4096x4096, a bf16 group; 12-block ViT-S/16 and BERT-base with PEFT C3A and LoKr too) and
``tiny`` (seconds; for the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from surmlab.provenance import load_average

from .common import environment
from .layers import SURM_FAMILIES, Group, run_group
from .models import ModelSpec, run_merged, run_steps
from .report import summary_table, targets

MODEL_METHODS = ["lora", "lowrank", *SURM_FAMILIES]
VIT_S = {"depth": 12}
BERT_BASE: dict[str, Any] = {}
TINY_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 8}
TINY_BERT = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 32,
}


def _groups(shapes: list[tuple[int, int]], tokens: list[int], dtype: str = "float32", slices: str = "") -> list[Group]:
    return [Group(o, i, t, dtype, slices) for o, i in shapes for t in tokens]


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "groups": _groups([(24, 16)], [16])
        + _groups([(48, 16)], [16], slices="qv")
        + _groups([(24, 16)], [16], "bfloat16"),
        "layer_reps": 2,
        "models": [ModelSpec("vit", 2, image=16, config=TINY_VIT), ModelSpec("bert", 2, seq=8, config=TINY_BERT)],
        "model_methods": ["lora", "circulant", "kronecker"],
        "merged_families": ["circulant"],
        "model_reps": 2,
    },
    "quick": {
        "groups": _groups([(768, 768)], [512, 2048])
        + _groups([(3072, 768)], [512])
        + _groups([(2304, 768)], [512], slices="qv"),
        "layer_reps": 5,
        "models": [
            ModelSpec("vit", 8, config={"depth": 2}),
            ModelSpec("bert", 4, seq=128, config={"num_hidden_layers": 2}),
        ],
        "model_methods": MODEL_METHODS,
        "merged_families": SURM_FAMILIES,
        "model_reps": 5,
    },
    "full": {
        "groups": _groups([(768, 768), (2304, 768), (768, 3072), (3072, 768), (1024, 1024)], [512, 2048])
        + _groups([(2304, 768)], [512, 2048], slices="qv")
        + _groups([(768, 768)], [8192])
        + _groups([(4096, 4096)], [512])
        + _groups([(768, 768)], [2048], "bfloat16"),
        "layer_reps": 5,
        "models": [ModelSpec("vit", 8, config=VIT_S), ModelSpec("bert", 4, seq=128, config=BERT_BASE)],
        "model_methods": [*MODEL_METHODS, "c3a", "lokr"],
        "merged_families": SURM_FAMILIES,
        "model_reps": 5,
    },
}


def run(
    profile: str, device: torch.device, threads: int | None = 1, parts: tuple[str, ...] = ("layers", "models")
) -> dict[str, Any]:
    """Every benchmark of ``profile``; the dict that ``main`` writes as JSON."""
    if threads:
        torch.set_num_threads(threads)
    config = PROFILES[profile]
    started = time.perf_counter()
    result: dict[str, Any] = {"schema": 1, "profile": profile, "environment": environment(device)}
    result["layers"], result["model_steps"], result["merged_inference"] = [], [], []
    if "layers" in parts:
        for group in config["groups"]:
            print(f"layer {group.name}", file=sys.stderr, flush=True)
            result["layers"] += run_group(group, device, config["layer_reps"])
    if "models" in parts:
        for spec in config["models"]:
            print(f"model {spec.name}", file=sys.stderr, flush=True)
            result["model_steps"] += run_steps(spec, config["model_methods"], device, config["model_reps"])
            result["merged_inference"] += run_merged(spec, config["merged_families"], device, config["model_reps"])
    result["profile_config"] = {
        "groups": [asdict(g) for g in config["groups"]],
        "models": [asdict(m) for m in config["models"]],
        "model_methods": config["model_methods"],
        "layer_reps": config["layer_reps"],
        "model_reps": config["model_reps"],
    }
    result["environment"]["load_average_end"] = load_average()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["targets"] = targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: benchmarks/results/<profile>.json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). 1 by default: on a shared machine every multi-threaded "
        "op waits for the thread that lost its core, which swamps the differences being measured",
    )
    parser.add_argument("--only", choices=["layers", "models"], help="run one part only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    parts = (args.only,) if args.only else ("layers", "models")
    result = run(args.profile, device, args.threads or None, parts)
    out = args.out or Path(__file__).parent / "results" / f"{args.profile}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary_table(result))
    print(f"wrote {out} in {result['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
