"""Memory options on a decoder stand-in: accumulation against one big batch, gradient checkpointing
against plain backprop, bf16 autocast, length bucketing (batches alike, exact resume), and the defaults
a decoder task gives the options a config leaves open."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from surmlab.lm.data import load_lm_task
from surmlab.memory import LengthBuckets, text_lengths, with_memory_defaults
from surmlab.runs import RunDir
from surmlab.train import TrainConfig, build, kind_of, make_loaders, train

BASE = {"backbone": "tiny-llama", "task": "arithmetic", "method": "surm-circulant", "budget": "1k", "cpu": True,
        "max_train": 16, "max_eval": 2, "max_length": 256, "lr": 0.05, "warmup_ratio": 0.0, "checkpoint_every": 0,
        "log_every": 1}  # fmt: skip


def run(tmp_path, name, **overrides):
    config = TrainConfig(**{**BASE, "runs_dir": str(tmp_path / name), **overrides})
    summary = train(config, progress=False)
    assert summary.status == "completed"
    return summary


def weights(summary):
    from pathlib import Path

    return load_file(str(Path(summary.run_dir) / "final" / "trainable.safetensors"))


def losses(summary):
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(summary.run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_accumulated_micro_batches_step_like_one_big_batch(tmp_path):
    big = weights(run(tmp_path, "big", batch_size=4, grad_accum=1, max_steps=2))
    accumulated = weights(run(tmp_path, "acc", batch_size=2, grad_accum=2, max_steps=2))
    single = weights(run(tmp_path, "small", batch_size=2, grad_accum=1, max_steps=2))
    assert big.keys() == accumulated.keys()
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(single[n], big[n], atol=1e-4) for n in big)  # the oracle can tell them apart


def test_gradient_checkpointing_trains_like_plain_backprop(tmp_path):
    plain = run(tmp_path, "plain", batch_size=4, max_steps=2)
    checkpointed = run(tmp_path, "ckpt", batch_size=4, max_steps=2, gradient_checkpointing=True)
    for name, value in weights(plain).items():
        torch.testing.assert_close(weights(checkpointed)[name], value, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_is_switched_on_in_the_model():
    from surmlab.train import build

    _, _, prepared = build(TrainConfig(**{**BASE, "gradient_checkpointing": True}))
    assert prepared.model.is_activation_checkpointing


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state whose precision cannot change: start and leave it fresh."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_autocast_trains_a_decoder(tmp_path, fresh_accelerate):
    summary = run(tmp_path, "bf16", batch_size=4, max_steps=2, mixed_precision="bf16")
    assert all(np.isfinite(v) for v in losses(summary).values())
    assert np.isfinite(summary.final_metrics["loss"])


def test_length_buckets_hold_rows_of_similar_length_and_cover_each_epoch_once():
    task = load_lm_task("arithmetic", max_train=256, max_eval=2)
    lengths = np.asarray(text_lengths(task.train))
    sampler = LengthBuckets(lengths.tolist(), batch_size=8, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(256))
    spread = lambda o: np.mean([np.ptp(lengths[o[i : i + 8]]) for i in range(0, len(o), 8)])  # noqa: E731
    shuffled = np.random.default_rng(0).permutation(256).tolist()
    assert spread(order) < 0.5 * spread(shuffled)  # far less padding than a plain shuffle
    sampler.set_epoch(1)
    assert list(sampler) != order and list(LengthBuckets(lengths.tolist(), 8, 0)) == order


def test_length_bucketing_resumes_exactly(tmp_path):
    options = {"batch_size": 2, "length_bucketing": True, "schedule": "constant", "epochs": 2}
    whole = run(tmp_path, "whole", max_steps=12, **options)
    first = run(tmp_path, "part", max_steps=10, **options)
    resumed = train(TrainConfig(**BASE), resume=first.run_dir, overrides={"max_steps": 12}, progress=False)
    assert losses(resumed)[11] == losses(whole)[11] and losses(resumed)[12] == losses(whole)[12]
    assert (
        losses(whole)[12]
        != losses(run(tmp_path, "shuffled", max_steps=12, **{**options, "length_bucketing": False}))[12]
    )


def test_length_bucketing_refuses_an_image_task():
    from surmlab.train import build

    with pytest.raises(ValueError, match="length_bucketing applies to text tasks"):
        build(TrainConfig(backbone="tiny-vit", task="mnist", method="lora", budget="1k", length_bucketing=True))


def settled(config, bf16):
    return with_memory_defaults(config, kind_of(config).memory_defaults, bf16)


def test_memory_defaults_follow_the_task_kind_and_keep_explicit_choices():
    decoder = TrainConfig(**BASE)
    classifier = TrainConfig(backbone="minilm-l6", task="rotten-tomatoes", method="lora")
    assert (decoder.length_bucketing, decoder.mixed_precision) == (None, "auto")  # left to the lab
    on_gpu, on_cpu = settled(decoder, bf16=True), settled(decoder, bf16=False)
    assert (on_gpu.length_bucketing, on_gpu.mixed_precision) == (True, "bf16")
    assert (on_cpu.length_bucketing, on_cpu.mixed_precision) == (True, "no")
    for bf16 in (True, False):
        plain = settled(classifier, bf16)
        assert (plain.length_bucketing, plain.mixed_precision) == (False, "no")
    explicit = TrainConfig(**{**BASE, "length_bucketing": False, "mixed_precision": "fp16"})
    assert settled(explicit, bf16=True) == explicit


def padding_tokens(config):
    backbone, task, _ = build(config)
    loader, _ = make_loaders(task, backbone, config)
    return sum(int((batch["attention_mask"] == 0).sum()) for batch in loader)


def test_decoder_default_bucketing_trains_on_less_padding():
    options = {**BASE, "max_train": 96, "batch_size": 8}
    bucketed = padding_tokens(settled(TrainConfig(**options), bf16=False))
    shuffled = padding_tokens(TrainConfig(**options, length_bucketing=False))
    assert bucketed < 0.5 * shuffled


def test_a_run_folder_records_the_memory_options_used(tmp_path):
    default = RunDir(run(tmp_path, "default", batch_size=4, max_steps=1).run_dir).config().train
    assert (default.length_bucketing, default.mixed_precision) == (True, "no")  # CPU: no bf16
    plain = RunDir(run(tmp_path, "plain", batch_size=4, max_steps=1, length_bucketing=False).run_dir)
    assert plain.config().train.length_bucketing is False
