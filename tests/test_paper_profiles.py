"""The ``paper`` profiles run: each experiment's paper profile for two steps on CPU.

Sizes shrink (steps, rows, seeds, repetitions, image size); the paper's backbone, tasks and methods
stay. Only the hub boundary is replaced: the hub answers, a timm download builds the same
architecture with random weights, ``hf:bert-base-uncased`` is ``BertConfig()`` (its architecture)
with MiniLM's uncased WordPiece vocabulary (the same 30,522 tokens), and each hub dataset is a small
local ``DatasetDict`` with the real columns, features and class counts. GLUE tasks whose files ship
in ``data/glue`` read them as in the paper run.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from surmlab import hub
from surmlab.data import SPECS
from surmlab.data import tasks as task_registry
from surmlab.experiments import common, get, names
from surmlab.models import backbones, minilm_path

pytestmark = pytest.mark.slow

VIT_B = "timm:vit_base_patch16_224.augreg_in21k"
BERT_BASE = "hf:bert-base-uncased"
SMALL_IMAGES = 32  # ViT-B/16 on a 2x2 patch grid: the paper's layer shapes at a fraction of the compute
ROWS = {"max_train": 8, "max_eval": 4}


# -- local stand-ins with the hub's schemas -------------------------------------------------------------------


def _images(n: int) -> list[PILImage.Image]:
    rng = np.random.default_rng(n)
    return [PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _image_dataset(image: str, labels: dict[str, int], class_names: tuple[str, ...] | None = None) -> DatasetDict:
    """Train (two images per class, so one shot per class and a stratified half exist) and test splits;
    ``labels`` maps each label column to its number of classes (the first is the task's)."""

    def split(per_class: int) -> Dataset:
        n = per_class * max(labels.values())
        columns: dict[str, Any] = {image: _images(n)}
        features = {image: Image()}
        for i, (column, count) in enumerate(labels.items()):
            label_names = list(class_names) if class_names and i == 0 else [f"{column}_{k}" for k in range(count)]
            columns[column] = [k % count for k in range(n)]
            features[column] = ClassLabel(names=label_names)
        return Dataset.from_dict(columns, features=Features(features))

    return DatasetDict({"train": split(2), "test": split(1)})


def _qnli() -> DatasetDict:
    """``nyu-mll/glue`` ``qnli``: question, sentence, label (entailment / not_entailment), idx."""

    def split(n: int, labelled: bool = True) -> Dataset:
        features = Features(
            {
                "question": Value("string"),
                "sentence": Value("string"),
                "label": ClassLabel(names=["entailment", "not_entailment"]),
                "idx": Value("int32"),
            }
        )
        return Dataset.from_dict(
            {
                "question": [f"what is item {i}?" for i in range(n)],
                "sentence": [f"item {i} is a thing of kind {i % 3}." for i in range(n)],
                "label": [i % 2 if labelled else -1 for i in range(n)],
                "idx": list(range(n)),
            },
            features=features,
        )

    return DatasetDict({"train": split(16), "validation": split(8), "test": split(4, labelled=False)})


HUB_DATASETS = {
    ("uoft-cs/cifar10", None): lambda: _image_dataset("img", {"label": 10}, task_registry.CIFAR10_NAMES),
    ("uoft-cs/cifar100", None): lambda: _image_dataset("img", {"fine_label": 100, "coarse_label": 20}),
    ("tanganke/sun397", None): lambda: _image_dataset("image", {"label": 397}),
    ("tanganke/dtd", None): lambda: _image_dataset("image", {"label": 47}),
    ("tanganke/stl10", None): lambda: _image_dataset("image", {"label": 10}, task_registry.STL10_NAMES),
    ("nyu-mll/glue", "qnli"): _qnli,
}


@functools.cache
def _stand_in(path: str, name: str | None) -> DatasetDict:
    return HUB_DATASETS[(path, name)]()


# -- the hub boundary ---------------------------------------------------------------------------------------


@pytest.fixture
def paper_hub(monkeypatch, tmp_path) -> list[tuple[str, Any]]:
    """The hub, replaced where the lab reaches it; returns the downloads asked for, in order.

    The lab is told the hub answers, so it takes its online paths (pretrained weights, hub datasets);
    the hub libraries themselves stay offline (``HF_HUB_OFFLINE``), so a download not replaced here fails."""
    import huggingface_hub
    import timm
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    asked: list[tuple[str, Any]] = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, when it was imported
    monkeypatch.setenv("SURMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)

    create_model = timm.create_model

    def timm_download(name: str, pretrained: bool = False, **kwargs: Any):
        if pretrained:
            asked.append(("timm", name))
        return create_model(name, pretrained=False, **kwargs)  # same architecture, random weights

    def hf_download(name: str, task: dict[str, Any], *, pretrained: bool, local_files_only: bool):
        assert name == "bert-base-uncased", f"no stand-in for the text backbone {name!r}"
        asked.append(("hf", name))
        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)  # bert-base-uncased's vocab
        return tokenizer, BertForSequenceClassification(BertConfig(**task))

    def load_dataset(path: str, name: str | None = None, **kwargs: Any) -> DatasetDict:
        asked.append(("dataset", f"{path}/{name}" if name else path))
        if (path, name) not in HUB_DATASETS:
            raise ConnectionError(f"no local stand-in for the hub dataset {path} {name or ''}")
        return _stand_in(path, name)

    monkeypatch.setattr(timm, "create_model", timm_download)
    monkeypatch.setattr(backbones, "fetch_hf", hf_download)
    monkeypatch.setattr("surmlab.data.hub_datasets.datasets.load_dataset", load_dataset)
    return asked


def _check_runs(table: pd.DataFrame, backbone: str, tasks: tuple[str, ...], methods: tuple[str, ...]) -> None:
    """One finished cell per (task, method) of the studies on ``backbone``, scored with each task's paper
    metric."""
    assert sorted(zip(table.task, table.method, strict=True)) == sorted((t, m) for t in tasks for m in methods)
    assert set(table.backbone) == {backbone}
    assert (table.seeds == 1).all() and (table.failed == 0).all()
    for task, metric in zip(table.task, table.metric, strict=True):
        assert metric == SPECS[task].metric
    assert all(math.isfinite(v) for v in table["mean"])
    assert (table.trainable_params > 0).all()


# -- one test per experiment ----------------------------------------------------------------------------------


def test_tour_paper(tmp_path, paper_hub):
    p = get("tour").PROFILES["paper"]
    table = get("tour").run(profile="paper", out_dir=tmp_path, max_steps=2, **ROWS)
    tuned = table[table.section == "finetune"]
    assert list(tuned.item) == [f"surm-{p.family}", "lora"]
    assert table[table.section == "budget"].params.sum() > 0
    assert paper_hub == []  # minilm-l6 and rotten-tomatoes ship offline


def test_approximation_paper(tmp_path, paper_hub):
    p = get("approximation").PROFILES["paper"]
    table = get("approximation").run(
        profile="paper", out_dir=tmp_path, trials=1, gd_steps=2, max_points=1, update_steps=2
    )
    assert set(table.target) == set(p.targets) and set(table.family) == set(p.families)
    assert np.isfinite(table.error).all()


def test_pinwheel_paper(tmp_path):
    p = get("pinwheel").PROFILES["paper"]
    table = get("pinwheel").run(profile="paper", out_dir=tmp_path, steps=2, per_class=20, seeds=1)
    assert sorted(zip(table.method, table.bottom, strict=True)) == sorted((m, b) for m in p.methods for b in p.bottom)
    assert np.isfinite(table.final_loss).all()


def test_image_classification_paper(tmp_path, paper_hub):
    """Every paper method on CIFAR-10 at a small image size, and every paper task with one method at the
    paper's size (all ten methods on all five tasks is 50 ViT-B runs, 100 s here, too slow): each method
    meets ViT-B's shapes, each task its columns and head."""
    experiment, p = get("image_classification"), get("image_classification").PROFILES["paper"]
    sizes = {**ROWS, "max_steps": 2, "epochs": 1, "seeds": (0,), "batch_size": 2}
    methods = experiment.run(
        profile="paper", out_dir=tmp_path / "methods", tasks=p.tasks[:1], image_size=SMALL_IMAGES, **sizes
    )
    _check_runs(methods, VIT_B, p.tasks[:1], p.methods)
    tasks = experiment.run(profile="paper", out_dir=tmp_path / "tasks", methods=p.methods[:1], **sizes)
    _check_runs(tasks, VIT_B, p.tasks, p.methods[:1])
    assert ("timm", VIT_B.removeprefix("timm:")) in paper_hub
    assert {("dataset", SPECS[t].hub.dataset) for t in p.tasks} <= set(paper_hub)


def test_low_resource_paper(tmp_path, paper_hub):
    """Every paper method with one shot per class on CIFAR-10, and every paper task with one method,
    by shots and by a stratified fraction (every combination is too slow here)."""
    experiment, p = get("low_resource"), get("low_resource").PROFILES["paper"]
    sizes = {"max_eval": 4, "max_steps": 2, "epochs": 1, "seeds": (0,), "batch_size": 2, "image_size": SMALL_IMAGES}
    methods = experiment.run(
        profile="paper", out_dir=tmp_path / "methods", tasks=p.tasks[:1], shots=(1,), fractions=(), **sizes
    )
    _check_runs(methods, VIT_B, p.tasks[:1], p.methods)
    assert set(methods.shots_per_class) == {1}
    tasks = experiment.run(
        profile="paper", out_dir=tmp_path / "tasks", methods=p.methods[:1], shots=(1,), fractions=(0.5,), **sizes
    )
    assert len(tasks) == 2 * len(p.tasks) and set(tasks.task) == set(p.tasks)
    assert set(tasks.train_fraction.dropna()) == {0.5}


def test_glue_adapters_paper(tmp_path, paper_hub):
    """Every paper method on STS-B (the regression head), and every paper task (shipped TSVs; QNLI from
    the hub) with one SURM adapter: all 30 BERT-base runs take 70 s here, too slow."""
    experiment, p = get("glue_adapters"), get("glue_adapters").PROFILES["paper"]
    sizes = {**ROWS, "max_steps": 2, "epochs": 1, "seeds": (0,), "batch_size": 2}
    methods = experiment.run(profile="paper", out_dir=tmp_path / "methods", tasks=("glue/stsb",), **sizes)
    _check_runs(methods, BERT_BASE, ("glue/stsb",), p.methods)
    assert (methods.reduction_vs_houlsby > 0).all()
    tasks = experiment.run(profile="paper", out_dir=tmp_path / "tasks", methods=p.methods[:1], **sizes)
    _check_runs(tasks, BERT_BASE, p.tasks, p.methods[:1])
    assert ("dataset", "nyu-mll/glue/qnli") in paper_hub and ("hf", "bert-base-uncased") in paper_hub


def test_tradeoff_paper(tmp_path, paper_hub, monkeypatch):
    """The paper profile trains nothing: it reads ``runs`` (here: two runs on its backbone) and draws the frontier."""
    p = get("tradeoff").PROFILES["paper"]
    monkeypatch.chdir(tmp_path)
    for method in ("surm-circulant", "lora"):
        common.train_row(
            backbone=p.backbone, task=p.task, method=method, budget="9216", max_steps=2, runs_dir=p.runs_dir, **ROWS
        )
    table = get("tradeoff").run(profile="paper", out_dir=tmp_path / "out")
    assert sorted(table.method) == ["lora", "surm-circulant"] and table.on_frontier.any()


def test_weight_analysis_paper(tmp_path, paper_hub):
    p = get("weight_analysis").PROFILES["paper"]
    table = get("weight_analysis").run(profile="paper", out_dir=tmp_path, max_steps=2, epochs=1, batch_size=2, **ROWS)
    assert set(table.method) == {"full", *p.methods}
    assert np.isfinite(table[["one_minus_cos", "rel_change", "cka_vs_full", "cka_vs_pretrained"]].to_numpy()).all()


def test_speed_paper(tmp_path, paper_hub):
    p = get("speed").PROFILES["paper"]
    table = get("speed").run(profile="paper", out_dir=tmp_path, batch_size=2, seq_len=16, reps=1, warmup=0)
    assert list(table.method) == list(p.methods) and (table.step_ms > 0).all()
    assert np.isfinite(table[["step_vs_lora", "infer_merged_vs_lora"]].to_numpy(dtype=float)).all()
    assert ("hf", "bert-base-uncased") in paper_hub


def test_decoder_paper():
    """The paper profile names a backbone and methods the runner accepts and asks the hub for the 0.5B instruct
    model and GSM8K; sizing its budget loads that model, so training it needs the hub (and a GPU). GSM8K's rows
    are tested in test_lm.py, as is every decoder preset on its stand-in."""
    from surmlab.experiments import common, decoder

    p = decoder.PROFILES["paper"]
    common.check_backbone(p.backbone)
    common.check_methods(p.methods)
    assert p.backbone == "lm:Qwen/Qwen2.5-0.5B-Instruct" and p.tasks == ("gsm8k",) and "lora" in p.methods
    with pytest.raises(ValueError, match="not instruction tasks"):
        decoder.validate(replace(p, tasks=("rotten-tomatoes",)))


def test_every_paper_profile_has_a_test_here():
    """A new experiment with a ``paper`` profile gets its ``test_<name>_paper`` above."""
    tested = {n.removeprefix("test_").removesuffix("_paper") for n in globals() if n.endswith("_paper")}
    assert {name for name in names() if "paper" in get(name).PROFILES} == tested
