"""The training loop every method shares, on ``accelerate``: read ``train`` top to bottom.

``train(TrainConfig(...))`` validates everything (backbone, task, method, budget) *before* it
creates the run directory, then trains with AdamW and a warm-up + cosine/linear/constant schedule
(transformers' ``get_scheduler``), evaluates each epoch (or every ``eval_every`` steps), tracks the
best weights, and writes per-step metrics to JSONL. A stop request (SIGINT/SIGTERM or a ``STOP``
file in the run directory) finishes the current step, evaluates, saves and marks the run ``stopped``;
``resume`` continues from the saved step. A NaN/inf loss or any exception marks the run ``failed``
with the reason, and so does a loss that diverges (``DIVERGENCE_FACTOR`` times the first step's).
Weight and checkpoint files: ``runs``.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .data import Task, compute_metrics, load_task, make_collate
from .data.collate import Collate, IndexedRows
from .lm import kind as _lm_kind  # noqa: F401  (registers the decoder task kind)
from .memory import (
    LengthBuckets,
    MemoryDefaults,
    bf16_device,
    enable_gradient_checkpointing,
    text_columns,
    text_lengths,
    with_memory_defaults,
)
from .methods import Prepared, head_parameter_names, prepare
from .models import Backbone, load_backbone
from .provenance import git_commit, package_versions
from .runs import (
    RunConfig,
    RunDir,
    RunStatus,
    RunSummary,
    SavedRng,
    TaskInfo,
    load_weights,
    save_weights,
)
from .task_kinds import TaskKind, task_kind
from .train_config import PRECISIONS, RESUME_OPTIONS, SCHEDULES, TrainConfig

__all__ = [
    "DIVERGENCE_FACTOR",
    "PRECISIONS",
    "RESUME_OPTIONS",
    "SCHEDULES",
    "WEIGHT_RMS_LIMIT",
    "StopRequested",
    "TrainConfig",
    "TrainState",
    "TrainingFailed",
    "build",
    "build_backbone",
    "build_method",
    "load_weights",  # lives in runs; still importable from here
    "save_weights",
    "train",
]

# A loss this many times the first step's is a diverged run, not a result: it ends "failed".
DIVERGENCE_FACTOR = 100.0
# Trained weights (update, head) whose root mean square passes this have exploded, whatever the loss
# says (a loss can stay finite while the weights run off): the run ends "failed". Pretrained and
# trained weights sit far below it (about 0.01 to 1).
WEIGHT_RMS_LIMIT = 1e3
# Each of SCHEDULES by its name in transformers' ``get_scheduler`` (all with linear warm-up).
SCHEDULER_NAMES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class StopRequested:
    """Set by SIGINT/SIGTERM or the run's STOP file; checked after every optimiser step."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file, self.flag = stop_file, False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: rely on the stop file
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __bool__(self) -> bool:
        return self.flag or bool(self.stop_file and self.stop_file.exists())


class TrainingFailed(RuntimeError):
    pass


@dataclass
class TrainState:
    """Where the loop stands; saved as a checkpoint's ``state.json`` and read back by a resume."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # epochs completed
    best: float | None = None  # the best evaluation's value of the task's metric...
    best_metrics: dict[str, float] | None = None  # ...and all its metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    metrics_lines: int | None = 0  # lines in metrics.jsonl; None: a checkpoint too old to say
    first_loss: float | None = None  # the yardstick of divergence
    elapsed: float = 0.0  # seconds trained before this process (set when a run ends or stops)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """Tolerates older checkpoints: a missing key takes its default (``metrics_lines``: None), and
        the RNG scalars saved beside the state (``"rng"``, read by ``runs.load_checkpoint``) are skipped."""
        known = {f.name for f in fields(cls)}
        return cls(**{"metrics_lines": None, **{k: v for k, v in data.items() if k in known}})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- building blocks -----------------------------------------------------------------------------------


def build_backbone(config: TrainConfig, num_labels: int) -> Backbone:
    """The run's backbone; seeded, so a randomly initialised one is rebuilt identically at prediction."""
    torch.manual_seed(config.seed)
    return load_backbone(
        config.backbone,
        num_labels,
        regression=num_labels == 1,
        pretrained=config.pretrained,
        image_size=config.image_size,
    )


def build_method(config: TrainConfig, backbone: Backbone, nearest: bool = False) -> Prepared:
    """The configured method on ``backbone`` (the same call at training, prediction and budget time)."""
    return prepare(
        config.method,
        backbone.model,
        head=backbone.head,
        budget=config.budget,
        hyper=config.hyper or None,
        hyper_pattern=config.hyper_pattern or None,
        mode=config.mode,
        targets=config.targets,
        alpha=config.alpha,
        product=config.product,
        dropout=config.dropout,
        init=config.init,
        lr=config.lr,
        nearest=nearest,
    )


class Classification:
    """The default task kind (``surmlab.task_kinds``): a classifier's logits against class labels."""

    name = "classification"
    memory_defaults = MemoryDefaults()

    def claims(self, task: str) -> bool:
        return True

    def load(self, config: TrainConfig) -> Task:
        columns = (
            ("text_column", config.text_column),
            ("text_pair_column", config.text_pair_column),
            ("label_column", config.label_column),
        )
        return load_task(
            config.task,
            config.data_dir,
            seed=config.seed,
            shots_per_class=config.shots_per_class,
            train_fraction=config.train_fraction,
            max_train=config.max_train,
            max_eval=config.max_eval,
            **{k: v for k, v in columns if v is not None},
        )

    def collate(self, task: Task, backbone: Backbone, config: TrainConfig, train: bool) -> Collate:
        return make_collate(task, backbone, config.max_length, train=train, seed=config.seed if train else None)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], task: Task) -> torch.Tensor:
        labels = batch.pop("labels")
        return loss_fn(model(**batch), labels, task.num_labels)

    def evaluate(self, model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: Task):
        return evaluate(model, loader, accelerator, task)


def kind_of(config: TrainConfig) -> TaskKind:
    """The task kind that reads ``config.task`` (classification unless a registered kind claims it)."""
    return task_kind(config.task, Classification())


def build(config: TrainConfig) -> tuple[Backbone, Task, Prepared]:
    """Backbone, task and method, in that order; raises a clear error on any bad input."""
    set_seed(config.seed)
    task = kind_of(config).load(config)
    backbone = build_backbone(config, task.num_labels)
    if backbone.modality != task.modality:
        raise ValueError(
            f"backbone {config.backbone} reads {backbone.modality}, but task {config.task} is {task.modality}"
        )
    prepared = build_method(config, backbone)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(prepared.model)
    if config.length_bucketing:
        text_columns(task.train)  # an image task is refused here, before the run folder exists
    return backbone, task, prepared


def make_optimizer(prepared: Prepared, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: the method's parameters at its learning rate, the head's at ``head_lr``."""
    head_names = head_parameter_names(prepared.model, prepared.head)
    body, head = [], []
    for name, p in prepared.model.named_parameters():
        if p.requires_grad:
            (head if name in head_names else body).append(p)
    groups = [{"params": body, "lr": prepared.lr}, {"params": head, "lr": config.head_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """Linear warm-up over ``warmup_ratio`` of the steps, then ``config.schedule``."""
    return get_scheduler(
        SCHEDULER_NAMES[config.schedule],
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


def make_accelerator(config: TrainConfig) -> Accelerator:
    return Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=config.log_with,
        project_dir=config.runs_dir,
        # Epoch e always sees the permutation seeded by seed + e, so a resumed run skips exactly
        # the batches it already trained on.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )


def make_loaders(task: Task, backbone: Backbone, config: TrainConfig) -> tuple[DataLoader, DataLoader]:
    buckets = None
    if config.length_bucketing:
        buckets = LengthBuckets(text_lengths(task.train), config.batch_size, config.seed)
    train_loader = DataLoader(
        IndexedRows(task.train),  # each row's position seeds its augmentation
        batch_size=config.batch_size,
        shuffle=buckets is None,
        sampler=buckets,  # its order is a function of (seed, epoch) too: a resume skips what it trained on
        collate_fn=kind_of(config).collate(task, backbone, config, train=True),
        # its own generator: starting an epoch's iterator then draws nothing from the global RNG, whose
        # state (dropout) a checkpoint saves and a resume restores
        generator=torch.Generator().manual_seed(config.seed),
    )
    eval_loader = DataLoader(
        task.eval, batch_size=config.eval_batch_size, collate_fn=kind_of(config).collate(task, backbone, config, False)
    )
    return train_loader, eval_loader


def new_run_dir(acc: Accelerator, config: TrainConfig) -> RunDir:
    """One run directory, named on the main process and shared with the others."""
    name = [str(RunDir.create(config.runs_dir, config.run_name()).path) if acc.is_main_process else None]
    if acc.num_processes > 1:
        broadcast_object_list(name)
    return RunDir(name[0])


def micro_batches(
    acc: Accelerator,
    loader: DataLoader,
    collate: Collate,
    state: TrainState,
    steps_per_epoch: int,
    grad_accum: int,
    saved_rng: SavedRng | None,
) -> Iterator[dict[str, torch.Tensor]]:
    """The training batches from where ``state`` stands on, epoch after epoch, each epoch in its
    seeded order; a resumed run skips what it trained on and then restores the checkpoint's RNG."""
    epoch = state.epoch
    while True:
        loader.set_epoch(epoch)
        collate.set_epoch(epoch)
        done = state.step - epoch * steps_per_epoch
        batches = iter(acc.skip_first_batches(loader, done * grad_accum) if done else loader)
        if saved_rng is not None:  # the RNG as it was right after the checkpointed step
            saved_rng.restore()
            saved_rng = None
        yield from batches
        epoch += 1


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    if num_labels == 1:
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def check_loss(value: float, step: int, state: TrainState) -> None:
    """Raise ``TrainingFailed`` on a NaN/inf loss or one ``DIVERGENCE_FACTOR`` times the first step's."""
    if not math.isfinite(value):
        raise TrainingFailed(f"loss became {value} at step {step}")
    if state.first_loss is None:
        state.first_loss = value
    first = state.first_loss
    if value > DIVERGENCE_FACTOR * max(first, 1e-3):
        raise TrainingFailed(
            f"loss diverged: {value:.4g} at step {step}, over {DIVERGENCE_FACTOR:g}x the first "
            f"step's {first:.4g} (learning rate too high?)"
        )


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: Task) -> dict[str, float]:
    model.eval()
    preds, labels = [], []
    for batch in loader:
        y = batch.pop("labels")
        logits = model(**batch)
        logits, y = accelerator.gather_for_metrics((logits, y))
        preds.append((logits.squeeze(-1) if task.num_labels == 1 else logits.argmax(-1)).float().cpu())
        labels.append(y.float().cpu())
    model.train()
    return compute_metrics(task.metric, torch.cat(preds).numpy(), torch.cat(labels).numpy())


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def describe(
    config: TrainConfig, acc: Accelerator, backbone: Backbone, task: Task, prepared: Prepared, total_steps: int
) -> RunSummary:
    """What the run is (besides how it ends): the ``RunSummary`` fields a trainer knows at the start."""
    return RunSummary(
        config=config,
        metric=task.metric,
        method=prepared.method,
        method_description=prepared.describe(),
        targets=prepared.targets,
        hyper=prepared.hyper,
        trainable_params=prepared.trainable,
        method_params=prepared.method_params,
        head_params=prepared.head_params,
        total_params=prepared.total,
        backbone_pretrained=backbone.pretrained,
        backbone_source=backbone.source,
        task_description=task.description,
        train_examples=len(task.train),
        eval_examples=len(task.eval),
        world_size=acc.num_processes,
        device=str(acc.device),
        device_name=torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else "cpu",
        versions=package_versions(),
        git_commit=git_commit(),
        total_steps=total_steps,
    )


def task_info(task: Task) -> TaskInfo:
    return TaskInfo(task.name, task.modality, task.num_labels, task.label_names, task.metric)


def checksum(model: torch.nn.Module) -> float:
    """A fingerprint of the trainable weights: equal on every process iff gradients were synchronised."""
    return float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))


def check_weights(rms: float, step: int) -> None:
    """Raise ``TrainingFailed`` when the trained weights' root mean square is NaN/inf or past ``WEIGHT_RMS_LIMIT``."""
    if not math.isfinite(rms):
        raise TrainingFailed(f"the trained weights became {rms} at step {step}")
    if rms > WEIGHT_RMS_LIMIT:
        raise TrainingFailed(
            f"the trained weights exploded: root mean square {rms:.4g} at step {step}, over {WEIGHT_RMS_LIMIT:g} "
            "(learning rate too high?)"
        )


@dataclass
class MetricsLog:
    """Where each step's and evaluation's record goes: the run's ``metrics.jsonl`` (written by the main
    process; every process counts the lines, which a checkpoint saves) and the experiment tracker."""

    run: RunDir
    acc: Accelerator
    state: TrainState
    tracker: bool = False

    def write(self, record: dict[str, Any], prefix: str) -> None:
        self.state.metrics_lines = (self.state.metrics_lines or 0) + 1
        if not self.acc.is_main_process:
            return
        self.run.log(record)
        if self.tracker:
            values = {
                f"{prefix}/{k.removeprefix(prefix + '_')}": v for k, v in record.items() if k not in ("step", "epoch")
            }
            self.acc.log(values, step=record["step"])


class LossWindow:
    """The losses since the last check, kept on the device, and the trained weights' size: reading them
    back (``check``) is the one host-device sync of a step, so the loop does it only when it logs,
    evaluates or checkpoints."""

    def __init__(self, weights: list[torch.Tensor] | None = None) -> None:
        self.losses: list[tuple[int, torch.Tensor]] = []
        self.weights = [w for w in weights or [] if w.numel()]
        self.numel = sum(w.numel() for w in self.weights)

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.losses.append((step, loss.detach()))

    def check(self, state: TrainState) -> float | None:
        """Raise ``TrainingFailed`` on any NaN/inf or diverged loss since the last check, in order, then
        on weights that exploded; returns the latest loss."""
        if not self.losses:
            return None
        readings = [loss.float() for _, loss in self.losses]
        if self.weights:
            with torch.no_grad():
                squares = torch.stack([w.detach().float().pow(2).sum() for w in self.weights]).sum()
            readings.append((squares / self.numel).sqrt().to(readings[0].device))
        values = torch.stack(readings).tolist()
        for (step, _), value in zip(self.losses, values, strict=False):
            check_loss(value, step, state)
        if self.weights:
            check_weights(values[-1], self.losses[-1][0])
        last = values[len(self.losses) - 1]
        self.losses.clear()
        return last


# -- the loop ----------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> RunSummary:
    """Run one training job and return its summary (``summary.run_dir`` is the run folder). With
    ``resume``, continue that run directory from its latest checkpoint: its saved config wins over
    ``config``, except for ``overrides`` among ``RESUME_OPTIONS`` (e.g. ``{"max_steps": 40}``).

    The trainer holds the run folder's lock (``RunDir.exclusive``) from before it reads a resumed run
    until it returns, so no two processes ever train one run."""
    with contextlib.ExitStack() as held:
        if resume is None:
            return _train(config, None, progress, held)
        run = RunDir(resume)
        if main_process():
            held.enter_context(run.exclusive())
        return _train(resumed_config(run, overrides or {}), run, progress, held)


def main_process() -> bool:
    """Whether this is the main process of a (torchrun / accelerate) launch, before accelerate starts."""
    return os.environ.get("RANK", "0") == "0"


def _train(config: TrainConfig, run: RunDir | None, progress: bool, held: contextlib.ExitStack) -> RunSummary:
    # -- setup: everything is validated (in build) before the run directory exists
    kind = kind_of(config)
    config = with_memory_defaults(config, kind.memory_defaults, bf16_device(config))
    acc = make_accelerator(config)
    backbone, task, prepared = build(config)
    is_main = acc.is_main_process
    if run is None:
        run = new_run_dir(acc, config)
        if is_main:
            held.enter_context(run.exclusive())
    train_loader, eval_loader = make_loaders(task, backbone, config)
    steps_per_epoch = math.ceil(len(train_loader) / (config.grad_accum * acc.num_processes))
    total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
    optimizer = make_optimizer(prepared, config)
    scheduler = make_schedule(optimizer, config, total_steps)
    collate = train_loader.collate_fn
    model, optimizer, train_loader, eval_loader, scheduler = acc.prepare(
        prepared.model, optimizer, train_loader, eval_loader, scheduler
    )
    unwrapped = acc.unwrap_model(model)

    # -- the run folder: continue from its checkpoint (if any), record the run as running
    description = describe(config, acc, backbone, task, prepared, total_steps)
    run_config = RunConfig(config, task_info(task), prepared.layers)
    record, saved, saved_rng = run.start(description, run_config, unwrapped, optimizer, scheduler, main=is_main)
    state = TrainState.from_dict(saved) if saved is not None else TrainState()
    saved_rng = saved_rng if acc.num_processes == 1 else None
    if is_main and config.log_with:
        acc.init_trackers(run.path.name, config={k: str(v) for k, v in asdict(config).items()})

    log = MetricsLog(run, acc, state, tracker=is_main and bool(config.log_with))

    def checkpoint() -> None:
        losses.check(state)  # never save weights a bad step has already spoilt
        state.elapsed = time.time() - started
        if is_main:
            run.checkpoint(state.step, unwrapped, optimizer, scheduler, state.to_dict())
        acc.wait_for_everyone()

    started = time.time() - state.elapsed
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and is_main), desc=run.path.name)
    batches = micro_batches(acc, train_loader, collate, state, steps_per_epoch, config.grad_accum, saved_rng)
    losses, stopped = LossWindow([p for p in unwrapped.parameters() if p.requires_grad]), False
    try:
        with StopRequested(run.stop_file) as stop:
            model.train()
            tick, seen = time.time(), 0
            while state.step < total_steps:
                # -- forward and backward; the optimiser steps when the accumulated gradients sync
                batch = next(batches)
                seen += len(batch["labels"]) * acc.num_processes
                with acc.accumulate(model):
                    loss = kind.loss(model, batch, task)
                    losses.add(state.step + 1, loss)  # no .item(): that would sync every micro-step
                    acc.backward(loss)
                    if acc.sync_gradients and config.max_grad_norm:
                        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                if not acc.sync_gradients:
                    continue
                state.step += 1
                state.epoch = state.step // steps_per_epoch
                bar.update(1)

                # -- log: the only place a plain step reads a value back from the device
                if state.step % config.log_every == 0 or state.step == total_steps:
                    value, now = losses.check(state), time.time()
                    log.write({"step": state.step, "epoch": state.step / steps_per_epoch, "loss": value,
                               "lr": scheduler.get_last_lr()[0], "examples_per_s": seen / max(1e-9, now - tick),
                               "peak_memory_mb": peak_memory_mb(acc.device), "elapsed_s": now - started},
                              "train")  # fmt: skip
                    bar.set_postfix(loss=f"{value:.4f}")
                    if is_main:
                        run.mark_alive()
                    tick, seen = time.time(), 0

                # -- a stop request (signal or STOP file) ends the run after this step and one last
                # evaluation, so a stopped run has a result to plot and compare
                stopping = bool(stop) and state.step < total_steps

                # -- evaluate at each epoch's end (or every eval_every steps) and keep the best weights
                every = config.eval_every or steps_per_epoch
                if stopping or state.step % every == 0 or state.step == total_steps:
                    losses.check(state)
                    # evaluation draws nothing from the training RNG (a DataLoader draws its base seed), so
                    # when and how often a run evaluates never changes its dropout or data order
                    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []):
                        metrics = kind.evaluate(model, eval_loader, acc, task)
                    state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
                    evaluated = {f"eval_{k}": v for k, v in metrics.items()}
                    log.write({"step": state.step, "epoch": state.epoch, **evaluated}, "eval")
                    if state.best is None or metrics[task.metric] > state.best:
                        state.best, state.best_metrics = metrics[task.metric], metrics
                        if is_main:
                            save_weights(unwrapped, run.best_dir)
                    tick, seen = time.time(), 0
                if stopping:
                    stopped = True
                    break

                # -- checkpoint every checkpoint_every steps (the last one is taken below)
                if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.step < total_steps:
                    checkpoint()
            checkpoint()
    except BaseException as err:  # record every failure, then re-raise
        if is_main:
            reason = str(err) if isinstance(err, TrainingFailed) else f"{type(err).__name__}: {err}"
            status = RunStatus.FAILED
            run.finish(
                replace(record, status=status, reason=reason, wall_time_s=time.time() - started, step=state.step)
            )
        raise
    finally:
        bar.close()

    # -- the outcome
    checksums = acc.gather(torch.tensor([checksum(model)], device=acc.device)).tolist()
    outcome = replace(
        record,
        status=RunStatus.STOPPED if stopped else RunStatus.COMPLETED,
        reason="stop requested" if stopped else None,
        step=state.step,
        final_metrics=state.history[-1] if state.history else None,
        best_metrics=state.best_metrics,
        wall_time_s=time.time() - started,
        peak_memory_mb=peak_memory_mb(acc.device),
        param_checksums=checksums,
    )
    summary = run.finish(outcome) if is_main else replace(outcome, run_dir=str(run.path))
    if is_main and config.log_with:
        acc.end_training()
    acc.wait_for_everyone()
    return summary


def resumed_config(run: RunDir, overrides: dict[str, Any]) -> TrainConfig:
    """The saved configuration of ``run`` with ``overrides``; refuses a run whose trainer is alive."""
    if not run.config_file.exists():
        raise FileNotFoundError(f"{run.path} is not a run directory (no config.json)")
    refused = sorted(set(overrides) - set(RESUME_OPTIONS))
    if refused:
        raise ValueError(
            f"cannot change {', '.join(refused)} when resuming {run.path.name}: they define the run; "
            f"resuming may change only {', '.join(RESUME_OPTIONS)}"
        )
    summary = run.summary()
    if run.trainer_alive(summary):
        raise ValueError(f"{run.path.name} is being trained by process {summary.pid}; stop it before resuming")
    run.stop_file.unlink(missing_ok=True)  # a stop asked of the earlier trainer, not of this one
    return replace(run.config().train, **overrides)
