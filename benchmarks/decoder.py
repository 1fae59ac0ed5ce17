"""Training step of the structured families against LoRA on a real decoder (SmolLM2-135M-Instruct, the
offline one), at one budget (140k: the smallest Toeplitz update on these layers is 137,880; LoRA reaches
rank 2 = 115,200 below it) and a short sequence, in one run.

Every method adapts the same preset layers (q_proj and v_proj of all 30 layers) of its own copy of the
model; the steps (forward, reply-only loss, backward, AdamW) are timed interleaved round by round, so
load from other processes hits every method alike, and each ratio is the median of per-round ratios
against LoRA. Peak memory is the step's tensor allocation above the level before it (``surmlab.timing``).
Tokens/s counts every token of the batch.

    nice -n 10 python -m benchmarks.decoder --out benchmarks/results/decoder-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from surmlab.lm.data import load_lm_task
from surmlab.lm.kind import LmKind, response_loss
from surmlab.methods import prepare
from surmlab.models import load_backbone
from surmlab.provenance import load_average
from surmlab.timing import peak_memory, time_interleaved

from .common import environment

METHODS = ("lora", "surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-monarch")


class _Config:
    def __init__(self, max_length: int) -> None:
        self.max_length = max_length


def batch_of(backbone: Any, batch_size: int, max_length: int) -> dict[str, torch.Tensor]:
    """``batch_size`` arithmetic problems, cut to ``max_length`` tokens (padding included in the count)."""
    task = load_lm_task("arithmetic", max_train=batch_size, max_eval=1)
    collate = LmKind().collate(task, backbone, _Config(max_length), train=True)
    return collate([{**row, "index": i} for i, row in enumerate(task.train)])


def step_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def step() -> None:
        loss = response_loss(model(**inputs).logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="140k", help="trainable parameters of every method")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per row (a short sequence)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    backbone = load_backbone("smollm2-135m", 0)
    batch = batch_of(backbone, args.batch_size, args.max_length)
    tokens = int(batch["input_ids"].numel())
    prepared = {m: prepare(m, copy.deepcopy(backbone.model), head=[], budget=args.budget) for m in args.methods}
    steps = {m: step_fn(p.model, batch) for m, p in prepared.items()}
    load_before = load_average()
    times = time_interleaved(steps, device, reps=args.reps, warmup=1)
    rows = []
    for method, p in prepared.items():
        ratios = [t / b for t, b in zip(times[method]["times_s"], times["lora"]["times_s"], strict=True)]
        peak = peak_memory(steps[method], device)
        rows.append({"method": method, "hyper": p.hyper, "method_params": p.method_params, "targets": p.targets,
                     "step": times[method], "tokens_per_s": tokens / times[method]["median_s"],
                     "step_vs_lora": statistics.median(ratios), "step_peak_bytes": peak})  # fmt: skip
    lora_peak = next(r["step_peak_bytes"] for r in rows if r["method"] == "lora")
    for row in rows:
        row["peak_vs_lora"] = row["step_peak_bytes"] / lora_peak
    result = {
        "benchmark": "decoder",
        "model": backbone.source,
        "budget": args.budget,
        "batch": {"rows": args.batch_size, "tokens": tokens, "max_length": args.max_length},
        "threads": args.threads,
        "load_average": {"before": load_before, "after": load_average()},
        "environment": environment(device),
        "rows": rows,
    }
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for row in rows:
        print(f"{row['method']:16s} {row['method_params']:>8,d} params  step {row['step']['median_s']:.3f} s "
              f"({row['step_vs_lora']:.2f}x LoRA)  peak {row['step_peak_bytes'] / 2**20:.0f} MiB "
              f"({row['peak_vs_lora']:.2f}x)  {row['tokens_per_s']:.0f} tokens/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
