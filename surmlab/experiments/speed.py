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
Timing and peak memory come from ``surmlab.timing`` (the benchmark suite measures with it too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from .. import plots
from ..methods import Prepared, method_info, prepare
from ..models import Backbone, load_backbone
from ..provenance import environment as machine_environment
from ..timing import memory_method, no_grad_call, paired_ratio, peak_memory, randomize_updates, ratio, time_interleaved
from . import common, words

NAME = "speed"
SURM_FOUR = ("surm-circulant", "surm-toeplitz", "surm-kronecker", "surm-ldr")
BASELINES = ("lora", "full")


@dataclass(frozen=True)
class Params:
    backbone: str = "tiny-bert"
    methods: tuple[str, ...] = ("surm-circulant", "surm-toeplitz", "lora", "full")
    budget: str | None = None  # None: LoRA's trainable-parameter count at rank LORA_RANK
    batch_size: int = 8
    seq_len: int = 32
    reps: int = 2
    warmup: int = 1
    device: str = "auto"  # auto | cpu | cuda


PROFILES = {
    "smoke": Params(),
    "cpu": Params(backbone="minilm-l6", methods=(*SURM_FOUR, *BASELINES), batch_size=16, seq_len=128, reps=7,
                  warmup=2),
    "paper": Params(backbone="hf:bert-base-uncased", methods=(*SURM_FOUR, *BASELINES), batch_size=32, seq_len=128,
                    reps=10, warmup=2),
}  # fmt: skip
LORA_RANK = 8  # budget=None: LoRA's trainable-parameter count at this rank


def validate(p: Params) -> None:
    common.check_backbone(p.backbone)
    common.check_methods(p.methods)
    bad = [m for m in p.methods if not (method_info(m).takes_mode or m in BASELINES)]
    if bad:
        raise ValueError(f"speed compares surm-* (LoRA mode), lora and full; not {', '.join(bad)}")
    if "lora" not in p.methods:
        raise ValueError("speed reports ratios against LoRA measured in the same run: list lora among the methods")
    common.check_positive(batch_size=p.batch_size, seq_len=p.seq_len, reps=p.reps)
    if p.warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {p.warmup}")
    common.check_choice("device", [p.device], ("auto", "cpu", "cuda"))
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA device is available")
    if load_backbone(p.backbone, 2, pretrained=False).modality != "text":
        raise ValueError(f"speed times text backbones; {p.backbone!r} is an image backbone")
    common.check_budgets(p.backbone, 2, p.methods, budget_of(p))


def lora_budget(backbone: str) -> int:
    bb = load_backbone(backbone, 2, pretrained=False)
    return prepare("lora", bb.model, head=bb.head, hyper={"rank": LORA_RANK}).method_params


def budget_of(p: Params) -> str | int:
    """The budget every method gets: the parameter, or LoRA's count at rank ``LORA_RANK``."""
    return p.budget if p.budget is not None else lora_budget(p.backbone)


def build(p: Params, method: str, budget: str | int, device: torch.device) -> tuple[Backbone, Prepared]:
    """The backbone (same seeded initialisation for every method) prepared with ``method``."""
    set_seed(0)
    bb = load_backbone(p.backbone, 2, pretrained=False)
    prepared = prepare(method, bb.model, head=bb.head, budget=None if method == "full" else budget)
    prepared.model.to(device)
    return bb, prepared


def make_batch(bb: Backbone, p: Params, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, bb.tokenizer.vocab_size, (p.batch_size, p.seq_len), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (p.batch_size,), generator=g)
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


@common.experiment(NAME, PROFILES, validate)
def run(p: Params, out: Path) -> pd.DataFrame:
    device = torch.device("cuda" if p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available())
                          else "cpu")  # fmt: skip
    machine = machine_environment(device)
    budget = budget_of(p)
    # Training steps: every method's model side by side, rounds interleaved.
    built = {m: build(p, m, budget, device) for m in p.methods}
    batch = make_batch(next(iter(built.values()))[0], p, device)
    steps = {m: step_fn(prep.model, batch) for m, (_, prep) in built.items()}
    step_times = time_interleaved(steps, device, p.reps, p.warmup)
    peaks = {m: peak_memory(steps[m], device) for m in steps}  # after warm steps: AdamW state exists
    info = {m: (prep.method_params, prep.hyper) for m, (_, prep) in built.items()}
    del built, steps
    # Inference: unmerged vs merged forward of trained-looking models.
    unmerged_fns, merged_fns, models = {}, {}, {}
    for method in p.methods:
        _, prep = build(p, method, budget, device)
        randomize_updates(prep.model)
        prep.model.eval()
        models[method] = prep.model
        unmerged_fns[method] = no_grad_call(prep.model, **batch[0])
    unmerged_times = time_interleaved(unmerged_fns, device, p.reps, p.warmup)
    for method, model in models.items():
        merged_fns[method] = no_grad_call(common.merged(model), **batch[0])
    merged_times = time_interleaved(merged_fns, device, p.reps, p.warmup)
    rows = []
    for method in p.methods:
        method_params, hyper = info[method]
        rows.append({
            "backbone": p.backbone, "method": method, "hyper": str(hyper), "method_params": method_params,
            "batch_size": p.batch_size, "seq_len": p.seq_len, "reps": p.reps,
            "step_ms": 1e3 * step_times[method]["median_s"],
            "step_vs_lora": paired_ratio(step_times[method], step_times["lora"]),
            "step_peak_mb": peaks[method] / 2**20,
            "step_peak_vs_lora": ratio(peaks[method], peaks["lora"]),
            "infer_unmerged_ms": 1e3 * unmerged_times[method]["median_s"],
            "infer_unmerged_vs_lora": paired_ratio(unmerged_times[method], unmerged_times["lora"]),
            "infer_merged_ms": 1e3 * merged_times[method]["median_s"],
            "infer_merged_vs_lora": paired_ratio(merged_times[method], merged_times["lora"]),
            "device": str(device), "device_name": machine["device_name"], "torch_threads": machine["torch_threads"],
            "memory_method": memory_method(device), "load_average_start": str(machine["load_average_start"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, out_dir: str | Path | None = None) -> list:
    """Training-step time and peak memory, merged inference latency, and the table."""
    return [
        plots.bars(table, "method", "step_vs_lora", "method", title="Training-step time / LoRA (same rounds)"),
        plots.bars(table, "method", "step_peak_mb", "method", title="Training-step peak memory (MiB)"),
        plots.bars(table, "method", "infer_merged_ms", "method", title="Merged inference latency (ms)"),
        table,
    ]


def summarize(table: pd.DataFrame) -> str:
    """Training-step time, peak memory and merged inference against LoRA's, measured in the same rounds."""
    others = table[table.method != "lora"].set_index("method")
    surm = others[[method_info(m).structure is not None for m in others.index]]
    shown = surm if len(surm) else others
    slow, fast = shown.step_vs_lora.idxmax(), shown.step_vs_lora.idxmin()
    step = words.span(shown.step_vs_lora.min(), shown.step_vs_lora.max(), ".2f", "x")
    peak = words.span(shown.step_peak_vs_lora.min(), shown.step_peak_vs_lora.max(), ".2f", "x")
    merged = words.span(shown.infer_merged_vs_lora.min(), shown.infer_merged_vs_lora.max(), ".2f", "x")
    text = (
        f"Per training step the {'structured updates' if len(surm) else 'methods'} cost {step} LoRA's time "
        f"({fast} fastest, {slow} slowest) and {peak} its peak memory; merged, they infer at {merged} LoRA's "
        "merged latency (both are then the base model)."
    )
    if "full" in others.index:
        full = others.loc["full"]
        text += f" Full fine-tuning: {full.step_vs_lora:.2f}x LoRA's step, {full.step_peak_vs_lora:.2f}x its memory."
    row = table.iloc[0]
    return text + f" Medians of {row.reps} interleaved rounds on {row.device} ({row.torch_threads} threads)."
