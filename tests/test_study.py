"""Studies: statistics against closed forms, the spec's checks, and a small grid end to end."""

import math

import pytest

from surmlab.budget import BudgetError
from surmlab.study import StudySpec, estimate, paired, study
from surmlab.study.runner import check_budgets

# -- statistics --------------------------------------------------------------------------------------


def test_estimate_is_the_t_interval():
    """Mean 0.72, sd 0.02 over three seeds; t(0.975, df=2) = 4.302652729911275 from a t table."""
    est = estimate([0.70, 0.72, 0.74])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert est.mean == pytest.approx(0.72)
    assert est.std == pytest.approx(0.02)
    assert (est.low, est.high) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    one = estimate([0.5])
    assert (one.mean, one.low, one.high, one.n) == (0.5, 0.5, 0.5, 1)


def test_paired_comparison_matches_the_closed_form_for_two_degrees_of_freedom():
    """With df = 2 the t distribution's cdf is 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - |t| / sqrt(2 + t^2)."""
    a = {0: 0.80, 1: 0.78, 2: 0.83, 9: 0.5}  # seed 9 has no partner and is left out
    b = {0: 0.75, 1: 0.76, 2: 0.77}
    d = [0.05, 0.02, 0.06]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    result = paired(a, b)
    assert result.difference.mean == pytest.approx(mean)
    assert result.difference.n == 3
    assert result.p_value == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert result.distinguishable == (result.difference.low > 0)
    noisy = paired({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.75, 1: 0.8, 2: 0.8})
    assert not noisy.distinguishable and noisy.difference.low < 0 < noisy.difference.high


# -- the spec ----------------------------------------------------------------------------------------------

BASE = {
    "name": "s",
    "backbone": "tiny-bert",
    "task": "rotten-tomatoes",
    "methods": ["surm-circulant", "lora", "linear-probe"],
    "budgets": ["1024", "2k"],
    "seeds": [0, 1],
}


def test_the_grid_has_every_cell_once():
    spec = StudySpec.from_dict(BASE)
    keys = [c.key for c in spec.cells()]
    # 2 budgeted methods x 2 budgets x 2 seeds, and the probe (no size knob) once per seed
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2
    assert "linear-probe-fixed-seed1" in keys and "lora-2k-seed0" in keys
    # seeds outermost: a study stopped part-way has compared every method on the seeds it finished
    seeds = [c.seed for c in spec.cells()]
    assert seeds == sorted(seeds)
    config = spec.train_config(spec.cells()[0], "runs")
    assert (config["method"], config["budget"], config["seed"], config["name"]) == (
        "surm-circulant", "1024", 0, "surm-circulant-1024-seed0",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["surm-circulant", "nope"]}, "unknown method 'nope'"),
        ({"seeds": []}, "seed list is empty"),
        ({"seeds": [0, 0]}, "distinct whole numbers"),
        ({"baseline": "adapter"}, "baseline 'adapter' is not among the methods"),
        ({"train": {"max_step": 3}}, r"unknown training options \['max_step'\]"),
        ({"train": {"seed": 3}}, r"unknown training options \['seed'\]"),
        ({"budgets": ["lots"]}, "cannot read budget 'lots'"),
        ({"colour": "red"}, r"unknown study spec keys \['colour'\]"),
    ],
)
def test_bad_specs_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        StudySpec.from_dict({**BASE, **change})


def test_an_infeasible_budget_is_refused_before_training(tmp_path):
    spec = StudySpec.from_dict({**BASE, "budgets": ["10"]})
    with pytest.raises(BudgetError, match="surm-circulant at budget 10: a budget of 10 is infeasible"):
        check_budgets(spec)
    with pytest.raises(BudgetError):
        study(spec, root=tmp_path, progress=False)
    assert not (tmp_path / "s").exists()  # nothing claimed, nothing trained


def test_a_folder_of_another_spec_is_refused(tmp_path):
    StudySpec.from_dict(BASE).claim(tmp_path / "s")
    StudySpec.from_dict(BASE).claim(tmp_path / "s")  # the same spec: fine
    with pytest.raises(ValueError, match="different spec \\(differs in seeds\\)"):
        StudySpec.from_dict({**BASE, "seeds": [0, 1, 2]}).claim(tmp_path / "s")


# -- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_small_study_runs_in_two_workers_and_resumes_without_retraining(tmp_path):
    spec = StudySpec.from_dict(
        {**BASE, "methods": ["surm-circulant", "lora"], "budgets": ["2k"], "seeds": [0, 1, 2],
         "train": {"max_steps": 2, "max_train": 64, "max_eval": 32, "max_length": 16}}
    )  # fmt: skip
    result = study(spec, root=tmp_path, workers=2, progress=False)
    assert list(result.cells.status) == ["completed"] * 6
    runs = sorted(p.name for p in (tmp_path / "s" / "runs").iterdir())
    assert len(runs) == 6
    row = result.summary.set_index("method").loc["surm-circulant"]
    assert row.seeds == 3 and row.ci_low <= row["mean"] <= row.ci_high
    assert not math.isnan(row.p_value) and row.verdict
    again = study(spec, root=tmp_path, workers=2, progress=False)  # every cell done: nothing retrains
    assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir()) == runs
    assert again.summary["mean"].tolist() == result.summary["mean"].tolist()
    assert (tmp_path / "s" / "summary.csv").exists() and (tmp_path / "s" / "cells.csv").exists()
    # a cell whose trainer died is resumed in its own run folder, not started afresh
    from surmlab.runs import RunDir

    cut = RunDir(tmp_path / "s" / result.cells.run[0])
    cut.update_summary(status="running", pid=2**22 + 1, host=cut.summary().host)  # no such process
    resumed = study(spec, root=tmp_path, workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir()) == runs
    assert cut.summary().status == "completed" and list(resumed.cells.status) == ["completed"] * 6
    assert resumed.cells.final.tolist() == result.cells.final.tolist()


@pytest.mark.slow
def test_the_same_study_runs_on_a_local_ray_instance_with_two_cpu_workers(tmp_path):
    import ray  # the ray extra, which make setup installs

    spec = StudySpec.from_dict(
        {**BASE, "methods": ["lora", "linear-probe"], "budgets": ["2k"], "seeds": [0, 1],
         "train": {"max_steps": 2, "max_train": 64, "max_eval": 32, "max_length": 16}}
    )  # fmt: skip
    try:
        result = study(spec, root=tmp_path, workers=2, progress=False, ray="local")
        assert ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert list(result.cells.status) == ["completed"] * 4
    assert result.summary.set_index("method").loc["lora"].seeds == 2


def test_cli_study_from_a_yaml_spec_and_bad_flags_in_one_line(tmp_path, capsys):
    from surmlab.cli import main

    spec = tmp_path / "study.yaml"
    spec.write_text(
        "name: cli\nbackbone: tiny-bert\ntask: rotten-tomatoes\nmethods: [lora, linear-probe]\nbudgets: [2k]\n"
        "seeds: [0, 1]\ntrain: {max_steps: 1, max_train: 32, max_eval: 16, max_length: 8}\n"
    )
    assert main(["study", str(spec), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lora" in out and "linear-probe" in out and "summary.csv" in out
    assert len(list((tmp_path / "cli" / "runs").iterdir())) == 4
    assert main(["study", "--name", "x", "--methods", "lora", "--budgets", "2k", "--seeds", ""]) == 2
    assert "seed list is empty" in capsys.readouterr().err
