"""Task kinds: how the training loop loads, batches, scores and evaluates one kind of task.

The loop in :mod:`surmlab.train` is written once against :class:`TaskKind`; classification is the
default kind (defined beside the loop), and a kind registered here claims the task names it reads
(``surmlab.lm`` registers the decoder kind for instruction tasks). Adding a kind of task is one
class and one ``register_task_kind`` call; the loop does not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from .data.collate import Collate
    from .memory import MemoryDefaults
    from .train_config import TrainConfig


class TaskKind(Protocol):
    """One kind of task: its ``Task``-like record has ``name``, ``modality``, ``num_labels``, ``metric``
    (higher is better), ``train``, ``eval``, ``label_names`` and ``description``."""

    name: str
    memory_defaults: MemoryDefaults  # length bucketing and bf16 when a config leaves them to the lab

    def claims(self, task: str) -> bool:
        """Whether this kind reads the task named ``task``."""

    def load(self, config: TrainConfig) -> Any:
        """The task record of ``config.task``, subsampled as ``config`` says."""

    def collate(self, task: Any, backbone: Any, config: TrainConfig, train: bool) -> Collate:
        """A DataLoader ``collate_fn`` for ``task`` on ``backbone``; batches always hold ``labels``."""

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], task: Any) -> torch.Tensor:
        """The training loss of one batch (``batch`` may be consumed)."""

    def evaluate(
        self, model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: Any
    ) -> dict[str, float]:
        """Metrics on the eval split, ``task.metric`` among them."""


TASK_KINDS: list[TaskKind] = []


def register_task_kind(kind: TaskKind) -> TaskKind:
    if any(k.name == kind.name for k in TASK_KINDS):
        raise ValueError(f"task kind {kind.name!r} is registered twice")
    TASK_KINDS.append(kind)
    return kind


def task_kind(task: str, default: TaskKind) -> TaskKind:
    """The registered kind that claims ``task``, else ``default``."""
    return next((k for k in TASK_KINDS if k.claims(task)), default)
