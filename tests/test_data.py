"""Tasks: offline real data, GLUE TSVs, hub code paths on local stand-ins, user data, metrics, batching."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from surmlab import data, hub
from surmlab.data import (
    Loaded,
    compute_metrics,
    glue,
    hub_datasets,
    list_tasks,
    load_task,
    majority_baseline,
    make_collate,
    packaged,
    user_data,
)
from surmlab.data import tasks as task_registry
from surmlab.models import load_backbone

# The GLUE TSVs the project ships (data/glue/README.md lists their sources and counts).
GLUE_DIR = Path(__file__).resolve().parents[1] / "data" / "glue"


pytestmark = pytest.mark.usefixtures("offline_cache")


@pytest.fixture(scope="module")
def tiny_vit():
    return load_backbone("tiny-vit", 10)


@pytest.fixture(scope="module")
def tiny_bert():
    return load_backbone("tiny-bert", 2)


def counts(task_split):
    return np.bincount(np.asarray(task_split["label"])).tolist()


def test_list_tasks():
    names = list_tasks()
    assert names[:3] == ["rotten-tomatoes", "fashion-mnist", "mnist"]
    for t in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"):
        assert f"glue/{t}" in names
    assert {"cifar10", "cifar100", "sun397", "dtd", "stl10"} <= set(names)
    with pytest.raises(ValueError, match=r"unknown task 'glue/sst3'.*glue/sst2.*folder:<path>"):
        load_task("glue/sst3")


# -- offline real data -------------------------------------------------------------------------


def test_rotten_tomatoes_split_is_fixed_and_stratified():
    task = load_task("rotten-tomatoes")
    assert len(task.train) + len(task.eval) == 12_752
    assert (task.modality, task.num_labels, task.metric, task.label_names) == (
        "text",
        2,
        "accuracy",
        ["rotten", "fresh"],
    )
    assert "seed 0" in task.description and "80%/20%" in task.description
    assert not set(task.train["text"]) & set(task.eval["text"])
    train_share = np.mean(task.train["label"])
    assert abs(np.mean(task.eval["label"]) - train_share) < 0.002
    again = load_task("rotten-tomatoes", seed=5)  # seed drives subsampling only: same split
    assert again.eval["text"] == task.eval["text"] and again.train["text"][:50] == task.train["text"][:50]


def test_fashion_mnist_from_the_debian_package():
    """Needs the Debian package dataset-fashion-mnist (the project's setup installs it)."""
    task = load_task("fashion-mnist")
    assert (len(task.train), len(task.eval)) == (60_000, 10_000)
    assert counts(task.eval) == [1000] * 10
    image = task.train[0]["image"]
    assert image.size == (28, 28) and image.mode == "L"
    assert task.label_names[0] == "T-shirt/top" and task.train[0]["label"] == 9  # the first image is an ankle boot


def test_mnist_5k_split():
    task = load_task("mnist")
    assert (len(task.train), len(task.eval)) == (4000, 1000)
    assert counts(task.eval) == [100] * 10
    assert task.train[0]["image"].size == (28, 28)


def fingerprint(values):
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()[:16]


def test_same_seeds_pick_the_same_rows_as_ever():
    """Pinned row fingerprints: a change to the split or the subsampling streams shows up here."""
    task = load_task("rotten-tomatoes", seed=3, shots_per_class=5)
    assert fingerprint(task.eval["text"]) == "47de5c7bb9570c4c"
    assert fingerprint(task.train["text"]) == "7f69ac79894df038"


def test_sources_return_one_record():
    spec = task_registry.SPECS["glue/rte"]
    for loaded in (packaged.mnist(), glue.load_tsv(spec, GLUE_DIR / "RTE")):
        assert isinstance(loaded, Loaded) and len(loaded.train) and len(loaded.eval) and loaded.description
    assert loaded.label_names == ["entailment", "not_entailment"]


def test_data_does_not_import_models():
    code = "import sys, surmlab.data; print(sorted(m for m in sys.modules if m.startswith('surmlab.models')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- GLUE TSVs -----------------------------------------------------------------------------------

GLUE_COUNTS = {  # (train class counts, dev class counts) from data/glue/README.md
    "glue/cola": ([2528, 6023], [322, 721]),
    "glue/sst2": ([29780, 37569], [428, 444]),
    "glue/mrpc": ([1194, 2474], [129, 279]),
    "glue/rte": ([1249, 1241], [146, 131]),  # entailment = 0
    "glue/wnli": ([323, 312], [40, 31]),
}


@pytest.mark.parametrize("name", list(GLUE_COUNTS))
def test_glue_tsv_tasks(name):
    task = load_task(name, data_dir=str(GLUE_DIR))
    assert (counts(task.train), counts(task.eval)) == GLUE_COUNTS[name]
    pair = name not in ("glue/cola", "glue/sst2")
    assert task.train.column_names == (["text", "text_pair", "label"] if pair else ["text", "label"])
    assert all(isinstance(t, str) and t for t in task.eval["text"][:20])
    assert "dev.tsv" in task.description


def test_glue_stsb_is_regression_and_task_folder_works():
    task = load_task("glue/stsb", data_dir=str(GLUE_DIR / "STS-B"))
    assert (len(task.train), len(task.eval)) == (5749, 1500)
    assert (task.num_labels, task.metric, task.regression) == (1, "spearman", True)
    assert task.train.features["label"] == Value("float32")
    assert min(task.train["label"]) == 0.0 and max(task.train["label"]) == 5.0
    assert task.train[0]["text"] == "A plane is taking off."


def test_glue_mrpc_reads_past_the_bom():
    task = load_task("glue/mrpc", data_dir=str(GLUE_DIR))
    assert task.train[0]["text"].startswith("Amrozi accused his brother") and task.train[0]["label"] == 1


def test_glue_default_folder_is_the_projects_data_folder(monkeypatch):
    monkeypatch.delenv("SURMLAB_GLUE_DIR", raising=False)
    assert data.default_glue_dir() == GLUE_DIR
    assert len(load_task("glue/rte").eval) == 277
    with pytest.raises(RuntimeError, match=r"lacks train\.tsv"):
        load_task("glue/qnli")  # only the dev set is shipped
    with pytest.raises(FileNotFoundError, match=r"train\.tsv missing"):
        load_task("glue/qnli", data_dir=str(GLUE_DIR))


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def test_glue_mnli_and_qqp_tsv_layouts(tmp_path):
    """Official column layouts of the TSVs the project does not ship (MNLI dev_matched, QQP with a bad row)."""
    mnli_header = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"]
    rows = [[str(i), "0", "0", "fiction", f"p{i}", f"h{i}", g, g] for i, g in
            enumerate(["entailment", "neutral", "contradiction", "neutral"])]  # fmt: skip
    write_tsv(tmp_path / "MNLI" / "train.tsv", mnli_header, rows)
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", mnli_header, rows[:2])
    write_tsv(tmp_path / "MNLI" / "dev_mismatched.tsv", mnli_header, rows[2:])
    mnli = load_task("glue/mnli", data_dir=str(tmp_path))
    assert mnli.train["label"] == [0, 1, 2, 1] and mnli.eval["text_pair"] == ["h0", "h1"]
    assert mnli.label_names == ["entailment", "neutral", "contradiction"]
    qqp_header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(tmp_path / "QQP" / "train.tsv", qqp_header, [["0", "1", "2", "a?", "b?", "1"], ["1", "3", "4", "c?"]])
    write_tsv(tmp_path / "QQP" / "dev.tsv", qqp_header, [["0", "1", "2", "x?", "y?", "0"]])
    qqp = load_task("glue/qqp", data_dir=str(tmp_path))
    assert (len(qqp.train), qqp.metric) == (1, "f1") and "1 train / 0 dev malformed rows skipped" in qqp.description


# -- the hub code path, on local stand-ins with the hub schemas ---------------------------------


def tiny_images(n, mode="RGB", size=8):
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    return [
        PILImage.fromarray(rng.integers(0, 255, (size, size, channels)).astype(np.uint8).squeeze()) for _ in range(n)
    ]


def image_standin(image_col, label_cols, n=(20, 10)):
    """A DatasetDict shaped like the hub's: ``label_cols`` maps column -> ClassLabel names."""
    splits = {}
    for split, size in zip(("train", "test"), n, strict=True):
        columns = {image_col: tiny_images(size)}
        columns.update({c: [i % len(names) for i in range(size)] for c, names in label_cols.items()})
        features = Features({image_col: Image(), **{c: ClassLabel(names=names) for c, names in label_cols.items()}})
        splits[split] = Dataset.from_dict(columns, features=features)
    return DatasetDict(splits)


CIFAR100_COLUMNS = {"fine_label": [f"f{i}" for i in range(100)], "coarse_label": [f"c{i}" for i in range(20)]}


@pytest.mark.parametrize(
    ("name", "image_col", "label_cols", "num_labels"),
    [
        ("cifar10", "img", {"label": list(task_registry.CIFAR10_NAMES)}, 10),
        ("cifar100", "img", CIFAR100_COLUMNS, 100),
        ("sun397", "image", {"label": [f"s{i}" for i in range(397)]}, 397),
        ("dtd", "image", {"label": [f"d{i}" for i in range(47)]}, 47),
        ("stl10", "image", {"label": list(task_registry.STL10_NAMES)}, 10),
        ("fashion-mnist", "image", {"label": list(task_registry.FASHION_NAMES)}, 10),
    ],
)  # fmt: skip
def test_image_hub_tasks_from_saved_standins(tmp_path, name, image_col, label_cols, num_labels):
    image_standin(image_col, label_cols).save_to_disk(str(tmp_path))
    task = load_task(name, data_dir=str(tmp_path))
    assert task.train.column_names == ["image", "label"] and task.train.features["label"] == Value("int64")
    assert (len(task.train), len(task.eval), task.num_labels, task.metric) == (20, 10, num_labels, "accuracy")
    first = next(iter(label_cols))
    assert task.label_names == label_cols[first]
    assert task.train[3]["label"] == 3 % len(label_cols[first])
    assert isinstance(task.eval[0]["image"], PILImage.Image)


def glue_standin(config):
    names = {"sst2": ["negative", "positive"], "mnli": ["entailment", "neutral", "contradiction"]}
    if config == "sst2":
        split = lambda n: Dataset.from_dict(  # noqa: E731
            {"sentence": [f"s{i}" for i in range(n)], "label": [i % 2 for i in range(n)], "idx": list(range(n))},
            features=Features(
                {"sentence": Value("string"), "label": ClassLabel(names=names["sst2"]), "idx": Value("int32")}
            ),
        )
        return DatasetDict({"train": split(8), "validation": split(4), "test": split(3)})
    if config == "mnli":
        split = lambda n: Dataset.from_dict(  # noqa: E731
            {"premise": ["p"] * n, "hypothesis": ["h"] * n, "label": [i % 3 for i in range(n)], "idx": list(range(n))},
            features=Features({"premise": Value("string"), "hypothesis": Value("string"),
                               "label": ClassLabel(names=names["mnli"]), "idx": Value("int32")}),
        )  # fmt: skip
        return DatasetDict({"train": split(9), "validation_matched": split(6), "validation_mismatched": split(3)})
    split = lambda n: Dataset.from_dict(  # noqa: E731  (stsb)
        {"sentence1": ["a"] * n, "sentence2": ["b"] * n, "label": [i / 2 for i in range(n)], "idx": list(range(n))},
        features=Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": Value("float32"),
                           "idx": Value("int32")}),
    )  # fmt: skip
    return DatasetDict({"train": split(6), "validation": split(4)})


def test_glue_hub_schema_from_saved_standins(tmp_path):
    for config in ("sst2", "mnli", "stsb"):
        glue_standin(config).save_to_disk(str(tmp_path / config))
    sst2 = load_task("glue/sst2", data_dir=str(tmp_path / "sst2"))
    assert sst2.train.column_names == ["text", "label"] and (len(sst2.train), len(sst2.eval)) == (8, 4)
    assert sst2.label_names == ["negative", "positive"]
    mnli = load_task("glue/mnli", data_dir=str(tmp_path / "mnli"))
    assert len(mnli.eval) == 6 and mnli.train.column_names == ["text", "text_pair", "label"]  # validation_matched
    stsb = load_task("glue/stsb", data_dir=str(tmp_path / "stsb"))
    assert stsb.train["label"][:3] == [0.0, 0.5, 1.0] and stsb.num_labels == 1


def test_hub_path_asks_for_the_right_dataset(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    calls = []

    def fake_load_dataset(path, name=None, **options):  # the hub boundary
        calls.append((path, name, options))
        if path == "nyu-mll/glue":
            return glue_standin(name)
        return image_standin("img", {"label": list(task_registry.CIFAR10_NAMES)})

    monkeypatch.setattr(hub_datasets.datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(glue, "default_glue_dir", lambda: None)
    assert len(load_task("cifar10").eval) == 10
    assert len(load_task("glue/mnli").eval) == 6
    assert "hub" in load_task("glue/sst2").description
    never = {"trust_remote_code": False}  # said explicitly: no loading script from a dataset repository runs
    assert calls == [("uoft-cs/cifar10", None, never), ("nyu-mll/glue", "mnli", never), ("nyu-mll/glue", "sst2", never)]


def test_hub_offline_and_bad_standins_explain(tmp_path):
    with pytest.raises(RuntimeError, match=r"uoft-cs/cifar100.*data_dir"):
        load_task("cifar100")
    wrong = image_standin("picture", {"label": ["a", "b"]})
    wrong.save_to_disk(str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match=r"column 'img' not found.*available columns: picture, label"):
        load_task("cifar10", data_dir=str(tmp_path / "wrong"))
    DatasetDict({"train": wrong["train"], "valid": wrong["test"]}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(ValueError, match=r"no split 'test'.*train, valid"):
        load_task("dtd", data_dir=str(tmp_path / "splits"))
    image_standin("img", {"label": ["a", "b"]}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(ValueError, match="2 classes"):
        load_task("cifar10", data_dir=str(tmp_path / "two"))


# -- user data ------------------------------------------------------------------------------------


def write_images(folder, n, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(tiny_images(n, mode, size=12)):
        image.save(folder / f"{i}.png")


def test_image_folder_flat_and_split(tmp_path, tiny_vit):
    write_images(tmp_path / "flat" / "cats", 10)
    write_images(tmp_path / "flat" / "dogs", 5, mode="L")  # grayscale: the collate makes it RGB
    flat = load_task(f"folder:{tmp_path / 'flat'}")
    assert flat.label_names == ["cats", "dogs"] and (len(flat.train), len(flat.eval)) == (12, 3)
    assert counts(flat.eval) == [2, 1]
    write_images(tmp_path / "split" / "train" / "a", 3)
    write_images(tmp_path / "split" / "train" / "b", 3)
    write_images(tmp_path / "split" / "test" / "b", 2, mode="L")
    split = load_task(f"folder:{tmp_path / 'split'}")
    assert (len(split.train), len(split.eval), split.eval["label"]) == (6, 2, [1, 1])
    batch = make_collate(split, tiny_vit)([split.eval[0], split.eval[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].tolist() == [1, 1]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(f"folder:{tmp_path / 'nowhere'}")


def test_csv_and_tsv_user_data(tmp_path):
    rows = [f"review {i},{'pos' if i % 3 else 'neg'},{i % 2}" for i in range(30)]
    (tmp_path / "reviews.csv").write_text("body,sentiment,other\n" + "\n".join(rows) + "\n")
    task = load_task(f"csv:{tmp_path / 'reviews.csv'}", text_column="body", label_column="sentiment")
    assert task.label_names == ["neg", "pos"] and (len(task.train), len(task.eval)) == (24, 6)
    assert task.train.column_names == ["text", "label"] and task.metric == "accuracy"
    with pytest.raises(ValueError, match=r"column 'text' not found.*available columns: body, sentiment, other"):
        load_task(f"csv:{tmp_path / 'reviews.csv'}", label_column="sentiment")
    folder = tmp_path / "pairs"
    write_tsv(folder / "train.tsv", ["a", "b", "score"], [["x", "y", "0.5"], ["u", "v", "4.25"], ["p", "q", "2"]])
    write_tsv(folder / "dev.tsv", ["a", "b", "score"], [["x", "z", "1.5"]])
    reg = load_task(f"tsv:{folder}", text_column="a", text_pair_column="b", label_column="score")
    assert (reg.num_labels, reg.metric, reg.train["label"]) == (1, "spearman", [0.5, 4.25, 2.0])
    assert reg.eval["text_pair"] == ["z"]


def write_csv(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f"csv:{path}"


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", r"reviews\.csv is empty"),
        ("body,sentiment\n", r"reviews\.csv has a header but no rows"),
        (
            "body,sentiment\n" + "".join(f"r{i},pos\n" for i in range(20)),
            r"reviews\.csv: column 'sentiment' has one class",
        ),
        (
            "body,sentiment\n" + "".join(f"r{i},{'' if i % 2 else 'pos'}\n" for i in range(20)),
            r"reviews\.csv: rows without a 'sentiment' value \(10 of 20\)",
        ),
        (
            "body,sentiment\n" + "".join(f"r{i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)) + "lone,odd\n",
            r"reviews\.csv: 1 class\(es\) with a single example \(odd\)",
        ),
        (b"body,sentiment\n\xff\xfe,pos\n", r"reviews\.csv is not UTF-8 text"),
    ],
    ids=["empty", "header-only", "one-class", "missing-labels", "singleton-class", "not-utf8"],
)
def test_bad_tables_are_refused_naming_the_file(tmp_path, content, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_task(write_csv(tmp_path / "reviews.csv", content), text_column="body", label_column="sentiment")


def test_a_huge_header_is_not_echoed(tmp_path):
    """A 10 MB line without a newline: the error names the file and a cut column name, not 10 MB."""
    task = write_csv(tmp_path / "blob.csv", "x" * 10_000_000)
    with pytest.raises(ValueError) as info:
        load_task(task, text_column="body", label_column="sentiment")
    assert "blob.csv" in str(info.value) and len(str(info.value)) < 500


# -- subsampling ---------------------------------------------------------------------------------


def test_low_resource_subsampling():
    few = load_task("rotten-tomatoes", shots_per_class=5, seed=1)
    assert counts(few.train) == [5, 5] and len(few.eval) == 2551
    assert load_task("rotten-tomatoes", shots_per_class=5, seed=1).train["text"] == few.train["text"]
    assert load_task("rotten-tomatoes", shots_per_class=5, seed=2).train["text"] != few.train["text"]
    assert "5 shots per class (seed 1)" in few.description
    part = load_task("mnist", train_fraction=0.1, max_eval=50)
    assert counts(part.train) == [40] * 10 and len(part.eval) == 50
    capped = load_task("glue/sst2", data_dir=str(GLUE_DIR), max_train=100)
    assert len(capped.train) == 100 and len(capped.eval) == 872
    with pytest.raises(ValueError, match="classification"):
        load_task("glue/stsb", data_dir=str(GLUE_DIR), shots_per_class=4)
    with pytest.raises(ValueError, match="train_fraction"):
        load_task("mnist", train_fraction=1.5)


def test_majority_baseline():
    sst2 = load_task("glue/sst2", data_dir=str(GLUE_DIR))
    assert majority_baseline(sst2) == pytest.approx(444 / 872)  # train's majority is positive
    with pytest.raises(ValueError, match="regression"):
        majority_baseline(load_task("glue/stsb", data_dir=str(GLUE_DIR), max_train=10))


# -- metrics -------------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    preds[:120] = labels[:120]
    got = compute_metrics("mcc", preds, labels)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    got = compute_metrics("f1", preds, labels)
    assert got["f1"] == pytest.approx(f1_score(labels, preds)) and "accuracy" in got
    labels3, preds3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert compute_metrics("mcc", preds3, labels3)["mcc"] == pytest.approx(matthews_corrcoef(labels3, preds3))
    assert compute_metrics("f1", preds3, labels3)["f1"] == pytest.approx(f1_score(labels3, preds3, average="macro"))
    logits = rng.normal(size=(300, 3))
    assert compute_metrics("accuracy", logits, labels3) == {
        "accuracy": pytest.approx(np.mean(logits.argmax(1) == labels3))
    }
    assert compute_metrics("mcc", np.ones(10, int), np.r_[np.ones(5, int), np.zeros(5, int)])["mcc"] == 0.0


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 11, 100) / 2  # many ties, like STS-B
    preds = labels + rng.normal(scale=1.0, size=100)
    got = compute_metrics("spearman", preds[:, None], labels)
    assert got["spearman"] == pytest.approx(spearmanr(preds, labels).statistic)
    assert got["pearson"] == pytest.approx(pearsonr(preds, labels).statistic)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics("auc", preds, labels)


# -- batching ------------------------------------------------------------------------------------


def test_text_collate_pairs_and_regression(tiny_bert):
    mrpc = load_task("glue/mrpc", data_dir=str(GLUE_DIR), max_train=8)
    batch = make_collate(mrpc, tiny_bert, max_length=16)([mrpc.train[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape[1] <= 16 and batch["token_type_ids"].max() == 1
    assert batch["labels"].dtype == torch.long
    assert tiny_bert.model(**{k: v for k, v in batch.items() if k != "labels"}).shape == (4, 2)
    stsb = load_task("glue/stsb", data_dir=str(GLUE_DIR), max_train=4)
    labels = make_collate(stsb, tiny_bert)(list(stsb.train))["labels"]
    assert labels.dtype == torch.float32 and labels.shape == (4,)


def test_image_collate_converts_grayscale(tiny_vit):
    mnist = load_task("mnist", max_train=6)
    rows = list(mnist.train)
    assert rows[0]["image"].mode == "L"
    for train in (False, True):
        batch = make_collate(mnist, tiny_vit, train=train)(rows)
        assert batch["pixel_values"].shape == (6, 3, 32, 32) and batch["labels"].tolist() == mnist.train["label"]
    with pytest.raises(ValueError, match="image data but backbone"):
        make_collate(mnist, load_backbone("tiny-bert", 10))


def test_tables_beyond_the_bounds_are_refused(tmp_path, monkeypatch):
    rows = "body,sentiment\n" + "".join(f"r{i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    task = write_csv(tmp_path / "big.csv", rows)
    monkeypatch.setattr(user_data, "MAX_TABLE_ROWS", 30)
    with pytest.raises(ValueError, match=r"big\.csv has more than 30 rows"):
        load_task(task, text_column="body", label_column="sentiment")
    monkeypatch.setattr(user_data, "MAX_TABLE_BYTES", 100)
    with pytest.raises(ValueError, match=r"big\.csv is \d+ bytes; tables up to 100 bytes"):
        load_task(task, text_column="body", label_column="sentiment")


def test_image_folders_beyond_the_bound_are_refused(tmp_path, monkeypatch):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            PILImage.new("L", (4, 4)).save(tmp_path / c / f"{i}.png")
    monkeypatch.setattr(user_data, "MAX_IMAGE_FILES", 5)
    with pytest.raises(ValueError, match=r"holds more than 5 files; point at a dataset folder"):
        load_task(f"folder:{tmp_path}")


def test_a_truncated_jpeg_fails_the_run_naming_the_file(tmp_path):
    """A JPEG cut short passes the header check and fails only when decoded, where PIL says "image file is
    truncated (N bytes not processed)" and nothing else: the run's reason names the file too."""
    from surmlab.runs import RunDir
    from surmlab.train import TrainConfig, train

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(6):
            noise = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            PILImage.fromarray(noise).save(tmp_path / "images" / c / f"{i}.jpg", quality=95)
    for file in (tmp_path / "images" / "cat").iterdir():  # every cat: one is in the training split
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    config = TrainConfig(backbone="tiny-vit", task=f"folder:{tmp_path / 'images'}", method="linear-probe",
                         batch_size=16, max_steps=2, runs_dir=str(tmp_path / "runs"))  # fmt: skip
    with pytest.raises(OSError, match=r"images/cat/\d\.jpg: image file is truncated \(\d+ bytes not processed\)"):
        train(config, progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    summary = RunDir(run).summary()
    assert summary.status == "failed" and "images/cat/" in summary.reason and "truncated" in summary.reason
