"""Every route that saves an injected model reloads, in a fresh process, the way a user of that route
reloads it, to the trained model's outputs, or is refused loudly.

A tiny BERT built from a config is trained for a few Trainer steps; the parent saves it by each route
and records its logits; one child process reloads every folder and reports the differences.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from surmlab import SurmConfig, inject, merge

LABELS = ["negative", "neutral", "positive"]
TOL = 1e-5


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    return BertForSequenceClassification(config)


def batch():
    return torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(7))


def dataset(n=20):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (n, 8), generator=g)
    return [{"input_ids": ids[i], "labels": int(ids[i, 0]) % 3} for i in range(n)]


def args(out, steps=5):
    return TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        save_strategy="steps",
        save_steps=steps,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        seed=0,
    )


def train(config, out):
    model = inject(tiny_bert(), config)
    Trainer(model=model, args=args(out), train_dataset=dataset()).train()
    return model.eval()


@torch.no_grad()
def logits(model):
    return model(input_ids=batch()).logits


CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, Trainer
    from surmlab import SurmConfig, inject
    sys.path.insert(0, sys.argv[2])
    from test_save_routes import args, batch, dataset, tiny_bert

    def logits(model):
        with torch.no_grad():
            return model.eval()(input_ids=batch()).logits

    def injected(case):  # how a user of torch/accelerate/Trainer rebuilds the model: same code, other weights
        return inject(tiny_bert(seed=9), SurmConfig.from_json(case["config"]))

    def diff(model, case):
        return (logits(model) - torch.load(case["want"])).abs().max().item()

    report = {}
    for case in json.loads(open(sys.argv[1]).read()):
        route, path = case["route"], case["path"]
        try:
            if route == "from_pretrained":
                model = AutoModelForSequenceClassification.from_pretrained(path)
                assert model.config.id2label[2] == "positive"
            elif route == "load_state_dict":
                model = injected(case)
                model.load_state_dict(torch.load(path), strict=True)
            elif route == "load_state_dict_plain":
                model = tiny_bert(seed=9)
                model.load_state_dict(torch.load(path), strict=False)
            elif route == "accelerate":
                accelerator = Accelerator(cpu=True)
                model = accelerator.prepare(injected(case))
                accelerator.load_state(path)
            elif route == "resume":
                model = injected(case)
                Trainer(model=model, args=args(case["out"]), train_dataset=dataset()).train(resume_from_checkpoint=path)
            elif route == "surmlab":
                import surmlab
                model = surmlab.from_pretrained(tiny_bert(), path)  # the base it was trained from
            elif route == "untrained":
                model = injected(case)
            report[case["name"]] = {"diff": diff(model, case)}
        except Exception as err:
            report[case["name"]] = {"error": f"{type(err).__name__}: {err}"}
    print("REPORT" + json.dumps(report))
    """
)


def reload_in_child(cases, tmp_path):
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec), str(__import__("pathlib").Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("REPORT")), None)
    assert line, done.stderr[-3000:]
    return json.loads(line.removeprefix("REPORT"))


@pytest.mark.parametrize("family, hyper", [("circulant", {"block_size": 16}), ("lowrank", {"rank": 2})])
def test_lora_mode_every_route_reloads_the_trained_model(family, hyper, tmp_path):
    config = SurmConfig(family=family, hyper=hyper)
    model = train(config, tmp_path / "run")
    cases, common = [], {"config": model.surm_config.to_json()}

    def case(name, route, path, state):
        want = tmp_path / f"{name}.pt"
        torch.save(logits(model), want)
        cases.append({"name": name, "route": route, "path": str(path), "want": str(want), "state": state, **common})

    trainer = Trainer(model=model, args=args(tmp_path / "save"))
    trainer.save_model(tmp_path / "save_model")
    case("trainer.save_model", "from_pretrained", tmp_path / "save_model", "unmerged")
    torch.save(model.state_dict(), tmp_path / "unmerged.pt")
    case("state_dict", "load_state_dict", tmp_path / "unmerged.pt", "unmerged")
    case("state_dict into the plain model", "load_state_dict_plain", tmp_path / "unmerged.pt", "unmerged")
    case("untrained", "untrained", "", "unmerged")
    accelerator = __import__("accelerate").Accelerator(cpu=True)
    accelerator.prepare(model)
    accelerator.save_state(tmp_path / "accelerate")
    case("accelerate save_state", "accelerate", tmp_path / "accelerate", "unmerged")
    case("Trainer checkpoint", "resume", tmp_path / "run" / "checkpoint-5", "unmerged")
    cases[-1]["out"] = str(tmp_path / "resumed")

    merge(model)
    model.save_pretrained(tmp_path / "merged_pretrained")
    case("merged save_pretrained", "from_pretrained", tmp_path / "merged_pretrained", "merged")
    torch.save(model.state_dict(), tmp_path / "merged.pt")
    case("merged state_dict", "load_state_dict", tmp_path / "merged.pt", "merged")

    report = reload_in_child(cases, tmp_path)
    assert report.pop("untrained")["diff"] > 1e-3, "training moved nothing: the comparisons below could not fail"
    assert report == {c["name"]: {"diff": pytest.approx(0, abs=TOL)} for c in cases if c["name"] != "untrained"}


def test_adapter_mode_save_pretrained_is_refused_by_transformers_and_resumes(tmp_path):
    """An adapter-mode layer has no plain form: transformers must refuse the folder, not load the base model."""
    model = train(SurmConfig(family="circulant", mode="adapter", hyper={"block_size": 16}), tmp_path / "run")
    Trainer(model=model, args=args(tmp_path / "save")).save_model(tmp_path / "save_model")
    torch.save(logits(model), tmp_path / "want.pt")
    common = {"config": model.surm_config.to_json(), "want": str(tmp_path / "want.pt")}
    cases = [
        {"name": "save_model", "route": "from_pretrained", "path": str(tmp_path / "save_model"), **common},
        {"name": "checkpoint", "route": "from_pretrained", "path": str(tmp_path / "run" / "checkpoint-5"), **common},
        {"name": "surmlab", "route": "surmlab", "path": str(tmp_path / "save_model"), **common},
        {
            "name": "resume",
            "route": "resume",
            "path": str(tmp_path / "run" / "checkpoint-5"),
            "out": str(tmp_path / "resumed"),
            **common,
        },
    ]
    report = reload_in_child(cases, tmp_path)
    for name in ("save_model", "checkpoint"):
        assert "error" in report[name] and "config.json" in report[name]["error"], report[name]
    assert report["resume"] == {"diff": pytest.approx(0, abs=TOL)}
    assert report["surmlab"] == {"diff": pytest.approx(0, abs=TOL)}  # the folder names the route that works


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma"])
def test_decoder_save_pretrained_reloads_with_plain_transformers(model_type, tmp_path):
    """Decoders (tied embeddings for Qwen2 and Gemma): the plain class loads the fine-tuned model."""
    from test_inject_guards import perturbed, tiny
    from transformers import AutoModelForCausalLM

    model = perturbed(inject(tiny(model_type), SurmConfig(family="circulant", hyper={"block_size": 8})))
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        assert (tiny(model_type)(input_ids=ids).logits - want).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, want, rtol=0, atol=TOL)


def test_a_state_dict_in_the_older_layout_still_loads():
    """Before plain keys, a layer wrote only base_layer.weight/bias next to its updates."""
    config = SurmConfig(hyper={"block_size": 16})
    model = inject(tiny_bert(), config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    old = {}
    for key, value in model.state_dict().items():
        layer = key.rsplit(".", 1)[0]
        if layer in dict(model.named_modules()) and "surm" in type(model.get_submodule(layer)).__name__.lower():
            if key.endswith(".weight"):
                continue  # the effective weight: not written then
            key = f"{layer}.base_layer.bias"
        old[key] = value
    assert not any(k.endswith("query.weight") for k in old) and any(k.endswith("query.base_layer.bias") for k in old)
    fresh = inject(tiny_bert(seed=4), config).eval()
    fresh.load_state_dict(old, strict=True)
    torch.testing.assert_close(logits(fresh), logits(model), rtol=0, atol=0)
