"""Decoder language models: every architecture's stand-in through inject, a train step, save/load and
merged generation; the loss mask against transformers' own loss; generation against a hand-written
greedy loop; instruction data and its errors; the train -> predict command line at stand-in size."""

import json
import math
import re

import pytest
import torch

from surmlab.cli import main as cli
from surmlab.lm.backbones import TINY_ARCHITECTURES
from surmlab.lm.chat_tokenizer import char_chat_tokenizer
from surmlab.lm.data import IGNORE, encode, load_lm_task, reply_end, require_chat_template, row_fields
from surmlab.lm.generate import GenerationOptions, generate, generate_ids
from surmlab.lm.kind import LmKind, response_loss
from surmlab.lm.metrics import exact_match, final_number, perplexity
from surmlab.lm.predict import generate_from_run, merge_update
from surmlab.methods import prepare
from surmlab.models import load_backbone
from surmlab.runs import load_weights, save_weights
from surmlab.train import TrainConfig, train
from surmlab.tuner import surm_layers

PROBLEM = "Ada has 3 apples. Ada gets 2 more. How many apples does Ada have now?"


def batch_of(tokenizer, rows, max_length=256):
    class Config:
        pass

    config = Config()
    config.max_length = max_length
    backbone = type("B", (), {"tokenizer": tokenizer, "name": "stand-in"})()
    task = load_lm_task("arithmetic", max_train=len(rows), max_eval=2)
    return LmKind().collate(task, backbone, config, train=True)(rows)


# -- every architecture preset on a stand-in ----------------------------------------------------------


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_each_architecture_injects_trains_saves_and_generates_the_same_merged(arch, tmp_path):
    torch.manual_seed(0)
    backbone = load_backbone(f"tiny-{arch}", 0)
    prepared = prepare("surm-circulant", backbone.model, head=[], budget="1k")
    model, tokenizer = prepared.model, backbone.tokenizer
    adapted = list(surm_layers(model))
    assert adapted and not any("lm_head" in name for name in adapted)  # the output layer stays as it was
    assert all(re.search(r"attn|attention", name) for name in adapted)  # the preset adapts attention
    assert model.get_output_embeddings().weight.requires_grad is False
    # a train step changes the update (and only the update) and the loss moves
    tasks = load_lm_task("arithmetic", max_train=4, max_eval=2)
    batch = batch_of(tokenizer, [{**r, "index": i} for i, r in enumerate(tasks.train)])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(3):
        labels = batch["labels"]
        loss = response_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    # save/load: a freshly built model with the saved weights computes the same logits
    save_weights(model, tmp_path)
    torch.manual_seed(0)
    again = prepare("surm-circulant", load_backbone(f"tiny-{arch}", 0).model, head=[], budget="1k").model
    load_weights(again, tmp_path)
    model.eval(), again.eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, rtol=0, atol=1e-5)
    # merged generation: the same tokens as the unmerged model
    options = GenerationOptions(max_new_tokens=12)
    before = generate(model, tokenizer, [PROBLEM, "hi"], options)
    merged = merge_update(again, "surm-circulant")
    assert all(layer.merged for layer in surm_layers(merged).values())
    after = generate(merged, tokenizer, [PROBLEM, "hi"], options)
    assert [g.tokens for g in after] == [g.tokens for g in before]


def test_gpt2_adapts_the_q_and_v_thirds_of_its_fused_conv1d():
    prepared = prepare("surm-circulant", load_backbone("tiny-gpt2", 0).model, head=[], budget="1k")
    slices = {name: [s for s, _, _ in layer.slices] for name, layer in surm_layers(prepared.model).items()}
    assert slices == {f"transformer.h.{i}.attn.c_attn": ["q", "v"] for i in range(2)}


def test_adapter_mode_places_updates_after_attention_and_mlp_outputs():
    prepared = prepare("surm-circulant", load_backbone("tiny-llama", 0).model, head=[], budget="2k", mode="adapter")
    names = set(surm_layers(prepared.model))
    assert names == {f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.o_proj", "mlp.down_proj")}


# -- the loss mask ---------------------------------------------------------------------------------


def test_labels_cover_the_reply_and_its_end_marker_only():
    tokenizer = char_chat_tokenizer()
    row = row_fields({"prompt": "2 + 2?", "response": "4"})
    encoded = encode(tokenizer, row, 256, reply_end(tokenizer))
    learned = [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "4<|im_end|>"
    assert (
        tokenizer.decode(encoded.input_ids) == "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>"
    )


def test_response_loss_is_the_mean_of_transformers_per_example_losses():
    backbone = load_backbone("tiny-qwen2", 0)
    rows = [{**r, "index": i} for i, r in enumerate(load_lm_task("arithmetic", max_train=3, max_eval=1).train)]
    batch = batch_of(backbone.tokenizer, rows)
    mine = response_loss(backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                         batch["labels"])  # fmt: skip
    theirs = []
    for i in range(len(rows)):  # each example alone, unpadded: transformers' own shifted cross-entropy
        keep = batch["attention_mask"][i].bool()
        ids, labels = batch["input_ids"][i][keep][None], batch["labels"][i][keep][None]
        theirs.append(backbone.model(input_ids=ids, labels=labels).loss)
    torch.testing.assert_close(mine, torch.stack(theirs).mean(), rtol=1e-5, atol=1e-5)


# -- tasks and metrics -----------------------------------------------------------------------------


def test_arithmetic_rows_are_seeded_and_their_worked_steps_and_answers_are_right():
    first, second = load_lm_task("arithmetic"), load_lm_task("arithmetic")
    assert first.train[:50] == second.train[:50] and len(first.train) == 2000 and len(first.eval) == 200
    assert set(first.train["messages"]).isdisjoint(first.eval["messages"])
    for row in first.eval:
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", row["response"])
        assert len(steps) >= 2
        value = int(re.search(r"has (\d+)", json.loads(row["messages"])[0]["content"]).group(1))
        for a, op, b, c in steps:  # each step starts where the last ended and is computed right
            assert int(a) == value and int(c) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            value = int(c)
        assert row["answer"] == str(value) and row["response"].endswith(f"The answer is {value}.")


def test_instruction_files_in_jsonl_csv_and_chat_messages(tmp_path):
    jsonl = tmp_path / "data.jsonl"
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(8)]
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    rows.append({"system": "be brief", "prompt": "q", "response": "r", "answer": "r"})
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_lm_task(f"instruct:{jsonl}")
    both = list(task.train) + list(task.eval)
    assert len(task.train) == 8 and len(task.eval) == 2
    chat = next(r for r in both if r["response"] == "hello")
    assert json.loads(chat["messages"]) == [{"role": "user", "content": "hi"}]
    system = next(r for r in both if r["answer"] == "r")
    assert json.loads(system["messages"])[0] == {"role": "system", "content": "be brief"}
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.csv").write_text("prompt,response\nx,y\nz,w\n")
    (folder / "test.csv").write_text("prompt,response\nu,v\n")
    task = load_lm_task(f"instruct:{folder}")
    assert task.train["response"] == ["y", "w"] and task.eval["response"] == ["v"]


def test_a_row_without_a_response_is_named_with_what_is_accepted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"prompt": "c", "reply": "d"}))
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 has no 'response' \(fields: prompt, reply\); give a "):
        load_lm_task(f"instruct:{path}")


def test_a_tokenizer_without_a_chat_template_is_refused_by_name():
    with pytest.raises(ValueError, match="the tokenizer of tiny-x has no chat template"):
        require_chat_template(char_chat_tokenizer(chat_template=None), "tiny-x")
    with pytest.raises(ValueError, match="has no chat template"):
        generate(load_backbone("tiny-llama", 0).model, char_chat_tokenizer(chat_template=None), ["hi"])


def test_a_prompt_longer_than_max_length_is_named_before_training(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": "x" * (300 if i == 3 else 5), "response": "y"}) for i in range(5)))
    config = TrainConfig(backbone="tiny-llama", task=f"instruct:{path}", method="surm-circulant", budget="1k",
                         max_length=64, runs_dir=str(tmp_path / "runs"), cpu=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"row \d: its prompt is 3\d\d tokens, but max_length is 64"):
        train(config, progress=False)


def test_exact_match_and_perplexity():
    assert exact_match("3 + 2 = 5. The answer is 5.", "", "5")
    assert not exact_match("The answer is 15.", "", "5") and not exact_match("no number", "", "5")
    assert exact_match(" Fresh. ", "fresh") and not exact_match("fresh!", "rotten")
    assert final_number("1,200 then -3") == "-3"
    assert perplexity(math.log(7.0)) == pytest.approx(7.0) and perplexity(1e4) == math.inf


# -- generation ------------------------------------------------------------------------------------


def test_greedy_generation_equals_a_hand_written_argmax_loop_without_cache():
    backbone = load_backbone("tiny-mistral", 0)
    model, tokenizer = backbone.model.eval(), backbone.tokenizer
    prompts = [PROBLEM, "hi"]
    from surmlab.lm.generate import encode_prompts

    ids = encode_prompts(tokenizer, prompts)
    got = generate_ids(model, tokenizer, ids, GenerationOptions(max_new_tokens=8))
    for prompt_ids, tokens in zip(ids, got, strict=True):
        sequence, mine = list(prompt_ids), []
        with torch.no_grad():
            for _ in range(8):  # every step recomputes the whole sequence, alone and unpadded
                nxt = int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
                sequence.append(nxt)
                mine.append(nxt)
                if nxt == tokenizer.eos_token_id:
                    break
        assert tokens == mine


def test_sampling_is_reproducible_by_seed_and_leaves_the_global_rng_alone():
    backbone = load_backbone("tiny-llama", 0)
    options = GenerationOptions(max_new_tokens=10, sample=True, temperature=2.0, seed=3)
    state = torch.get_rng_state()
    first = generate(backbone.model, backbone.tokenizer, ["hi"], options)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(backbone.model, backbone.tokenizer, ["hi"], options) == first
    other = generate(backbone.model, backbone.tokenizer, ["hi"], GenerationOptions(10, True, 2.0, seed=4))
    assert other != first


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, r"max_new_tokens must be a whole number in \[1, 4096\], got 0"),
        ({"temperature": 0.0}, "temperature must be a positive finite number, got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": -1}, r"top_k must be a whole number >= 0 \(0: off\), got -1"),
    ],
)
def test_generation_options_out_of_range_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationOptions(**options)


def test_a_prompt_past_the_context_is_named():
    backbone = load_backbone("tiny-llama", 0)  # a context of 256 tokens
    with pytest.raises(ValueError, match=r"prompt 2 is 2\d\d tokens .* max_new_tokens 64 .* context of 256 tokens"):
        generate(backbone.model, backbone.tokenizer, ["hi", "x" * 200], GenerationOptions(max_new_tokens=64))


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_named(tmp_path):
    import gguf

    from surmlab.lm.assets import check_gguf_readable

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "wavenet")
    writer.add_tensor("w", torch.zeros(4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(
        ValueError, match=r"odd.gguf: transformers cannot read GGUF architecture 'wavenet'; it reads: .*llama"
    ):
        check_gguf_readable(path)
    (tmp_path / "text.gguf").write_text("not a gguf")
    with pytest.raises(ValueError, match=r"text\.gguf is not a GGUF file"):
        check_gguf_readable(tmp_path / "text.gguf")


# -- the command line at stand-in size -------------------------------------------------------------


def test_train_then_predict_on_the_command_line_merged_or_not(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = cli(["train", "--backbone", "tiny-llama", "--task", "arithmetic", "--method", "surm-circulant",
                "--budget", "2k", "--max-train", "16", "--max-eval", "4", "--max-length", "256", "--batch-size", "8",
                "--max-steps", "3", "--lr", "0.05", "--runs-dir", str(runs), "--cpu"])  # fmt: skip
    assert code == 0
    (run,) = runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 < summary["method_params"] <= 2000
    assert set(summary["final_metrics"]) >= {"exact_match", "loss", "perplexity"}
    assert summary["final_metrics"]["perplexity"] == pytest.approx(math.exp(summary["final_metrics"]["loss"]))
    assert (run / "final" / "trainable.safetensors").exists()
    capsys.readouterr()
    assert cli(["predict", str(run), PROBLEM, "hi", "--max-new-tokens", "16"]) == 0
    plain = capsys.readouterr().out
    assert cli(["predict", str(run), PROBLEM, "hi", "--max-new-tokens", "16", "--merged"]) == 0
    assert capsys.readouterr().out == plain
    options = GenerationOptions(max_new_tokens=16)
    tokens = [g.tokens for g in generate_from_run(run, [PROBLEM, "hi"], options)]
    assert tokens == [g.tokens for g in generate_from_run(run, [PROBLEM, "hi"], options, merged=True)]
    assert len(tokens) == 2 and all(tokens)
    assert cli(["predict", str(run), "hi", "--top-p", "0"]) == 2
    assert "top_p must be in (0, 1], got 0.0" in capsys.readouterr().err
    # the app's Try it tab replies with what ``surmlab predict`` generates, instead of classifying
    from surmlab.app.handlers import Lab
    from surmlab.app.use_tab import Loaded, on_try

    probabilities, message = on_try(Lab(runs, jobs=object()), Loaded(), run.name, "final", PROBLEM, None)
    (reply,) = generate_from_run(run, [PROBLEM], GenerationOptions())
    said = reply.text or f"(an empty reply: {len(reply.tokens)} special tokens)"  # a random stand-in may say nothing
    assert probabilities is None and message.endswith("\n\n" + said)


def test_gsm8k_rows_keep_the_worked_solution_and_take_the_number_after_the_marks():
    import datasets

    from surmlab.lm.data import gsm8k_rows

    hub = datasets.Dataset.from_dict(
        {
            "question": ["Tom has 2 boxes of 600 pens. How many pens?"],
            "answer": ["2 * 600 = <<2*600=1200>>1200\n#### 1,200"],
        }
    )
    (row,) = gsm8k_rows(hub)
    assert row["answer"] == "1200" and json.loads(row["messages"])[0]["content"].startswith("Tom has")
    assert row["response"] == "2 * 600 = <<2*600=1200>>1200\nThe answer is 1200."
    assert exact_match("so 1,200 pens. The answer is 1,200.", row["response"], row["answer"])


def test_classification_posed_as_generation():
    task = load_lm_task("rotten-tomatoes-chat", max_train=20, max_eval=5)
    assert set(task.train["response"]) <= {"fresh", "rotten"} and len(set(task.train["response"])) == 2
    assert "fresh or rotten" in json.loads(task.train[0]["messages"])[0]["content"]
