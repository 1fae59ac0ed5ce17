"""The benchmark harness (benchmarks/): output schema, same-run ratios, metadata, fair PEFT baselines.

No timing assertions: these tests run the ``tiny`` profile (seconds) and check what it records.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

# benchmarks/ sits next to the package in the checkout (it is not installed): import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import calibrate, loop_sync, report
from benchmarks.layers import Group, build_group, build_peft, build_surm, lokr_factors, solved_hyper
from benchmarks.models import ModelSpec, build_model, lora_budget, make_batch, prepare, run_steps, step_fn
from benchmarks.run import PROFILES, TINY_VIT, main, run
from surmlab import SurmConfig, inject
from surmlab.bench import main as bench_main
from surmlab.timing import paired_ratio, peak_memory, randomize_updates, time_interleaved

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    return run("tiny", CPU)


def test_result_is_json_with_metadata(tiny):
    env = tiny["environment"]
    for key in ("date", "device", "cpu_model", "cpu_count", "torch_threads", "git_commit", "memory_method"):
        assert key in env
    assert env["device"] == "cpu"
    assert env["packages"]["torch"] and env["packages"]["peft"] and env["packages"]["timm"]
    assert env["load_average_start"] is None or len(env["load_average_start"]) == 3
    assert tiny["profile"] == "tiny" and tiny["elapsed_s"] >= 0
    assert json.loads(json.dumps(tiny)) == tiny  # plain JSON, no tensors or tuples lost


def test_layer_rows_schema(tiny):
    rows = tiny["layers"]
    groups = {r["group"] for r in rows}
    assert groups == {g.name for g in PROFILES["tiny"]["groups"]}
    for r in rows:
        for key in ("out_features", "in_features", "tokens", "dtype", "method", "hyper", "params", "path"):
            assert key in r
        for metric in ("train", "infer"):
            assert r[metric]["median_s"] > 0 and len(r[metric]["times_s"]) == PROFILES["tiny"]["layer_reps"]
        assert r["train_peak_bytes"] > 0
        if r["impl"] == "surmlab":
            assert r["path"] in ("fft", "dense")
            assert set(r["auto_path"]) == {"train", "infer"}
    methods = {r["method"] for r in rows if r["group"] == "24x16/t16/float32"}
    assert {"base", "lora", "c3a", "lokr", "kronecker@lokr/fft", "circulant/fft", "circulant/dense"} <= methods
    sliced = [r for r in rows if "[qv]" in r["group"]]
    assert sliced and not any(r["method"] in ("c3a", "lokr") for r in sliced)  # PEFT cannot slice a fused qkv


def test_surm_rows_respect_the_lora_budget(tiny):
    for r in tiny["layers"]:
        lora = next(x for x in tiny["layers"] if x["group"] == r["group"] and x["method"] == "lora")
        if r["impl"] == "surmlab" and not r["method"].startswith("kronecker@"):
            assert r["params"] <= lora["params"]


def test_ratios_are_against_the_same_run(tiny):
    """Every ratio is the median per-round ratio to the baseline row of the same group, recomputed here."""
    rows = tiny["layers"]
    by = {(r["group"], r["method"]): r for r in rows}
    for r in rows:
        lora, base = by[(r["group"], "lora")], by[(r["group"], "base")]
        for metric in ("train", "infer"):
            want = statistics.median(a / b for a, b in zip(r[metric]["times_s"], lora[metric]["times_s"], strict=True))
            assert r["ratios"][f"{metric}_vs_lora"] == pytest.approx(want)
            assert r["ratios"][f"{metric}_vs_base"] == pytest.approx(paired_ratio(r[metric], base[metric]))
        assert r["ratios"]["train_peak_vs_lora"] == pytest.approx(r["train_peak_bytes"] / lora["train_peak_bytes"])
        if r["method"] == "lora":
            assert r["ratios"]["train_vs_lora"] == 1.0
        if r["pair"]:
            pair = by[(r["group"], r["pair"])]
            assert r["ratios"]["train_vs_pair"] == pytest.approx(paired_ratio(r["train"], pair["train"]))


def test_model_steps_and_merged_inference(tiny):
    steps = tiny["model_steps"]
    assert {r["kind"] for r in steps} == {"vit", "bert"}
    for r in steps:
        assert r["step"]["median_s"] > 0 and r["step_peak_bytes"] > 0
        assert r["params"] <= r["budget"]
        lora = next(x for x in steps if x["model"] == r["model"] and x["method"] == "lora")
        assert r["ratios"]["step_vs_lora"] == pytest.approx(paired_ratio(r["step"], lora["step"]))
        if r["impl"] == "surmlab":
            assert r["path"] in ("fft", "dense")
    merged = tiny["merged_inference"]
    assert {r["family"] for r in merged} == set(PROFILES["tiny"]["merged_families"])
    for r in merged:
        want = paired_ratio(r["merged_infer"], r["base_merged_infer"])
        assert r["ratios"]["merged_infer_vs_base"] == pytest.approx(want)


def test_targets_summarise_the_rows(tiny):
    targets = tiny["targets"]
    names = {t["target"] for t in targets}
    assert report.C3A_SPEEDUP[0] in names and report.STEP_TIME[0] in names and report.MERGED[0] in names
    c3a = next(t for t in targets if t["target"] == report.C3A_SPEEDUP[0])
    row = next(r for r in tiny["layers"] if r["group"] == c3a["case"] and r["method"] == "circulant/fft")
    assert c3a["value"] == pytest.approx(1 / row["ratios"]["train_vs_pair"])
    assert c3a["met"] == (c3a["value"] >= 1.5)
    assert "| target |" in report.summary_table(tiny)
    assert "circulant/fft" in report.layer_table(tiny)
    assert "merged ms" in report.model_table(tiny)


def test_main_writes_the_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--profile", "tiny", "--only", "layers", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["layers"] and not result["model_steps"]
    assert "| target |" in capsys.readouterr().out


def test_surmlab_bench_entry_point(tmp_path):
    out = tmp_path / "b.json"
    assert bench_main(["--profile", "tiny", "--only", "layers", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["profile"] == "tiny"


# -- PEFT baselines are configured like ours ------------------------------------------------------------

SHAPES = [(768, 768), (2304, 768), (3072, 768), (768, 3072), (1024, 1024)]


@pytest.mark.parametrize(("out_features", "in_features"), SHAPES)
def test_c3a_has_our_block_size(out_features, in_features):
    """PEFT C3A's kernel has exactly our circulant weight's shape (p, q, n), hence the same block size."""
    group = Group(out_features, in_features, 1)
    hyper = solved_hyper("circulant", group)
    ours = build_surm(group, "circulant", hyper, "fft", CPU)
    theirs = build_peft(group, "c3a", CPU, block_size=hyper["block_size"])
    assert list(ours.shapes.values()) == list(theirs.shapes.values())
    assert ours.params == theirs.params


@pytest.mark.parametrize(("out_features", "in_features"), SHAPES)
def test_lokr_has_our_factor_shapes(out_features, in_features):
    """PEFT LoKr's w1, w2 are our Kronecker a, b (both whole matrices: no low-rank split of w2)."""
    group = Group(out_features, in_features, 1)
    m1, n1 = lokr_factors(in_features, out_features)
    ours = build_surm(group, "kronecker", {"factors": [m1, n1]}, "fft", CPU)
    theirs = build_peft(group, "lokr", CPU)
    assert sorted(theirs.shapes) == ["layer.lokr_w1.default", "layer.lokr_w2.default"]
    assert theirs.shapes["layer.lokr_w1.default"] == [m1, n1]
    assert theirs.shapes["layer.lokr_w2.default"] == [out_features // m1, in_features // n1]
    assert sorted(ours.shapes.values()) == sorted(theirs.shapes.values())
    assert ours.params == theirs.params


def test_group_pairs_use_the_same_hyper_parameters():
    built = {b.method: b for b in build_group(Group(96, 48, 4), CPU, ["circulant", "kronecker"])}
    assert built["c3a"].hyper["block_size"] == built["circulant/fft"].hyper["block_size"]
    assert built["lokr"].hyper["factors"] == built["kronecker@lokr/fft"].hyper["factors"]


# -- measurement helpers ---------------------------------------------------------------------------------


def test_time_interleaved_runs_every_function_each_round():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    times = time_interleaved({"a": make("a"), "b": make("b")}, CPU, reps=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert times["a"]["reps"] == 3 and len(times["b"]["times_s"]) == 3


def test_peak_memory_sees_transients_not_setup():
    keep = []

    def setup():
        keep.append(torch.empty(2**20, dtype=torch.uint8))  # allocated before the measurement

    def fn():
        t = torch.empty(4 * 2**20, dtype=torch.uint8)  # 4 MiB, freed before fn returns
        t.fill_(1)
        del t

    peak = peak_memory(fn, CPU, setup=setup)
    assert 4 * 2**20 <= peak < 5 * 2**20


def test_randomize_updates_moves_surm_and_peft_lora_updates_only():
    """Merged inference is timed on non-zero updates: SURM kernels and PEFT's lora_B start at zero."""
    surm = torch.nn.Sequential(torch.nn.Linear(8, 8)).requires_grad_(False)
    inject(surm, SurmConfig(family="circulant", target_modules=["0"]))
    lora = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"]), torch.nn.Sequential(torch.nn.Linear(8, 8)))
    for model, updates in ((surm, "0.updates.full.weight"), (lora, "0.lora_B.default.weight")):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        randomize_updates(model)
        after = dict(model.named_parameters())
        assert before[updates].abs().sum() == 0 and after[updates].abs().sum() > 0
        assert all(torch.equal(after[n], before[n]) for n in before if n != updates)  # base and lora_A kept


def test_calibration_scores_the_rule():
    """The fit picks the rule's constants from measured rows; obvious cases come out right."""
    rows = [
        {  # one 768x768 circulant layer, 4096 tokens, where the dense path is 10x faster
            "family": "circulant",
            "out_features": 768,
            "in_features": 768,
            "slices": "",
            "tokens": 4096,
            "train": {"fft": 1.0, "dense": 0.1},
            "infer": {"fft": 1.0, "dense": 0.1},
        },
        {  # lowrank at 1 token: the activation path (two tiny matmuls) is 10x faster
            "family": "lowrank",
            "out_features": 768,
            "in_features": 768,
            "slices": "",
            "tokens": 1,
            "train": {"fft": 0.1, "dense": 1.0},
            "infer": {"fft": 0.1, "dense": 1.0},
        },
    ]
    fitted = calibrate.fit(rows)
    assert fitted["train"]["right"] == 2 and fitted["infer"]["right"] == 2
    assert fitted["train"]["time_lost"] == 0.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_step(dtype):
    """A step under autocast trains every kind of product (custom backward functions included)."""
    spec = ModelSpec("vit", 2, image=16, config=TINY_VIT)
    methods = ["lora", "circulant:fft", "ldr:fft", "ldr:dense", "kronecker:fft", "lowrank:fft"]
    rows = run_steps(spec, methods, CPU, reps=1, warmup=0, dtype=dtype)
    assert [r["method"] for r in rows] == methods
    assert all(r["dtype"] == dtype and r["step"]["median_s"] > 0 for r in rows)
    # and each step really trains: every trainable tensor of every method moves and stays finite
    torch.manual_seed(0)
    base = build_model(spec, CPU)
    budget, batch = lora_budget(base, spec), make_batch(spec, base, CPU)
    for method in methods:
        model, _ = prepare(base, spec, method, budget)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        step = step_fn(spec, model, batch, dtype)
        step()
        step()  # LoRA's B starts at zero: its A moves from the second step on
        for name, p in model.named_parameters():
            if name in before:
                assert torch.isfinite(p).all(), (method, name)
                assert not torch.equal(p, before[name]), (method, name)


def test_loop_sync_benchmark_writes_its_record(tmp_path):
    """The loop-sync benchmark runs at a toy size and records both timings, their ratio and the machine."""
    out = tmp_path / "sync.json"
    argv = ["--layers", "1", "--hidden", "32", "--batch", "2", "--tokens", "8", "--steps", "4", "--log-every", "2"]
    assert loop_sync.main([*argv, "--reps", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["step_s_before"] > 0 and record["step_s_after"] > 0 and record["after_over_before"] > 0
    assert record["command"].startswith("python -m benchmarks.loop_sync --layers 1")
    assert record["environment"]["memory_method"] and len(record["times"]["sync every step"]["times_s"]) == 2


# -- the structured comparison and the GPU script ----------------------------------------------------------


def test_structured_benchmark_times_every_family_and_peft_baseline_in_one_run(tmp_path):
    from benchmarks import structured

    out = tmp_path / "s.json"
    args = ["--profile", "tiny", "--only", "layers", "--families", "toeplitz,sparse_spectrum"]
    assert structured.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    expected = {"base", "lora", "toeplitz/fft", "toeplitz/dense", "sparse_spectrum/fft", "fourierft"}
    assert expected | set(structured.STRUCTURED_PEFT) <= set(rows)
    assert rows["sparse_spectrum/fft"]["ratios"]["train_vs_pair"] > 0  # paired with FourierFT at the same n
    assert rows["fourierft"]["params"] == rows["sparse_spectrum/fft"]["params"]
    assert rows["base"]["ratios"]["train_vs_base"] == 1.0 and rows["lora"]["ratios"]["train_vs_lora"] == 1.0
    assert all(0 < rows[m]["params"] <= 8 * (64 + 64) for m in structured.STRUCTURED_PEFT)  # LoRA r8's count
    assert result["environment"]["packages"]["torch"] and "command" in result


def test_structured_training_steps_include_every_peft_baseline_at_lora_budget():
    """The lab's builders put PEFT's structured baselines into a model for the step comparison, at LoRA's count
    (or their nearest setting where the knob cannot reach it)."""
    from benchmarks import structured

    spec = structured.TINY_BERT_SPEC
    methods = ["lora", "fourierft", *structured.STRUCTURED_PEFT]
    rows = {r["method"]: r for r in run_steps(spec, methods, CPU, reps=1, warmup=0)}
    budget = rows["lora"]["params"]
    assert set(rows) == set(methods) and all(r["budget"] == budget for r in rows.values())
    assert all(0 < r["params"] <= budget for r in rows.values())
    assert rows["fourierft"]["params"] == budget and rows["fourierft"]["hyper"]["n_frequency"] == budget // 2
    assert all(r["ratios"]["step_vs_lora"] > 0 for r in rows.values())


GPU_SH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def _gpu_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GPU_SH), *args], capture_output=True, text=True, timeout=120)


def test_gpu_script_help_and_bad_arguments():
    shown = _gpu_sh("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: benchmarks/gpu.sh")
    assert "benchmarks.calibrate" in shown.stdout and "bfloat16" in shown.stdout
    for args, message in [
        (("--bogus",), "unknown argument '--bogus'"),
        (("--device",), "--device needs a value"),
        (("--device", "cpu"), "--device must be cuda or cuda:N, got 'cpu'"),
        (("--profile", "huge"), "--profile must be quick or full, got 'huge'"),
    ]:
        done = _gpu_sh(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_script_refuses_cleanly_without_cuda(tmp_path):
    done = _gpu_sh("--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "sees no CUDA device here; this script needs one (cuda:0)" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
