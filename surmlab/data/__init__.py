"""Tasks: load a train and an eval split by name, score predictions, batch rows for a model.

One job per module, imports pointing one way (schema <- splits <- sources <- tasks):

- :mod:`.schema`: the records (``Task``, ``Loaded``, ``Spec``, ``Hub``, ``GlueTsv``, ``LocalFiles``);
- :mod:`.splits`: the lab's own seeded train/eval split and the low-resource subsamples;
- sources, each returning a :class:`Loaded`: :mod:`.packaged` (Rotten Tomatoes, MNIST,
  Fashion-MNIST from installed packages), :mod:`.glue` (GLUE TSVs), :mod:`.hub_datasets` (the
  hub or a saved copy), :mod:`.user_data` (``folder:``, ``csv:``, ``tsv:``);
- :mod:`.tasks`: the registry ``SPECS``, ``list_tasks``, ``load_task``;
- :mod:`.metrics`: ``compute_metrics``, ``majority_baseline``; :mod:`.collate`: ``make_collate``.
"""

from .collate import Preprocessing, make_collate
from .glue import default_glue_dir
from .metrics import METRICS, compute_metrics, majority_baseline
from .schema import Loaded, Spec, Task
from .splits import EVAL_FRACTION, SPLIT_SEED
from .tasks import SPECS, USER_FORMS, available_offline, list_tasks, load_task

__all__ = [
    "EVAL_FRACTION",
    "METRICS",
    "SPECS",
    "SPLIT_SEED",
    "USER_FORMS",
    "Loaded",
    "Preprocessing",
    "Spec",
    "Task",
    "available_offline",
    "compute_metrics",
    "default_glue_dir",
    "list_tasks",
    "load_task",
    "majority_baseline",
    "make_collate",
]
