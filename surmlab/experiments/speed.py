"""Training-step time, training-step peak memory and merged-inference latency of each method at an
equal budget (the paper's efficiency claims: SURM trains about as fast as LoRA and, merged, infers at
exactly the cost of the base model).

Every method adapts the backbone's preset layers at ``budget`` trainable parameters (``None``: the
count of LoRA at rank 8); ``full`` trains everything. A training step is zero_grad, forward,
cross-entropy, backward and one AdamW step on a fixed random batch of ``batch_size`` x ``seq_len``
tokens. Repetitions are interleaved across methods (each round runs every method once, in a rotating
order) and summarised by medians; ``*_vs_lora`` is the median over rounds of the per-round ratio to
LoRA, measured in the same run. ``infer_merged`` is a no-grad forward after folding the trained-looking
(random, non-zero) updates into the weights; ``infer_unmerged`` the same forward before folding.
Timing, peak memory and machine metadata come from the benchmark suite (``benchmarks/common.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from . import common

NAME = "speed"
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"backbone": "tiny-bert", "methods": ["surm-circulant", "surm-toeplitz", "lora", "full"],
              "budget": None, "batch_size": 8, "seq_len": 32, "reps": 2, "warmup": 1, "device": "auto"},
    "cpu": {"backbone": "minilm-l6", "methods": ["surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-ldr",
            "lora", "full"], "budget": None, "batch_size": 16, "seq_len": 128, "reps": 7, "warmup": 2,
            "device": "auto"},
    "paper": {"backbone": "hf:bert-base-uncased", "methods": ["surm-circulant", "surm-toeplitz", "surm-kronecker",
              "surm-ldr", "lora", "full"], "budget": None, "batch_size": 32, "seq_len": 128, "reps": 10,
              "warmup": 2, "device": "auto"},
}  # fmt: skip
LORA_RANK = 8  # budget=None: LoRA's trainable-parameter count at this rank


def bench_common() -> ModuleType:
    """``benchmarks.common`` of the source checkout (the suite is not installed with the package)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "common.py").is_file():
        raise RuntimeError("the speed experiment needs a source checkout of surmlab: no benchmarks/common.py found")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import benchmarks.common

    return benchmarks.common


def validate(p: dict[str, Any]) -> None:
    p["methods"] = common.as_list(p["methods"])
    common.check_backbone(p["backbone"])
    common.check_methods(p["methods"])
    bad = [m for m in p["methods"] if not (m.startswith("surm-") or m in ("lora", "full"))]
    if bad:
        raise ValueError(f"speed compares surm-* (LoRA mode), lora and full; not {', '.join(bad)}")
    if "lora" not in p["methods"]:
        raise ValueError("speed reports ratios against LoRA measured in the same run: list lora among the methods")
    for key in ("batch_size", "seq_len", "reps"):
        p[key] = int(p[key])
        common.check_positive(**{key: p[key]})
    p["warmup"] = int(p["warmup"])
    if p["warmup"] < 0:
        raise ValueError(f"warmup must be >= 0, got {p['warmup']}")
    common.check_choice("device", [p["device"]], ("auto", "cpu", "cuda"))
    if p["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA device is available")
    from ..models import load_backbone

    if load_backbone(p["backbone"], 2, pretrained=False).modality != "text":
        raise ValueError(f"speed times text backbones; {p['backbone']!r} is an image backbone")
    if p["budget"] is None:
        p["budget"] = lora_budget(p["backbone"])
    common.check_budgets(p["backbone"], 2, p["methods"], p["budget"])


def lora_budget(backbone: str) -> int:
    from ..methods import prepare
    from ..models import load_backbone

    bb = load_backbone(backbone, 2, pretrained=False)
    return prepare("lora", bb.model, head=bb.head, hyper={"rank": LORA_RANK}).method_params


def build(p: dict[str, Any], method: str, device: torch.device) -> Any:
    """The backbone (same seeded initialisation for every method) prepared with ``method``."""
    from ..methods import prepare
    from ..models import load_backbone

    set_seed(0)
    bb = load_backbone(p["backbone"], 2, pretrained=False)
    budget = None if method == "full" else p["budget"]
    prepared = prepare(method, bb.model, head=bb.head, budget=budget)
    prepared.model.to(device)
    return bb, prepared


def make_batch(bb: Any, p: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, bb.tokenizer.vocab_size, (p["batch_size"], p["seq_len"]), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (p["batch_size"],), generator=g)
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def step_fn(model: torch.nn.Module, batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
    inputs, labels = batch
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(**inputs).float(), labels).backward()
        optimizer.step()

    return step


def infer_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    def infer() -> None:
        with torch.no_grad():
            model(**inputs)

    return infer


@torch.no_grad()
def randomize_updates(model: torch.nn.Module) -> None:
    """Non-zero update weights, as after training (LoRA's B and SURM's kernels start at zero)."""
    for name, q in model.named_parameters():
        if q.requires_grad and (".updates." in name or "lora_B" in name):
            q.normal_(0, 0.01)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    from ..tuner import surm_layers, unload

    if surm_layers(model):
        return unload(model, merge=True)
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def run(profile: str = "smoke", out_dir: str | None = None, **params: Any) -> pd.DataFrame:
    started = common.start()
    p = common.resolve(PROFILES, profile, params)
    validate(p)
    bench = bench_common()
    out = common.output_dir(out_dir, NAME)
    device = torch.device("cuda" if p["device"] == "cuda" or (p["device"] == "auto" and torch.cuda.is_available())
                          else "cpu")  # fmt: skip
    machine = bench.environment(device)
    # Training steps: every method's model side by side, rounds interleaved.
    built = {m: build(p, m, device) for m in p["methods"]}
    batch = make_batch(next(iter(built.values()))[0], p, device)
    steps = {m: step_fn(prep.model, batch) for m, (_, prep) in built.items()}
    step_times = bench.time_interleaved(steps, device, p["reps"], p["warmup"])
    peaks = {m: bench.peak_memory(steps[m], device) for m in steps}  # after warm steps: AdamW state exists
    info = {m: (prep.method_params, prep.hyper) for m, (_, prep) in built.items()}
    del built, steps
    # Inference: unmerged vs merged forward of trained-looking models.
    unmerged_fns, merged_fns, models = {}, {}, {}
    for method in p["methods"]:
        _, prep = build(p, method, device)
        randomize_updates(prep.model)
        prep.model.eval()
        models[method] = prep.model
        unmerged_fns[method] = infer_fn(prep.model, batch[0])
    unmerged_times = bench.time_interleaved(unmerged_fns, device, p["reps"], p["warmup"])
    for method, model in models.items():
        merged_fns[method] = infer_fn(merged(model), batch[0])
    merged_times = bench.time_interleaved(merged_fns, device, p["reps"], p["warmup"])
    rows = []
    for method in p["methods"]:
        method_params, hyper = info[method]
        rows.append({
            "backbone": p["backbone"], "method": method, "hyper": str(hyper), "method_params": method_params,
            "batch_size": p["batch_size"], "seq_len": p["seq_len"], "reps": p["reps"],
            "step_ms": 1e3 * step_times[method]["median_s"],
            "step_vs_lora": bench.paired_ratio(step_times[method], step_times["lora"]),
            "step_peak_mb": peaks[method] / 2**20,
            "step_peak_vs_lora": bench.ratio(peaks[method], peaks["lora"]),
            "infer_unmerged_ms": 1e3 * unmerged_times[method]["median_s"],
            "infer_unmerged_vs_lora": bench.paired_ratio(unmerged_times[method], unmerged_times["lora"]),
            "infer_merged_ms": 1e3 * merged_times[method]["median_s"],
            "infer_merged_vs_lora": bench.paired_ratio(merged_times[method], merged_times["lora"]),
            "device": str(device), "device_name": machine["device_name"], "torch_threads": machine["torch_threads"],
            "memory_method": machine["memory_method"], "load_average_start": str(machine["load_average_start"]),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    common.write_results(table, out, NAME, profile, p, started)
    return table
