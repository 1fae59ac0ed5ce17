"""The training loop every method shares, on ``accelerate``: read it top to bottom.

``train(TrainConfig(...))`` validates everything (backbone, task, method, budget) *before* it
creates the run directory, then trains with AdamW and a warm-up + cosine/linear schedule,
evaluates each epoch, tracks the best checkpoint, and writes per-step metrics to JSONL. A stop
request (SIGINT/SIGTERM or a ``STOP`` file in the run directory) finishes the current step, saves
and marks the run ``stopped``; ``resume`` continues from the saved step. A NaN/inf loss or any
exception marks the run ``failed`` with the reason, and so does a loss that diverges
(``DIVERGENCE_FACTOR`` times the first step's).
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import signal
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from .data import Task, compute_metrics, load_task, make_collate
from .methods import Prepared, head_parameter_names, prepare
from .models import Backbone, load_backbone
from .provenance import git_commit, package_versions
from .runs import RunDir, atomic_write, read_json, write_json
from .train_config import RESUME_OPTIONS, TrainConfig
from .tuner import read_safetensors, save_adapter, surm_layers

# A loss this many times the first step's is a diverged run, not a result: it ends "failed".
DIVERGENCE_FACTOR = 100.0


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


def build_method(config: TrainConfig, backbone: Backbone) -> Prepared:
    """The configured method on ``backbone`` (the same call at training and at prediction time)."""
    return prepare(
        config.method,
        backbone.model,
        head=backbone.head,
        budget=config.budget,
        hyper=config.hyper or None,
        mode=config.mode,
        targets=config.targets,
        alpha=config.alpha,
        product=config.product,
        lr=config.lr,
    )


def build(config: TrainConfig) -> tuple[Backbone, Task, Prepared]:
    """Backbone, task and method, in that order; raises a clear error on any bad input."""
    set_seed(config.seed)
    task = load_task(
        config.task,
        config.data_dir,
        seed=config.seed,
        shots_per_class=config.shots_per_class,
        train_fraction=config.train_fraction,
        max_train=config.max_train,
        max_eval=config.max_eval,
        **{
            k: v
            for k, v in (
                ("text_column", config.text_column),
                ("text_pair_column", config.text_pair_column),
                ("label_column", config.label_column),
            )
            if v is not None
        },
    )
    backbone = build_backbone(config, task.num_labels)
    if backbone.modality != task.modality:
        raise ValueError(
            f"backbone {config.backbone} reads {backbone.modality}, but task {config.task} is {task.modality}"
        )
    prepared = build_method(config, backbone)
    return backbone, task, prepared


def make_optimizer(prepared: Prepared, config: TrainConfig) -> torch.optim.Optimizer:
    head_names = head_parameter_names(prepared.model, prepared.head)
    body, head = [], []
    for name, p in prepared.model.named_parameters():
        if p.requires_grad:
            (head if name in head_names else body).append(p)
    groups = [{"params": body, "lr": prepared.lr}, {"params": head, "lr": config.head_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    warmup = int(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    """Trainable tensors (any method) and, for SURM, the portable adapter files."""
    folder.mkdir(parents=True, exist_ok=True)
    state = trainable_state(model)
    atomic_write(folder / "trainable.safetensors", lambda tmp: save_file(state, tmp))
    if surm_layers(model):
        save_adapter(model, folder)


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    state = read_safetensors(folder / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(f"saved weights {missing[:3]} do not exist in the rebuilt model")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def evaluate(model, loader, accelerator, task: Task) -> dict[str, float]:
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


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    if num_labels == 1:
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


# -- the loop ----------------------------------------------------------------------------------------------


class Job:
    """One training run: built by ``Job.start`` (validation first, then the run directory), run by ``run``."""

    def __init__(
        self, config: TrainConfig, resume: str | Path | None, progress: bool, overrides: dict[str, Any] | None = None
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, broadcast_object_list
        from torch.utils.data import DataLoader

        if resume is not None:
            config = resumed_config(RunDir(resume), overrides or {})
        self.config, self.progress = config, progress
        self.accelerator = acc = Accelerator(
            cpu=config.cpu,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.grad_accum,
            log_with=config.log_with,
            project_dir=config.runs_dir,
            # Epoch e always sees the permutation seeded by seed + e, so a resumed run skips exactly
            # the batches it already trained on.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        )
        self.backbone, self.task, self.prepared = build(config)  # bad input fails here, before any directory exists
        self.is_main = acc.is_main_process
        if resume is None:  # one run directory, named on the main process and shared with the others
            name = [str(RunDir.create(config.runs_dir, config.run_name()).path) if self.is_main else None]
            if acc.num_processes > 1:
                broadcast_object_list(name)
            resume = name[0]
        self.run_dir = RunDir(resume)

        task, backbone = self.task, self.backbone
        train_loader = DataLoader(
            task.train,
            batch_size=config.batch_size,
            shuffle=True,
            collate_fn=make_collate(task, backbone, config.max_length, train=True),
            # its own generator: starting an epoch's iterator then draws nothing from the global RNG, whose
            # state (dropout) a checkpoint saves and a resume restores
            generator=torch.Generator().manual_seed(config.seed),
        )
        eval_loader = DataLoader(
            task.eval, batch_size=config.eval_batch_size, collate_fn=make_collate(task, backbone, config.max_length)
        )
        self.steps_per_epoch = math.ceil(len(train_loader) / (config.grad_accum * acc.num_processes))
        self.total_steps = min(config.max_steps or 10**12, self.steps_per_epoch * config.epochs)
        optimizer = make_optimizer(self.prepared, config)
        scheduler = make_schedule(optimizer, config, self.total_steps)
        self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = acc.prepare(
            self.prepared.model, optimizer, train_loader, eval_loader, scheduler
        )
        self.state: dict[str, Any] = {
            "step": 0, "epoch": 0, "best": None, "best_metrics": None, "history": [], "metrics_lines": 0,
        }  # fmt: skip
        self.pending_rng: dict[str, Any] | None = None  # restored when the data iterator exists (see epoch)
        checkpoint = self.run_dir.latest_checkpoint()
        if checkpoint is not None:
            load_weights(acc.unwrap_model(self.model), checkpoint)
            # weights_only: a crafted run folder must not run code (tensors and plain values only)
            self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
            self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
            self.state = read_json(checkpoint / "state.json")
            if (checkpoint / RNG_FILE).exists() and acc.num_processes == 1:
                self.pending_rng = read_rng_state(checkpoint, self.state)
            if self.is_main and "metrics_lines" in self.state:  # drop what was logged after the checkpoint
                self.run_dir.truncate_metrics(self.state["metrics_lines"])

    # -- records ---------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the summary records about the run besides its outcome."""
        acc, prepared, task = self.accelerator, self.prepared, self.task
        return {
            "config": asdict(self.config),
            "metric": task.metric,
            "method": prepared.describe(),
            "targets": prepared.targets,
            "hyper": prepared.hyper,
            "trainable_params": prepared.trainable,
            "method_params": prepared.method_params,
            "head_params": prepared.head_params,
            "total_params": prepared.total,
            "backbone_pretrained": self.backbone.pretrained,
            "backbone_source": self.backbone.source,
            "task_description": task.description,
            "train_examples": len(task.train),
            "eval_examples": len(task.eval),
            "world_size": acc.num_processes,
            "device": str(acc.device),
            "device_name": torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else "cpu",
            "versions": package_versions(),
            "git_commit": git_commit(),
            "total_steps": self.total_steps,
        }

    def log(self, record: dict[str, Any], prefix: str) -> None:
        self.state["metrics_lines"] = self.state.get("metrics_lines", 0) + 1
        if self.is_main:
            self.run_dir.log(record)
            if self.config.log_with:
                values = {
                    f"{prefix}/{k.removeprefix(prefix + '_')}": v
                    for k, v in record.items()
                    if k not in ("step", "epoch")
                }
                self.accelerator.log(values, step=record["step"])

    def save(self, folder: Path) -> None:
        if self.is_main:
            save_weights(self.accelerator.unwrap_model(self.model), folder)

    def checkpoint(self) -> None:
        """Everything ``resume`` needs (weights, optimiser, schedule, RNG, loop state), written so that a
        crash keeps the previous checkpoint; plus the latest weights in ``adapter/``."""
        if self.is_main:

            def write(folder: Path) -> None:
                self.save(folder)
                torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
                write_rng_state(folder, self.state)
                write_json(folder / "state.json", self.state)

            self.run_dir.write_checkpoint(self.state["step"], write)
            self.save(self.run_dir.adapter_dir)
            self.run_dir.mark_alive()
        self.accelerator.wait_for_everyone()

    # -- training ---------------------------------------------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward, backward and (when gradients are synchronised) one optimiser step."""
        acc, config = self.accelerator, self.config
        with acc.accumulate(self.model):
            labels = batch.pop("labels")
            loss = loss_fn(self.model(**batch), labels, self.task.num_labels)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingFailed(f"loss became {value} at step {self.state['step']}")
            first = self.state.setdefault("first_loss", value)
            if value > DIVERGENCE_FACTOR * max(first, 1e-3):
                raise TrainingFailed(
                    f"loss diverged: {value:.4g} at step {self.state['step']}, over {DIVERGENCE_FACTOR:g}x the first "
                    f"step's {first:.4g} (learning rate too high?)"
                )
            acc.backward(loss)
            if acc.sync_gradients and config.max_grad_norm:
                acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss

    def epoch(self, stop: StopRequested, bar: Any, started: float) -> None:
        """Train until the epoch ends, the step budget is spent or a stop is requested."""
        acc, config, state = self.accelerator, self.config, self.state
        epoch = state["epoch"]
        self.train_loader.set_epoch(epoch)
        done = state["step"] - epoch * self.steps_per_epoch
        loader = acc.skip_first_batches(self.train_loader, done * config.grad_accum) if done else self.train_loader
        batches = iter(loader)
        if self.pending_rng is not None:  # resumed: the RNG as it was right after the checkpointed step
            restore_rng_state(self.pending_rng)
            self.pending_rng = None
        tick, seen = time.time(), 0
        for batch in batches:
            seen += len(batch["labels"]) * acc.num_processes
            loss = self.step(batch)
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            if state["step"] % config.log_every == 0 or state["step"] == self.total_steps:
                record = {
                    "step": state["step"],
                    "epoch": epoch + (state["step"] - epoch * self.steps_per_epoch) / self.steps_per_epoch,
                    "loss": loss.item(),
                    "lr": self.scheduler.get_last_lr()[0],
                    "examples_per_s": seen / max(1e-9, time.time() - tick),
                    "peak_memory_mb": peak_memory_mb(acc.device),
                    "elapsed_s": time.time() - started,
                }
                self.log(record, "train")
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if self.is_main:
                    self.run_dir.mark_alive()
                tick, seen = time.time(), 0
            if state["step"] >= self.total_steps or stop:
                break
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                self.checkpoint()
        if state["step"] >= (epoch + 1) * self.steps_per_epoch:
            state["epoch"] = epoch + 1

    def evaluate_and_track(self) -> None:
        state, metric = self.state, self.task.metric
        metrics = evaluate(self.model, self.eval_loader, self.accelerator, self.task)
        state["history"].append({"step": state["step"], "epoch": state["epoch"], **metrics})
        self.log(
            {"step": state["step"], "epoch": state["epoch"], **{f"eval_{k}": v for k, v in metrics.items()}}, "eval"
        )
        if state["best"] is None or metrics[metric] > state["best"]:
            state["best"], state["best_metrics"] = metrics[metric], metrics
            self.save(self.run_dir.best_dir)

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        acc, state, run = self.accelerator, self.state, self.run_dir
        described = self.describe()
        if self.is_main:
            run.write_config({"train": asdict(self.config), "task": self.task_info(), "layers": self.prepared.layers})
            run.update_summary(status="running", reason=None, **described)
            run.mark_alive()
            if self.config.log_with:
                acc.init_trackers(run.path.name, config={k: str(v) for k, v in asdict(self.config).items()})
        started = time.time() - state.get("elapsed", 0.0)
        show = self.progress and self.is_main
        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not show, desc=run.path.name)
        stopped = False
        try:
            with StopRequested(run.stop_file) as stop:
                self.model.train()
                while state["step"] < self.total_steps:
                    self.epoch(stop, bar, started)
                    stopped = bool(stop) and state["step"] < self.total_steps
                    if stopped:
                        break
                    self.evaluate_and_track()
                state["elapsed"] = time.time() - started
                self.checkpoint()
        except BaseException as err:  # record every failure, then re-raise
            if self.is_main:
                reason = str(err) if isinstance(err, TrainingFailed) else f"{type(err).__name__}: {err}"
                run.update_summary(
                    status="failed", reason=reason, wall_time_s=time.time() - started, step=state["step"]
                )
            raise
        finally:
            bar.close()
        checksums = acc.gather(torch.tensor([_checksum(self.model)], device=acc.device)).tolist()
        outcome = {
            "status": "stopped" if stopped else "completed",
            "reason": "stop requested" if stopped else None,
            "step": state["step"],
            "final_metrics": None if stopped or not state["history"] else state["history"][-1],
            "best_metrics": state["best_metrics"],
            "wall_time_s": time.time() - started,
            "peak_memory_mb": peak_memory_mb(acc.device),
            "param_checksums": checksums,
        }
        summary = {**described, **outcome}
        if self.is_main:
            summary = run.update_summary(**summary)
            if self.config.log_with:
                acc.end_training()
        acc.wait_for_everyone()
        return {**summary, "run_dir": str(run.path)}

    def task_info(self) -> dict[str, Any]:
        task = self.task
        return {
            "name": task.name,
            "modality": task.modality,
            "num_labels": task.num_labels,
            "label_names": task.label_names,
            "metric": task.metric,
        }


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one training job and return its summary. With ``resume``, continue that run directory from
    its latest checkpoint: its saved config wins over ``config``, except for ``overrides`` among
    ``RESUME_OPTIONS`` (e.g. ``{"max_steps": 40}`` to train longer)."""
    return Job(config, resume, progress, overrides).run()


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
        raise ValueError(f"{run.path.name} is being trained by process {summary.get('pid')}; stop it before resuming")
    run.stop_file.unlink(missing_ok=True)  # a stop asked of the earlier trainer, not of this one
    return replace(TrainConfig.from_dict(run.config()["train"]), **overrides)


# -- random-number state, saved with each checkpoint ------------------------------------------------------

RNG_FILE = "rng.safetensors"


def write_rng_state(folder: Path, state: dict[str, Any]) -> None:
    """torch's (CPU and CUDA) generators as tensors; Python's and NumPy's scalars into ``state``."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = t
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    state["rng"] = {"python": random.getstate(), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    atomic_write(folder / RNG_FILE, lambda tmp: save_file(tensors, tmp))


def read_rng_state(folder: Path, state: dict[str, Any]) -> dict[str, Any]:
    return {"tensors": read_safetensors(folder / RNG_FILE), **state.get("rng", {})}


def restore_rng_state(saved: dict[str, Any]) -> None:
    tensors = saved["tensors"]
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in saved:
        version, internal, gauss = saved["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in saved:
        kind, pos, has_gauss, gauss = saved["numpy"]
        np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))


def _checksum(model: torch.nn.Module) -> float:
    """A fingerprint of the trainable weights: equal on every process iff gradients were synchronised."""
    return float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))
