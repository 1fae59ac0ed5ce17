"""``surmlab study``: a study from a spec file (JSON/YAML) or from flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..methods import METHODS
from . import StudySpec, study


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="a JSON or YAML spec file (else the flags below make the spec)")
    p.add_argument("--name", help="the study's folder name under --root")
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--task", default="rotten-tomatoes")
    p.add_argument("--methods", help=f"comma-separated, among: {', '.join(METHODS)}")
    p.add_argument("--budgets", default="", help="comma-separated, e.g. 9k,18k,37k")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated whole numbers (default 0,1,2)")
    p.add_argument("--lrs", default="", help="comma-separated learning rates (default: each method's own)")
    p.add_argument("--baseline", default="lora", help="compared with every other method, paired by seed")
    p.add_argument("--mode", default="lora", choices=["lora", "adapter"], help="SURM's mode for surm-* methods")
    p.add_argument(
        "--hyper",
        default="{}",
        help='methods at fixed hyper-parameters as JSON, e.g. \'{"adapter": {"bottleneck": 64}}\'',
    )
    p.add_argument("--train", default="{}", help="further training options as JSON, e.g. '{\"max_steps\": 150}'")
    p.add_argument("--root", default="studies", help="where study folders live")
    p.add_argument("--workers", type=int, default=1, help="cells at once (one per GPU where there are GPUs)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the cells on Ray: local, auto or host:port")


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def json_object(flag: str, text: str, example: str) -> dict:
    """A flag's JSON object, or a one-line error naming the flag and showing ``example``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} {text!r} is not JSON ({err.msg}); write e.g. '{example}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} {text!r} must be a JSON object, e.g. '{example}'")
    return value


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    if args.spec:
        return StudySpec.load(args.spec)
    if not args.name or not args.methods:
        raise ValueError("give a spec file, or --name and --methods (with --budgets and --seeds)")
    train = json_object("--train", args.train, '{"max_steps": 150}')
    hyper = json_object("--hyper", args.hyper, '{"adapter": {"bottleneck": 64}}')
    try:
        seeds = [int(s) for s in _list(args.seeds)]
        lrs = [float(v) for v in _list(args.lrs)] or [None]
    except ValueError as err:
        raise ValueError(f"--seeds takes whole numbers and --lrs numbers: {err}") from None
    return StudySpec(
        name=args.name,
        backbone=args.backbone,
        task=args.task,
        methods=tuple(_list(args.methods)),
        budgets=tuple(_list(args.budgets)),
        seeds=tuple(seeds),
        lrs=tuple(lrs),
        baseline=args.baseline,
        mode=args.mode,
        hyper=hyper,
        train=train,
    )


def cmd_study(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    result = study(spec, root=args.root, workers=args.workers, ray=args.ray)
    columns = ["method", "budget", "lr", "method_params", "seeds", "failed", "mean", "ci_low", "ci_high", "verdict"]
    shown = result.summary[[c for c in columns if c in result.summary]]
    print(shown.to_string(index=False))
    print(f"\n{result.folder}: spec.json, cells.csv, summary.csv, runs/")
    return report_unfinished(result.cells, result.folder / "cells.csv")


def report_unfinished(cells: pd.DataFrame, file: Path) -> int:
    """0 when every cell completed; else one line on stderr (how many, why the first) and 1."""
    left = cells[cells["status"] != "completed"]
    if left.empty:
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in left["status"].value_counts().items())
    first = left.iloc[0]
    why = f"; first: {first['run'] or 'a cell'}: {first['reason']}" if isinstance(first["reason"], str) else ""
    print(f"{len(left)} of {len(cells)} cells did not complete ({counts}){why}; all reasons in {file}", file=sys.stderr)
    return 1
