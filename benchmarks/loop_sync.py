"""What reading the loss back on every step costs: the training loop before and after it synced only to log.

``train()`` used to call ``loss.item()`` on every micro-step (a host-device sync that stalls a GPU's
queue); it now keeps the step losses on the device and reads them back only when it logs, evaluates
or checkpoints (``surmlab.train.LossWindow``). This times ``steps`` training steps of a BERT-shaped
model with a circulant update both ways, interleaved in one run, and reports the ratio::

    python -m benchmarks.loop_sync --out benchmarks/results/loop-sync-cpu.json
    python -m benchmarks.loop_sync --device cuda --layers 12 --hidden 768   # where a GPU is lent

On a CPU ``.item()`` only reads a number that is already there, so the ratio is expected near 1; the
sync matters where kernels run asynchronously.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from surmlab import SurmConfig, inject
from surmlab.fileio import write_json
from surmlab.timing import paired_ratio, time_interleaved
from surmlab.train import LossWindow, TrainState

from .common import environment


def make_steps(layers: int, hidden: int, batch: int, tokens: int, steps: int, log_every: int, device: torch.device):
    """Two callables that each train ``steps`` steps: syncing every step, or only every ``log_every``."""
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).to(device)
    inject(model, SurmConfig(family="circulant", target_modules=["query", "value"], modules_to_save=["classifier"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, tokens), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)

    def step() -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    def every_step() -> None:
        for _ in range(steps):
            step().item()  # what the loop did before

    def at_log_steps() -> None:
        window, state = LossWindow(), TrainState()
        for i in range(1, steps + 1):
            window.add(i, step())
            if i % log_every == 0:
                window.check(state)
        window.check(state)

    return {"sync every step": every_step, "sync at log steps": at_log_steps}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    fns = make_steps(args.layers, args.hidden, args.batch, args.tokens, args.steps, args.log_every, device)
    times = time_interleaved(fns, device, reps=args.reps)
    before, after = times["sync every step"]["median_s"], times["sync at log steps"]["median_s"]
    return {
        "what": f"{args.steps} training steps, BERT {args.layers}x{args.hidden}, batch {args.batch}x{args.tokens}",
        "command": "python -m benchmarks.loop_sync " + " ".join(args.argv),
        "environment": environment(device),
        "times": times,
        "step_s_before": before / args.steps,
        "step_s_after": after / args.steps,
        "after_over_before": paired_ratio(times["sync at log steps"], times["sync every step"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else []
    result = run(args)
    print(
        f"{result['what']} on {args.device}: {1000 * result['step_s_before']:.1f} ms/step syncing every step, "
        f"{1000 * result['step_s_after']:.1f} ms/step syncing at log steps (ratio {result['after_over_before']:.3f})"
    )
    if args.out:
        write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("step_s_before", "step_s_after", "after_over_before")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
