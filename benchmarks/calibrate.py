"""Calibrate ``SurmLinear``'s ``auto`` path: when does the weight-space product beat the FFT one?

    python -m benchmarks.calibrate --out benchmarks/results/calibration-cpu.json

For each family (at PEFT LoRA rank 8's budget), layer shape and token count, times the
``fft`` (activation space) and ``dense`` (weight space: materialise ``S``, fold it into ``W``, one
matmul) paths of one ``SurmLinear`` for forward+backward and for no-grad forward, in interleaved
rounds. Then finds the ``FFT_FLOP_COST`` for this device that makes ``use_dense`` pick the faster
path most often, weighted by the time a wrong pick loses, and reports how the current constant does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from surmlab import SurmLinear, layer
from surmlab.budget import Target, solve
from surmlab.provenance import load_average
from surmlab.timing import no_grad_call, time_interleaved
from surmlab.tuner import qkv_rows

from .common import DTYPES, environment
from .layers import LORA_RANK, SURM_FAMILIES

QKV = "qv"  # a fused 3d x d qkv layer adapted on its q and v thirds, as the presets do
SHAPES = [(384, 384, ""), (768, 768, ""), (3072, 768, ""), (768, 3072, ""), (2304, 768, QKV)]
TOKENS = [256, 1024, 4096]


def _layer(
    family: str,
    out_features: int,
    in_features: int,
    slices: str,
    path: str,
    device: str = "cpu",
    dtype: str = "float32",
) -> SurmLinear:
    rows = qkv_rows(in_features, slices) if slices else None
    targets = rows or [("full", 0, out_features)]
    budget = LORA_RANK * (in_features + out_features)  # PEFT LoRA on the whole layer
    plan = solve(family, [Target(n, stop - start, in_features) for n, start, stop in targets], budget)
    base = torch.nn.Linear(in_features, out_features, device=device, dtype=DTYPES[dtype]).requires_grad_(False)
    return SurmLinear(base, family, plan.hyper, slices=rows, product=path).to(device)


def measure(
    family: str, shape: tuple[int, int, str], tokens: int, reps: int, device: str = "cpu", dtype: str = "float32"
) -> dict[str, Any]:
    out_features, in_features, slices = shape
    layers = {p: _layer(family, out_features, in_features, slices, p, device, dtype) for p in ("fft", "dense")}
    x = torch.randn(tokens, in_features, device=device, dtype=DTYPES[dtype], requires_grad=True)
    gy = torch.randn(tokens, out_features, device=device, dtype=DTYPES[dtype])

    def train(module: SurmLinear):
        def step() -> None:
            for p in module.parameters():
                p.grad = None
            x.grad = None
            module(x).backward(gy)

        return step

    t_train = time_interleaved({p: train(m) for p, m in layers.items()}, torch.device(device), reps)
    t_infer = time_interleaved({p: no_grad_call(m, x) for p, m in layers.items()}, torch.device(device), reps)
    update = layers["fft"]
    return {
        "family": family,
        "out_features": out_features,
        "in_features": in_features,
        "slices": slices,
        "tokens": tokens,
        "device": device,
        "dtype": dtype,
        "hyper": next(iter(update.updates.values())).hyper,
        "structured_flops": sum(u.activation_flops(tokens) for u in update.updates.values()),
        "train": {p: t["median_s"] for p, t in t_train.items()},
        "infer": {p: t["median_s"] for p, t in t_infer.items()},
    }


def _modules(rows: list[dict[str, Any]]) -> list[SurmLinear]:
    return [_layer(r["family"], r["out_features"], r["in_features"], r["slices"], "auto") for r in rows]


def _kind(rows: list[dict[str, Any]]) -> str:
    """The ``FFT_FLOP_COST`` key of the device the rows were measured on (older files: cpu)."""
    return torch.device(rows[0].get("device", "cpu")).type if rows else "cpu"


def score(rows: list[dict[str, Any]], modules: list[SurmLinear], cost: dict[str, float]) -> dict[str, Any]:
    """With ``FFT_FLOP_COST[<device>] = cost``: right picks per mode, and the time lost to wrong ones
    (relative to always picking the faster path). The picks are made on CPU tensors with the cost under
    the ``cpu`` key, so the rule is scored the same way whichever device the times came from."""
    saved = layer.FFT_FLOP_COST["cpu"]
    layer.FFT_FLOP_COST["cpu"] = cost
    out: dict[str, Any] = {"cost": cost}
    try:
        for mode in ("train", "infer"):
            right, lost, best = 0, 0.0, 0.0
            for row, module in zip(rows, modules, strict=True):
                with torch.set_grad_enabled(mode == "train"):
                    pick = "dense" if module.use_dense(torch.empty(row["tokens"], row["in_features"])) else "fft"
                times = row[mode]
                right += times[pick] == min(times.values())
                lost += times[pick] - min(times.values())
                best += min(times.values())
            out[mode] = {"right": right, "cases": len(rows), "time_lost": lost / best}
    finally:
        layer.FFT_FLOP_COST["cpu"] = saved
    return out


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Grid search: the flop cost and the two setup costs that lose the least time (train + infer)."""
    modules = _modules(rows)
    best = None
    for flop in (4.0, 8.0, 11.0, 16.0, 22.0, 32.0, 45.0, 64.0):
        options = []
        for k_train in (64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0):
            for k_infer in (16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0):
                cost = {"flop": flop, "setup_train": k_train, "setup_infer": k_infer}
                result = score(rows, modules, cost)
                options.append((result["train"]["time_lost"] + result["infer"]["time_lost"], result))
        candidate = min(options, key=lambda o: o[0])
        if best is None or candidate[0] < best[0]:
            best = candidate
    return best[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file (default: results/calibration-<device>[-<dtype>].json)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]: where the two products are timed")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="the frozen layer's and x's dtype")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", default=",".join([*SURM_FAMILIES, "lowrank"]))
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    parser.add_argument("--refit", type=Path, help="fit again from the rows of an earlier calibration file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.refit:
        result = json.loads(args.refit.read_text())
        rows, env = result["rows"], result["environment"]
    else:
        if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: torch sees no CUDA device here")
        env = environment(torch.device(args.device))
        rows = []
        for family in args.families.split(","):
            for shape in SHAPES:
                for tokens in map(int, args.tokens.split(",")):
                    print(family, shape, tokens, file=sys.stderr, flush=True)
                    rows.append(measure(family, shape, tokens, args.reps, args.device, args.dtype))
        env["load_average_end"] = load_average()
    fitted = fit(rows)
    kind = _kind(rows)
    current = score(rows, _modules(rows), layer.FFT_FLOP_COST[kind])
    result = {"environment": env, "rows": rows, "fitted": fitted, "current": current, "device_kind": kind}
    if args.out is None:
        suffix = "" if args.dtype == "float32" else f"-{args.dtype}"
        args.out = Path(__file__).parent / "results" / f"calibration-{kind}{suffix}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"current": current, "fitted": fitted}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
