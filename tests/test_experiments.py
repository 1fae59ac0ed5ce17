"""Closed-form fits of the approximation experiment against independent oracles, and parameter checks."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import scipy.linalg
import torch
from peft import LoraConfig, get_peft_model

from surmlab import SurmConfig, inject
from surmlab.experiments import (
    approximation,
    common,
    get,
    glue_adapters,
    image_classification,
    low_resource,
    names,
    pinwheel,
    speed,
    tour,
    tradeoff,
    weight_analysis,
)
from surmlab.plots import pareto_front
from surmlab.structures import FAMILIES
from surmlab.timing import randomize_updates


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_registry_finds_every_experiment():
    expected = {"approximation", "tour", "pinwheel", "tradeoff", "glue_adapters", "weight_analysis", "speed"}
    assert expected <= set(names())
    assert "common" not in names()


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
@pytest.mark.parametrize("name", names())
def test_shipped_profiles_pass_their_own_validation(offline_cache, name, profile):
    """A profile that fails its own checks (say, a budget too small for one of its methods) would only
    show when someone runs it; the paper profiles run (two steps, hub stand-ins) in test_paper_profiles.py."""
    module = get(name)
    module.validate(common.resolve(module.PROFILES, profile, {}))


@pytest.mark.parametrize("n, b", [(8, 8), (12, 4), (16, 8)])
def test_diagonal_projection_keeps_a_circulant_and_a_toeplitz(rng, n, b):
    c = np.block([[scipy.linalg.circulant(rng.standard_normal(b)) for _ in range(n // b)] for _ in range(n // b)])
    assert np.allclose(approximation.project_diagonals(c, "circulant", b), c)
    t = np.block(
        [[scipy.linalg.toeplitz(rng.standard_normal(b), rng.standard_normal(b)) for _ in range(n // b)]
         for _ in range(n // b)]
    )  # fmt: skip
    assert np.allclose(approximation.project_diagonals(t, "toeplitz", b), t)
    s = scipy.linalg.toeplitz(rng.standard_normal(n))
    assert np.allclose(approximation.project_diagonals(s, "symmetric_toeplitz", n), s)


@pytest.mark.parametrize("family", ["circulant", "toeplitz", "symmetric_toeplitz"])
def test_diagonal_projection_is_orthogonal(rng, family):
    """Residual orthogonal to the subspace (checked on a basis built with scipy) and idempotent."""
    n = 8
    target = rng.standard_normal((n, n))
    proj = approximation.project_diagonals(target, family, n)
    assert np.allclose(approximation.project_diagonals(proj, family, n), proj)
    keys = approximation.diagonal_keys(family, n)
    for k in np.unique(keys):
        assert abs(((target - proj) * (keys == k)).sum()) < 1e-12


def test_van_loan_recovers_an_exact_kronecker_product(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 2))
    k = np.kron(a, b)
    assert np.allclose(approximation.van_loan(k, 3, 4), k)


def test_van_loan_beats_random_kronecker_products(rng):
    target = rng.standard_normal((8, 8))
    best = np.linalg.norm(approximation.van_loan(target, 2, 4) - target)
    for _ in range(20):
        other = np.kron(rng.standard_normal((2, 4)), rng.standard_normal((4, 2)))
        assert best <= np.linalg.norm(other - target) + 1e-12


def test_truncated_svd_error_is_the_tail_singular_values(rng):
    target = rng.standard_normal((10, 7))
    s = np.linalg.svd(target, compute_uv=False)
    for r in range(1, 7):
        err = np.linalg.norm(approximation.truncated_svd(target, r) - target)
        assert err == pytest.approx(np.sqrt((s[r:] ** 2).sum()))


@pytest.mark.parametrize(
    "family, hyper",
    [("lowrank", {"rank": 2}), ("kronecker", {"factors": [4, 4]}), ("circulant", {"block_size": 8}),
     ("toeplitz", {"block_size": 8}), ("symmetric_toeplitz", {"block_size": 16})],
)  # fmt: skip
def test_gradient_descent_reaches_the_closed_form(rng, family, hyper):
    target = approximation.make_target("psd", 16, rng)
    gd = approximation.relative_error(approximation.gradient_fit(target, family, hyper, 300, 0), target)
    cf = approximation.relative_error(approximation.closed_form(target, family, hyper), target)
    assert gd == pytest.approx(cf, rel=approximation.AGREE_TOL)


def test_pareto_front():
    t = pd.DataFrame({"p": [1, 2, 3, 4, 2], "acc": [0.5, 0.7, 0.6, 0.9, 0.4]})
    assert list(pareto_front(t, "p", "acc").index) == [0, 1, 3]


def test_resolve_rejects_unknown_parameters_and_profiles():
    with pytest.raises(ValueError, match=r"unknown parameter.*sizee"):
        common.resolve(approximation.PROFILES, "smoke", {"sizee": 3})
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        common.resolve(approximation.PROFILES, "fast", {})
    assert common.resolve(approximation.PROFILES, "smoke", {"size": None}).size == 32


def test_resolve_converts_papermill_strings_by_the_field_type():
    """``-p`` values arrive as strings (or literals): lists, numbers and budgets take the declared type."""
    p = common.resolve(
        low_resource.PROFILES, "smoke", {"tasks": "mnist, fashion-mnist", "shots": "1,5", "fractions": "0.5",
                                         "max_steps": "7", "budgets": "4096, 8k", "epochs": 2.0, "image_size": None},
    )  # fmt: skip
    assert p.tasks == ("mnist", "fashion-mnist") and p.shots == (1, 5) and p.fractions == (0.5,)
    assert p.max_steps == 7 and p.budgets == ("4096", "8k") and p.epochs == 2 and isinstance(p.epochs, int)
    assert p.image_size is None and p.seeds == (0, 1)  # None: the profile's default
    assert common.resolve(pinwheel.PROFILES, "smoke", {"methods": ["circulant"]}).methods == ("circulant",)
    with pytest.raises(ValueError, match="steps must be an int, got 'many'"):
        common.resolve(pinwheel.PROFILES, "smoke", {"steps": "many"})


def test_experiment_writes_its_parameters_as_resolved(tmp_path):
    pinwheel.run("smoke", out_dir=str(tmp_path), steps="2", methods="circulant", bottom="frozen", seeds=1)
    parameters = json.loads((tmp_path / "pinwheel.json").read_text())["parameters"]
    assert parameters["steps"] == 2 and parameters["methods"] == ["circulant"]
    assert set(parameters) == set(common.parameter_names(pinwheel.Params))


@pytest.mark.parametrize(
    "module, params, message",
    [
        (approximation, {"targets": "psd,hilbert"}, "unknown target 'hilbert'"),
        (approximation, {"families": ["fourier"]}, "unknown family 'fourier'"),
        (approximation, {"size": 48}, "power of two"),
        (pinwheel, {"methods": "lora"}, "unknown method 'lora'"),
        (pinwheel, {"budget": 10**6}, "infeasible"),
        (tour, {"task": "imagenet"}, "unknown task 'imagenet'"),
        (tour, {"backbone": "resnet-9000"}, "unknown backbone"),
        (tour, {"budget": "10M"}, "infeasible"),
        (weight_analysis, {"methods": "full"}, "not full"),
        (weight_analysis, {"methods": "surm-fourier"}, "unknown method 'surm-fourier'"),
        (weight_analysis, {"pooling": "max"}, "unknown pooling 'max'"),
        (weight_analysis, {"task": "imagenet"}, "unknown task 'imagenet'"),
        (weight_analysis, {"budget": "10M"}, "infeasible"),
        (low_resource, {"shots": "0,5"}, "shots must be >= 1"),
        (low_resource, {"shots": "", "fractions": ""}, "at least one value"),
        (low_resource, {"tasks": "rotten-tomatoes"}, "not an image task"),
        (low_resource, {"seeds": ""}, "seed list is empty"),
        (low_resource, {"workers": 0}, "workers must be a positive number"),
        (
            image_classification,
            {"budgets": "4096,10M"},
            "surm-circulant at budget 10M: a budget of 10,000,000 is infeasible",
        ),
        (image_classification, {"methods": "surm-circulant,linear-probe", "seeds": "1,1"}, "distinct whole numbers"),
        (glue_adapters, {"methods": "surm-circulant,bitfit"}, "not bitfit"),
        (glue_adapters, {"methods": "houlsby,lora"}, "list at least one surm-\\* method"),
        (glue_adapters, {"houlsby_bottleneck": 10**4}, "adapter bottleneck must be a whole number from 1 to"),
        (tradeoff, {"budgets": "10M"}, "infeasible"),
        (tradeoff, {"sweep": "surm-fourier"}, "unknown method 'surm-fourier'"),
        (tradeoff, {"seeds": ""}, "seed list is empty"),
        (speed, {"methods": "surm-circulant"}, "list lora"),
        (speed, {"methods": "adapter,lora"}, "not adapter"),
        (speed, {"reps": 0}, "reps must be a positive number"),
        (speed, {"device": "tpu"}, "unknown device 'tpu'"),
        (speed, {"backbone": "resnet-9000"}, "unknown backbone"),
        (speed, {"budget": "10M"}, "infeasible"),
    ],
)
def test_bad_parameters_stop_before_any_work(tmp_path, module, params, message):
    with pytest.raises(ValueError, match=message):
        module.run("smoke", out_dir=str(tmp_path), **params)
    assert not list(tmp_path.glob("*.json"))


def test_results_record_command_parameters_and_environment(tmp_path):
    table = pinwheel.run("smoke", out_dir=str(tmp_path), steps=3, methods="circulant", bottom="frozen")
    record = json.loads((tmp_path / "pinwheel.json").read_text())
    assert record["parameters"]["steps"] == 3 and record["command"]
    assert record["environment"]["packages"]["torch"]
    assert len(record["rows"]) == len(table) == 1
    assert (tmp_path / "pinwheel.csv").is_file() and (tmp_path / "pinwheel_curves.csv").is_file()
    curves, shown = pinwheel.figures(table, tmp_path)  # the notebook's figure cell: from the curve file
    assert isinstance(curves, go.Figure) and {t.name for t in curves.data} == {"circulant"}
    assert shown is table


def test_results_name_run_folders_relative_to_the_results_folder(tmp_path):
    run = tmp_path / "runs" / "20260101-000000-lora"
    run.mkdir(parents=True)
    elsewhere = str(tmp_path.parent / "elsewhere")
    table = pd.DataFrame({"run_dir": [str(run), elsewhere], "final": [0.5, 0.6]})
    common.write_results(table, tmp_path, "x", "smoke", {}, common.start())
    rows = json.loads((tmp_path / "x.json").read_text())["rows"]
    assert (tmp_path / rows[0]["run_dir"]).resolve() == run.resolve() and not Path(rows[0]["run_dir"]).is_absolute()
    assert rows[1]["run_dir"] == elsewhere and rows[1]["final"] == 0.6
    assert pd.read_csv(tmp_path / "x.csv").run_dir[0] == rows[0]["run_dir"]


def test_results_record_the_environment_the_experiment_started_with(tmp_path):
    started = common.Started(time=0.0, environment={"git_commit": "commit-at-start"})
    common.write_results(pd.DataFrame({"final": [0.5]}), tmp_path, "x", "smoke", {}, started)
    assert json.loads((tmp_path / "x.json").read_text())["environment"] == {"git_commit": "commit-at-start"}


def test_merged_folds_surm_and_peft_updates_into_plain_layers():
    """speed and weight_analysis read merged weights: same function, same outputs, no adapter layers left."""
    x = torch.randn(4, 8)
    surm = torch.nn.Sequential(torch.nn.Linear(8, 8)).requires_grad_(False)
    inject(surm, SurmConfig(family="circulant", target_modules=["0"]))
    peft = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
    for model in (surm, peft):
        randomize_updates(model)
        expected = model(x)
        plain = common.merged(model)
        assert all(type(m) in (torch.nn.Sequential, torch.nn.Linear) for m in plain.modules())
        assert torch.allclose(plain(x), expected, atol=1e-6)


# -- weight_analysis: cosine distance and linear CKA against independent properties ---------------------


def test_cosine_distance_on_known_matrices():
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert weight_analysis.cosine_distance(w, w) == pytest.approx(0.0, abs=1e-12)
    assert weight_analysis.cosine_distance(w, 3.0 * w) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert weight_analysis.cosine_distance(w, -w) == pytest.approx(2.0)
    assert weight_analysis.cosine_distance(w, np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(1.0)  # orthogonal
    # flattened angle of 60 degrees: <a, b> = 1, |a| = |b| = sqrt(2)
    assert weight_analysis.cosine_distance(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]])) == pytest.approx(
        1 - 1 / np.sqrt(2)
    )
    with pytest.raises(ValueError, match="zero weight"):
        weight_analysis.cosine_distance(np.zeros((2, 2)), w)


def _cka_by_hsic(x, y):
    """Independent formula: HSIC with linear kernels and the centring matrix H (Gretton et al.)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return (k * m).sum() / np.sqrt((k * k).sum() * (m * m).sum())


def test_linear_cka_properties(rng):
    x = rng.standard_normal((200, 16))
    assert weight_analysis.linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert weight_analysis.linear_cka(x, x @ q) == pytest.approx(1.0)  # orthogonal transform
    assert weight_analysis.linear_cka(x, 7.5 * x + 3.0) == pytest.approx(1.0)  # isotropic scaling and a shift
    y = rng.standard_normal((200, 8))
    assert weight_analysis.linear_cka(x, y) < 0.15  # independent random features
    assert weight_analysis.linear_cka(x, y) == pytest.approx(weight_analysis.linear_cka(y, x))
    mixed = x[:, :8] + 0.5 * y
    assert weight_analysis.linear_cka(x, mixed) == pytest.approx(_cka_by_hsic(x, mixed))
    assert 0.15 < weight_analysis.linear_cka(x, mixed) < 1.0
    # not invariant to a non-isotropic scaling of the features
    assert weight_analysis.linear_cka(x, x * np.linspace(0.1, 10, 16)) < 0.99


def test_linear_cka_rejects_mismatched_examples(rng):
    with pytest.raises(ValueError, match="same n examples"):
        weight_analysis.linear_cka(rng.standard_normal((10, 3)), rng.standard_normal((11, 3)))


@pytest.mark.slow
def test_tradeoff_sweeps_as_a_study_with_intervals_over_seeds(tmp_path):
    table = tradeoff.run("smoke", out_dir=str(tmp_path))
    rows = table.set_index(["method", "budget"])
    assert set(table.method) == {"surm-circulant", "lora", "linear-probe"}
    assert (rows.loc["surm-circulant"].seeds == 2).all() and rows.loc[("linear-probe", "")].seeds == 2
    assert rows.loc[("surm-circulant", "4096")].ci_low <= rows.loc[("surm-circulant", "4096")]["mean"]
    assert rows.loc["surm-circulant"].p_value.notna().all() and rows.loc["lora"].vs_baseline.isna().all()
    assert table.on_frontier.any() and (tmp_path / "studies" / "tiny-bert-rotten-tomatoes" / "summary.csv").exists()
    assert len(tradeoff.figures(table)) == 2


def test_every_training_option_of_an_image_grid_reaches_its_cells():
    """A Grid field that is a training option must arrive in each cell's TrainConfig (eval_every once did not)."""
    from dataclasses import fields, replace

    from surmlab.train_config import TrainConfig

    p = replace(low_resource.PROFILES["cpu"], eval_every=7, epochs=3, batch_size=8, max_steps=9, max_eval=5)
    spec = p.study("fashion-mnist", "1shot", shots_per_class=1)
    config = spec.train_config(spec.cells()[0], "runs")
    shared = {f.name for f in fields(p)} & {f.name for f in fields(TrainConfig)}
    assert {"eval_every", "epochs", "batch_size", "max_steps", "max_eval", "image_size"} <= shared
    for name in shared - {"backbone"}:
        assert config[name] == getattr(p, name), name
    assert config["shots_per_class"] == 1 and config["backbone"] == p.backbone


# -- the result in words (each experiment's summarize), on the committed records of real cpu runs ----------

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu"


def record(name: str) -> pd.DataFrame:
    return pd.DataFrame(json.loads((RECORDS / f"{name}.json").read_text())["rows"])


def test_every_experiment_says_its_result_in_words():
    assert all(callable(getattr(get(name), "summarize", None)) for name in names())


def test_study_words_name_each_tasks_winner_and_the_paired_differences():
    table = record("glue_adapters")
    text = glue_adapters.summarize(table)
    for task, part in table.groupby("task"):
        top = part.loc[part["mean"].idxmax()]  # the oracle: the highest mean, found here
        assert f"**{task}**: {top.method} has the highest mean {top.metric}, {top['mean']:.3f}" in text
    real = table[table.distinguishable.fillna(False).astype(bool)]
    assert f"Of {table.vs_baseline.notna().sum()} paired comparisons with lora, {len(real)} are distinguishable" in text
    for row in real.itertuples():
        side = "above" if row.vs_baseline > 0 else "below"
        assert f"{row.method} {side} it by {abs(row.vs_baseline):.3f} (interval [{row.vs_low:+.3f}" in text
    assert "surm-circulant above it by 0.091" in text and "surm-circulant below it by 0.006" in text  # the README's
    # the same record with the STS-B means of the Houlsby and SURM adapters swapped: the words follow the numbers
    stsb = table.task == "glue/stsb"
    a, s = stsb & (table.method == "houlsby"), stsb & (table.method == "surm-circulant")
    swapped = table.copy()
    swapped.loc[a, "mean"], swapped.loc[s, "mean"] = table.loc[s, "mean"].item(), table.loc[a, "mean"].item()
    assert "**glue/stsb**: surm-circulant has the highest mean spearman, 0.810" in glue_adapters.summarize(swapped)


def test_study_words_say_when_nothing_is_distinguishable():
    table = record("low_resource")
    text = low_resource.summarize(table)
    assert "**1shot**: surm-toeplitz has the highest mean accuracy, 0.428" in text
    assert "linear-probe below it by 0.113 (interval [-0.153, -0.073], p = 0.01)" in text
    one_shot = table[(table.setting == "1shot") & (table.method != "linear-probe")]
    text = low_resource.summarize(one_shot)
    assert "none is distinguishable from lora (surm-toeplitz and surm-circulant)" in text


def test_tour_words_follow_the_fine_tune_and_the_fast_product_check():
    table = record("tour")
    text = tour.summarize(table)
    assert "surm-circulant (9,216 parameters) beats LoRA (9,216) in accuracy: 0.768 against 0.761 (+0.007)" in text
    assert text.startswith("Every family's fast product equals") and "7 of 10 families are full rank" in text
    swapped, tuned = table.copy(), table.section == "finetune"
    swapped.loc[tuned, "value"] = table.loc[tuned, "value"].to_numpy()[::-1]
    swapped.loc[0, "value"] = 0.5  # a fast product that is wrong
    text = tour.summarize(swapped)
    assert "trails LoRA (9,216) in accuracy: 0.761 against 0.768 (-0.007)" in text
    assert (text.startswith("Not every family's fast product") and "0.5" in text) or "5e-01" in text


def test_approximation_words_name_the_best_fit_per_target():
    table = record("approximation")
    text = approximation.summarize(table)
    psd = table[table.target == "psd"].groupby("family")["error"].mean()
    assert f"on psd targets {psd.idxmin()} fits best ({psd.min():.3f}, low rank {psd['lowrank']:.3f})" in text
    assert "in 63% of 410 points" in text and "On weight_update targets low rank fits best (0.669" in text
    relabelled = table.assign(family=table.family.replace({"lowrank": "circulant_chain", "circulant_chain": "lowrank"}))
    assert "on psd targets low rank fits best (0.584" in approximation.summarize(relabelled)


def test_pinwheel_speed_and_weight_words_quote_their_tables():
    text = pinwheel.summarize(record("pinwheel"))
    assert (
        "frozen, symmetric_toeplitz ends at the lowest mean training loss, 0.0018 (2.5x below low rank's 0.0045)"
        in text
    )
    text = speed.summarize(record("speed"))
    assert "cost 1.03x-1.08x LoRA's time (surm-circulant fastest, surm-ldr slowest)" in text
    assert "Full fine-tuning: 1.36x LoRA's step, 1.23x its memory" in text
    table = record("weight_analysis")
    text = weight_analysis.summarize(table)
    assert "The highest accuracy of the budgeted methods is lora's, 0.800 (full fine-tuning: 0.810)" in text
    swapped = table.assign(method=table.method.replace({"lora": "surm-circulant", "surm-circulant": "lora"}))
    assert "is surm-circulant's, 0.800" in weight_analysis.summarize(swapped)


@pytest.mark.parametrize("family", FAMILIES)
def test_approximation_settings_span_low_ranks_counts(family):
    """Every family is fitted over the range of counts low rank is (2 n r for r = 1 ... n/4), not only at its
    smallest settings (the sparse spectrum at 1-5 coefficients once): its largest count reaches at least
    half of low rank's largest, none exceeds n^2 / 2, and the counts rise."""
    n = 64
    counts = [FAMILIES[family].num_parameters(n, n, **h) for h in approximation.settings(family, n, 5)]
    largest_lowrank = 2 * n * (n // 4)
    assert counts == sorted(set(counts)) and len(counts) >= 3
    assert largest_lowrank / 2 <= counts[-1] <= n * n // 2
