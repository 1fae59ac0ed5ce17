"""The structured updates against each other on one layer: every SURM family's fast product and PEFT's
structured baselines (FourierFT, SHiRA, MiSS, GraLoRA, VeRA, OFT, BOFT, HRA, LoKr), at LoRA rank 8's count.

Each group is one layer shape and token count; all methods of a group are timed in the same interleaved
rounds (forward+backward, fp32, one torch thread by default) and the ratios are against the frozen layer
(``base``) and PEFT's LoRA of the same run. The PEFT baselines get their knob from the lab's budget solver
(``surmlab.methods.peft_structured``), so their counts are the ones ``prepare`` would train; the count of
each row is in the file. SURM families run both products (``fft``: activation space; ``dense``: ``S`` formed and
folded into ``W``) and each row records which one ``product="auto"`` picks. ``sparse_spectrum`` is paired with
PEFT's FourierFT at the same ``n``.

    nice -n 10 python -m benchmarks.structured --out benchmarks/results/structured-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from surmlab.budget import BudgetError
from surmlab.methods import peft_structured
from surmlab.methods.registry import Request
from surmlab.provenance import load_average
from surmlab.timing import peak_memory, time_interleaved

from .common import DTYPES, environment
from .layers import (
    STRUCTURED_PEFT,
    SURM_FAMILIES,
    Built,
    Group,
    Holder,
    _auto_paths,
    _clear_grads,
    _inputs,
    _train_fn,
    add_ratios,
    build_peft,
    build_surm,
    frozen_linear,
    solved_hyper,
)
from .models import ModelSpec, run_steps
from .run import BERT_BASE, TINY_BERT, TINY_VIT, VIT_S

TINY_VIT_SPEC = ModelSpec("vit", 2, image=16, config=TINY_VIT)
TINY_BERT_SPEC = ModelSpec("bert", 2, seq=8, config=TINY_BERT)
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"groups": [Group(64, 64, 32)], "reps": 2, "models": [TINY_VIT_SPEC, TINY_BERT_SPEC]},
    "quick": {
        "groups": [Group(768, 768, 512), Group(768, 768, 2048)],
        "reps": 5,
        # ViT-S/16 (batch 8) and BERT-base (batch 4 x 128) with 2 blocks each: the per-layer shapes of the full models
        "models": [
            ModelSpec("vit", 8, config={"depth": 2}),
            ModelSpec("bert", 4, seq=128, config={"num_hidden_layers": 2}),
        ],
    },
    "full": {
        "groups": [Group(768, 768, 512), Group(768, 768, 2048), Group(3072, 768, 2048), Group(1024, 1024, 4096)],
        "reps": 7,
        "models": [ModelSpec("vit", 8, config=VIT_S), ModelSpec("bert", 4, seq=128, config=BERT_BASE)],
    },
}


def build_structured_peft(group: Group, method: str, device: torch.device) -> Built:
    """PEFT's ``method`` on one frozen layer, its knob solved for LoRA rank 8's count (the largest
    setting within it; the smallest setting where none fits)."""
    builder = getattr(peft_structured, f"build_{method}")
    holder = Holder(frozen_linear(group, device))
    request = Request(head=[], budget=group.budget, targets=["layer"])
    try:
        built = builder(holder, request)
    except BudgetError:
        built = builder(holder, Request(head=[], budget=group.budget, targets=["layer"], nearest=True))
    for p in built.model.parameters():  # adapters in fp32, as ours, whatever the base dtype
        if p.requires_grad:
            p.data = p.data.float()
    dense = method in ("shira", "boft", "hra")  # PEFT forms a d_out x d_in (or d_in x d_in) matrix per forward
    return Built(method, "peft", built.model, path="dense" if dense else None, hyper=built.hyper)


def build_structured_group(group: Group, device: torch.device, families: list[str] | None = None) -> list[Built]:
    built = [Built("base", "torch", Holder(frozen_linear(group, device))), build_peft(group, "lora", device)]
    for family in families or SURM_FAMILIES:
        hyper = solved_hyper(family, group)
        built += [build_surm(group, family, hyper, path, device) for path in ("fft", "dense")]
        if family == "sparse_spectrum":
            built.append(build_peft(group, "fourierft", device, coefficients=hyper["coefficients"]))
    built += [build_structured_peft(group, method, device) for method in STRUCTURED_PEFT]
    return built


def run_structured_group(
    group: Group, device: torch.device, reps: int, families: list[str] | None = None
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    built = build_structured_group(group, device, families)
    x, gy = _inputs(group, device)
    train = time_interleaved({b.method: _train_fn(b.module, x, gy) for b in built}, device, reps, 1)
    rows = []
    for b in built:
        memory = peak_memory(_train_fn(b.module, x, gy, clear=False), device, setup=_clear_grads(b.module, x))
        rows.append(
            {
                "group": group.name,
                "out_features": group.out_features,
                "in_features": group.in_features,
                "tokens": group.tokens,
                "method": b.method,
                "impl": b.impl,
                "family": b.family,
                "hyper": b.hyper,
                "params": b.params,
                "train": train[b.method],
                "train_peak_bytes": memory,
                "auto_path": _auto_paths(b, x),  # what product="auto" picks (train, infer)
                "pair": "fourierft" if b.method.startswith("sparse_spectrum/") else None,
            }
        )
    add_ratios(rows, {"lora": "lora", "base": "base"})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as Markdown (ratios are medians of per-round ratios within the run)."""
    lines = [
        "| group | method | params | fwd+bwd ms | vs frozen | vs LoRA | vs pair | auto picks |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        q = r["ratios"]

        def show(key: str, q: dict[str, Any] = q) -> str:
            return f"{q[key]:.2f}" if q.get(key) is not None else ""

        lines.append(
            f"| {r['group']} | {r['method']} | {r['params']:,} | {1000 * r['train']['median_s']:.1f} | "
            f"{show('train_vs_base')} | {show('train_vs_lora')} | {show('train_vs_pair')} | "
            f"{(r.get('auto_path') or {}).get('train', '')} |"
        )
    return "\n".join(lines)


def step_table(rows: list[dict[str, Any]]) -> str:
    """Training steps as Markdown: time and the ratio to PEFT LoRA of the same run, at LoRA's budget."""
    lines = ["| model | method | params | step ms | vs LoRA | product |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        q = r["ratios"].get("step_vs_lora")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['params']:,} | {1000 * r['step']['median_s']:.1f} | "
            f"{'' if q is None else f'{q:.2f}'} | {r.get('path') or ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``--table FILE`` prints an earlier results file's table; otherwise runs the profile."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--table"]:
        saved = json.loads(Path(argv[1]).read_text())
        print(table(saved["rows"]))
        print(step_table(saved.get("model_steps", [])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: benchmarks/results/structured-<profile>-<device>.json)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="frozen layer and activations")
    parser.add_argument("--families", help="comma-separated SURM families (default: all but lowrank)")
    parser.add_argument("--only", choices=["layers", "models"], help="one part only (default: both)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    families = args.families.split(",") if args.families else None
    config = PROFILES[args.profile]
    started = time.perf_counter()
    result: dict[str, Any] = {"schema": 1, "profile": args.profile, "environment": environment(device), "rows": []}
    result["model_steps"] = []
    if args.only != "models":
        for group in (dataclasses.replace(g, dtype=args.dtype) for g in config["groups"]):
            print(f"layer {group.name}", file=sys.stderr, flush=True)
            result["rows"] += run_structured_group(group, device, config["reps"], families)
    if args.only != "layers":
        methods = ["lora", *(families or SURM_FAMILIES), "fourierft", *STRUCTURED_PEFT]
        for spec in config["models"]:
            print(f"model {spec.name}", file=sys.stderr, flush=True)
            # bf16: autocast over fp32 weights, as the layer suite's run.py does for models
            result["model_steps"] += run_steps(spec, methods, device, config["reps"], dtype=args.dtype)
    result["environment"]["load_average_end"] = load_average()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["command"] = "python -m benchmarks.structured " + " ".join(argv)
    suffix = "" if args.dtype == "float32" else f"-{args.dtype}"
    out = args.out or Path(__file__).parent / "results" / f"structured-{args.profile}-{device.type}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["rows"]))
    print(step_table(result["model_steps"]))
    print(f"wrote {out} in {result['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
