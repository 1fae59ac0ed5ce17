"""Using what was trained: class probabilities (the code of ``surmlab predict``), evaluation on a
split, and exports (adapter once with labels and run config, merged model, PEFT LoRA) that a fresh
process reloads to the same outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from surmlab.app.download import UnsafeFolder, export_zip
from surmlab.data import load_task
from surmlab.data.uploads import store_upload
from surmlab.evaluate import evaluate_run
from surmlab.predict import predict, predict_all
from surmlab.run_export import export_run
from surmlab.train import train
from surmlab.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
ROWS = "".join(f"a great film {i},pos\nan awful film {i},neg\n" for i in range(20))
SENTENCES = ["a great film", "an awful film", "nothing to say"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny circulant run on an uploaded ``review,sentiment`` CSV."""
    root = tmp_path_factory.mktemp("use")
    (root / "reviews.csv").write_text("review,sentiment\n" + ROWS)
    upload = store_upload(root / "reviews.csv", root / "runs")
    config = TrainConfig(backbone="tiny-bert", task=upload.task, method="surm-circulant", budget="1k",
                         text_column="review", label_column="sentiment", max_length=16, batch_size=8,
                         epochs=2, runs_dir=str(root / "runs"), cpu=True)  # fmt: skip
    summary = train(config, progress=False)
    assert summary.status.has_result
    return Path(summary.run_dir)


def test_probabilities_are_predicts(run):
    found = predict_all(run, SENTENCES)
    assert [p.input for p in found] == SENTENCES
    for p, (text, label, score) in zip(found, predict(run, SENTENCES), strict=True):
        assert set(p.probabilities) == {"neg", "pos"} and abs(sum(p.probabilities.values()) - 1) < 1e-6
        top = max(p.probabilities, key=p.probabilities.get)
        assert (p.input, p.label, p.score) == (text, label, score) == (text, top, p.probabilities[top])


def test_evaluate_matches_accuracy_counted_by_hand(run):
    task = load_task(json.loads((run / "config.json").read_text())["train"]["task"],
                     text_column="review", label_column="sentiment")  # fmt: skip
    for split, rows in (("eval", task.eval), ("train", task.train)):
        result = evaluate_run(run, split)
        predicted = [p.label for p in predict_all(run, list(rows["text"]))]
        truth = [task.label_names[i] for i in rows["label"]]
        assert result.examples == len(rows) and result.metric == "accuracy"
        assert result.metrics["accuracy"] == pytest.approx(
            np.mean([a == b for a, b in zip(predicted, truth, strict=True)])
        )
    assert evaluate_run(run, "eval", max_examples=3).examples == 3
    with pytest.raises(ValueError, match="unknown split 'test'; choose one of eval, train"):
        evaluate_run(run, "test")


RELOAD = f"""
import json, sys
from surmlab.predict import classify
from surmlab.run_export import load_export
out = {{}}
for kind in sys.argv[2:]:
    backbone, model, saved = load_export(sys.argv[1], kind)
    out[kind] = [p.probabilities for p in classify(backbone, model, saved, {SENTENCES!r})]
print(json.dumps(out))
"""


def test_export_reloads_in_a_fresh_process(run, tmp_path):
    done = export_run(run, tmp_path / "export")
    assert done.kinds == ["adapter", "lora", "merged"] and not done.notes
    files = set(done.files)
    assert {
        "run_config.json",
        "labels.json",
        "adapter/surm_config.json",
        "adapter/surm_model.safetensors",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
        "merged/model.safetensors",
    } <= files
    assert "adapter/trainable.safetensors" not in files  # the tensors once, not twice
    assert json.loads((tmp_path / "export" / "labels.json").read_text())["labels"] == ["neg", "pos"]
    assert json.loads((tmp_path / "export" / "adapter" / "surm_config.json").read_text())["labels"] == ["neg", "pos"]
    expected = [p.probabilities for p in predict_all(run, SENTENCES)]
    result = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "export"), "adapter", "merged", "lora"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for kind in ("adapter", "merged", "lora"):  # lora: loaded by PEFT itself (PeftModel.from_pretrained)
        for got, want in zip(reloaded[kind], expected, strict=True):
            assert got == pytest.approx(want, abs=1e-5), kind
    with pytest.raises(ValueError, match="is not empty"):
        export_run(run, tmp_path / "export")


def test_download_zip_is_the_export(run, tmp_path):
    names = export_zip(run, tmp_path / "run.zip")
    with zipfile.ZipFile(tmp_path / "run.zip") as z:
        assert sorted(z.namelist()) == sorted(names)
        assert json.loads(z.read("labels.json"))["labels"] == ["neg", "pos"]
        assert json.loads(z.read("run_config.json"))["train"]["text_column"] == "review"
    tensors = [n for n in names if n.endswith(".safetensors")]
    assert sorted(tensors) == ["adapter/surm_model.safetensors", "lora/adapter_model.safetensors",
                               "merged/model.safetensors"]  # fmt: skip
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "config.json").symlink_to(run / "config.json")
    with pytest.raises(UnsafeFolder, match=r"planted/config\.json is a symbolic link"):
        export_zip(planted, tmp_path / "planted.zip")
    assert not (tmp_path / "planted.zip").exists()


def test_use_tab_handlers(run):
    """The Try it / Evaluate / Export tab: probabilities, scores and the export, each a message on failure."""
    from surmlab.app.handlers import Lab
    from surmlab.app.use_tab import Loaded, on_evaluate, on_export, on_try

    lab = Lab(run.parent, jobs=object())
    cache = Loaded()
    probabilities, message = on_try(lab, cache, run.name, "final", "a great film", None)
    (expected,) = predict_all(run, ["a great film"])
    assert probabilities == expected.probabilities and message.startswith(f"**{expected.label}**")
    assert on_try(lab, cache, run.name, "final", "", None) == (None, "Type a sentence or drop an image.")
    assert on_try(lab, cache, "../x", "final", "hi", None) == (None, "Choose a run.")
    assert on_evaluate(lab, run.name, "final", "eval", 0) == evaluate_run(run, "eval").describe()
    path, message = on_export(lab, run.name, "final")
    assert path is not None and Path(path).parent == lab.downloads and "`labels.json`" in message


def test_an_image_run_from_a_zip_tries_an_image_and_exports(tmp_path):
    """A zip of class folders, uploaded, trained (linear probe on the tiny ViT), tried with a dropped image
    through the tab's handler, exported (its trained tensors; the whole model merged) and reloaded."""
    from PIL import Image

    from surmlab.app.handlers import Lab
    from surmlab.app.use_tab import Loaded, on_try
    from surmlab.predict import classify
    from surmlab.run_export import load_export

    with zipfile.ZipFile(tmp_path / "colours.zip", "w") as z:
        for c, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            for i in range(6):
                image = tmp_path / f"{c}{i}.png"
                Image.new("RGB", (8, 8), tuple(v + 5 * i for v in rgb)).save(image)
                z.write(image, f"colours/{c}/{i}.png")
    upload = store_upload(tmp_path / "colours.zip", tmp_path / "runs")
    config = TrainConfig(backbone="tiny-vit", task=upload.task, method="linear-probe", batch_size=8, max_steps=2,
                         runs_dir=str(tmp_path / "runs"), cpu=True)  # fmt: skip
    run = Path(train(config, progress=False).run_dir)
    probe = str(tmp_path / "red0.png")
    (expected,) = predict_all(run, [probe])
    probabilities, _ = on_try(Lab(tmp_path / "runs", jobs=object()), Loaded(), run.name, "final", "", probe)
    assert probabilities == expected.probabilities and set(probabilities) == {"blue", "red"}
    done = export_run(run, tmp_path / "export")
    assert done.kinds == ["adapter", "merged"] and done.notes == [
        "lora: only lora-mode SURM runs export as a PEFT LoRA adapter"
    ]
    assert "adapter/trainable.safetensors" in done.files
    for kind in done.kinds:
        backbone, model, saved = load_export(tmp_path / "export", kind)
        (got,) = classify(backbone, model, saved, [probe])
        assert got.probabilities == pytest.approx(expected.probabilities, abs=1e-6), kind
