"""Tasks: load a train and an eval split by name, score predictions, batch rows for a model."""

from .tasks import (
    SPECS,
    USER_FORMS,
    Task,
    available_offline,
    compute_metrics,
    default_glue_dir,
    list_tasks,
    load_task,
    majority_baseline,
    make_collate,
)

__all__ = [
    "SPECS",
    "USER_FORMS",
    "Task",
    "available_offline",
    "compute_metrics",
    "default_glue_dir",
    "list_tasks",
    "load_task",
    "majority_baseline",
    "make_collate",
]
