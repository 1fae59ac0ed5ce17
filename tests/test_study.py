"""Studies: statistics against closed forms, the spec's checks, and a small grid end to end."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil
import pytest
import scipy.stats

from surmlab.budget import BudgetError
from surmlab.study import StudySpec, estimate, markdown, paired, scores, study
from surmlab.study.runner import check_budgets
from surmlab.study.table import summarize

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


def test_methods_at_fixed_hyper_parameters_run_once_per_seed_and_are_checked():
    spec = StudySpec.from_dict(
        {**BASE, "methods": ["surm-circulant", "adapter", "lora"], "budgets": ["2k"], "mode": "adapter",
         "hyper": {"surm-circulant": {}, "adapter": {"bottleneck": 4}}}
    )  # fmt: skip
    keys = [c.key for c in spec.cells()]
    assert keys == [f"{m}-{b}-seed{s}" for s in (0, 1) for m, b in
                    (("surm-circulant", "fixed"), ("adapter", "fixed"), ("lora", "2k"))]  # fmt: skip
    configs = {c.method: spec.train_config(c, "runs") for c in spec.cells()}
    assert configs["adapter"]["hyper"] == {"bottleneck": 4} and configs["adapter"]["budget"] is None
    assert configs["surm-circulant"]["mode"] == "adapter" and configs["lora"]["mode"] == "lora"
    assert configs["lora"]["hyper"] == {} and configs["lora"]["budget"] == "2k"
    check_budgets(spec)  # every setting prepares
    with pytest.raises(BudgetError, match=r"adapter at hyper \{\}: adapter needs --budget"):
        check_budgets(
            StudySpec.from_dict({**BASE, "methods": ["adapter"], "baseline": "adapter", "hyper": {"adapter": {}}})
        )
    with pytest.raises(ValueError, match=r"hyper names \['bitfit'\], which are not among the methods"):
        StudySpec.from_dict({**BASE, "hyper": {"bitfit": {}}})
    with pytest.raises(ValueError, match="houlsby takes hyper-parameters bottleneck"):  # "adapter" is its old name
        StudySpec.from_dict({**BASE, "methods": ["adapter", "lora"], "hyper": {"adapter": {"rank": 2}}})


def _cells(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"method": m, "budget": b, "lr": "", "seed": s, "status": "completed", "final": v, "method_params": 1,
          "trainable_params": 2, "targets": "q", "metric": "accuracy"} for m, b, s, v in rows]
    )  # fmt: skip


def test_a_method_without_a_budget_is_compared_with_a_baseline_at_one_budget():
    """The paired t-test of scipy is the oracle; at two baseline budgets there is nothing to pair with."""
    probe, lora = [0.61, 0.65, 0.60], [0.70, 0.71, 0.69]
    rows = [("linear-probe", "", s, v) for s, v in enumerate(probe)] + [
        ("lora", "2k", s, v) for s, v in enumerate(lora)
    ]
    table = summarize(StudySpec.from_dict(BASE), _cells(rows)).set_index("method")
    expected = scipy.stats.ttest_rel(probe, lora)
    assert table.loc["linear-probe", "vs_baseline"] == pytest.approx(sum(probe) / 3 - sum(lora) / 3)
    assert table.loc["linear-probe", "p_value"] == pytest.approx(expected.pvalue)
    assert bool(table.loc["linear-probe", "distinguishable"]) == (expected.pvalue < 0.05)
    two = summarize(StudySpec.from_dict(BASE), _cells(rows + [("lora", "1024", s, 0.7) for s in range(3)]))
    assert two.set_index("method").loc["linear-probe"].get("vs_baseline") is None or math.isnan(
        two.set_index("method").loc["linear-probe", "vs_baseline"]
    )


def test_the_tables_show_mean_and_half_interval():
    rows = [("surm-circulant", "2k", s, v) for s, v in enumerate([0.70, 0.72, 0.74])]
    rows += [("lora", "2k", s, v) for s, v in enumerate([0.69, 0.70, 0.71])]
    summary = summarize(StudySpec.from_dict(BASE), _cells(rows)).assign(task="rt")
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert scores(summary).loc[("surm-circulant", "2k"), "rt"] == f"0.720 ± {half:.3f}"
    text = markdown(summary)
    assert f"| surm-circulant | 2k | 1 | 3 | 0.720 ± {half:.3f} | +0.020 [" in text
    assert "| lora | 2k | 1 | 3 | 0.700 ± " in text and text.count("\n") == 3


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
    older = StudySpec.from_dict(BASE).to_dict()
    del older["hyper"]  # a folder written before the spec had ``hyper`` is the same study
    (tmp_path / "s" / "spec.json").write_text(json.dumps(older))
    StudySpec.from_dict(BASE).claim(tmp_path / "s")


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
def test_a_worker_killed_outright_fails_its_cell_and_the_study_goes_on(tmp_path):
    """kill -9 of a worker process mid-cell: that cell is recorded as failed with the reason, the other
    cells complete on a fresh pool, and the next invocation resumes the killed cell to completion."""
    spec = StudySpec.from_dict(
        {**BASE, "methods": ["lora"], "budgets": ["2k"], "seeds": [0, 1, 2],
         "train": {"max_steps": 400, "epochs": 100, "max_train": 64, "max_eval": 16, "max_length": 16,
                   "checkpoint_every": 5}}
    )  # fmt: skip
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if list((tmp_path / "s" / "runs").glob("*/checkpoint")):  # a cell is under way
                workers = psutil.Process().children(recursive=True)
                for proc in workers:
                    if "spawn" in " ".join(proc.cmdline()):
                        proc.kill()
                        killed.append(proc.pid)
                        return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    result = study(spec, root=tmp_path, workers=2, progress=False)
    killer.join()
    assert killed
    failed = result.cells[result.cells.status == "failed"]
    assert len(failed) >= 1 and failed.reason.str.contains("worker process died").all()
    assert (result.cells.status == "completed").sum() >= 1  # the cells after the kill ran on a new pool
    again = study(spec, root=tmp_path, workers=1, progress=False)
    assert list(again.cells.status) == ["completed"] * 3


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
    assert main(["study", "--name", "x", "--methods", "adapter", "--hyper", "[64]", "--baseline", "adapter"]) == 2
    assert "--hyper '[64]' must be a JSON object" in capsys.readouterr().err


# -- workers and parents, one process per cell ----------------------------------------------------------

LONG_CELL = {"max_steps": 3000, "epochs": 3000, "max_train": 64, "max_eval": 16, "max_length": 16}


def _study_process(tmp_path, spec: dict, workers: int) -> subprocess.Popen:
    """``surmlab study`` in its own process (and process group, so a test can clean up after it)."""
    file = tmp_path / f"{spec['name']}.json"
    file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "surmlab", "study", str(file), "--root", str(tmp_path), "--workers", str(workers)]
    with open(tmp_path / f"{spec['name']}.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(condition, what: str, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _logged(run_dirs) -> bool:
    return any((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size for run in run_dirs)


@pytest.mark.slow
def test_workers_die_with_a_study_killed_outright(tmp_path):
    """kill -9 of the study process with --workers 2: its worker processes (which would otherwise train
    on, ~1 GB each on a real backbone) die with it, and their cells are free to resume."""
    spec = {**BASE, "name": "orphans", "methods": ["lora"], "budgets": ["2k"], "seeds": [0, 1], "train": LONG_CELL}
    parent = _study_process(tmp_path, spec, workers=2)
    try:
        runs = tmp_path / "orphans" / "runs"
        _wait(lambda: len([r for r in runs.glob("*") if _logged([r])]) == 2, "both cells to train")
        workers = [p for p in psutil.Process(parent.pid).children() if "spawn" in " ".join(p.cmdline())]
        assert len(workers) == 2
        parent.kill()
        parent.wait()
        from surmlab.study.guard import cell_holder
        from surmlab.study.runner import cell_state

        keys = [cell.key for cell in StudySpec.from_dict(spec).cells()]
        folder = tmp_path / "orphans"

        def dead() -> bool:  # and their last threads too: a process's locks go when its last thread exits
            return all(_gone(w.pid) for w in workers) and all(cell_holder(folder, k) is None for k in keys)

        try:
            _wait(dead, "the workers to die with their parent", timeout=30)
        except AssertionError:
            states = {w.pid: "gone" if _gone(w.pid) else w.status() for w in workers}
            raise AssertionError(f"workers {states}, locks {[cell_holder(folder, k) for k in keys]}") from None
        assert [cell_state(runs, key)[0] for key in keys] == ["interrupted"] * 2  # the next study resumes them
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_cell_a_live_study_trains_is_not_started_again(tmp_path):
    """A second `surmlab study` of the same folder while the first trains a cell leaves that cell alone
    (no second run folder, no doubled steps) and says who holds it; a worker that reaches a held cell
    (the probe raced) gives it up too."""
    from surmlab.study.runner import _work

    spec = {**BASE, "name": "twice", "methods": ["lora"], "budgets": ["2k"], "seeds": [0], "train": LONG_CELL}
    first = _study_process(tmp_path, spec, workers=1)
    runs = tmp_path / "twice" / "runs"
    try:
        _wait(lambda: _logged(runs.glob("*")), "the first study to train its cell")
        second = study(StudySpec.from_dict(spec), root=tmp_path, workers=2, progress=False)
        assert list(second.cells.status) == ["running"]
        assert f"being trained by another process (pid {first.pid} " in second.cells.reason[0]
        key = StudySpec.from_dict(spec).cells()[0].key
        config = StudySpec.from_dict(spec).train_config(StudySpec.from_dict(spec).cells()[0], runs)
        raced = _work(config, str(tmp_path / "twice"), None, None)
        assert raced["status"] == "running" and f"cell {key} is being trained by another process" in raced["reason"]
        assert len(list(runs.iterdir())) == 1
        (next(runs.iterdir()) / "STOP").touch()  # end the first study's cell
        assert first.wait(timeout=120) is not None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    (run,) = runs.iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == sorted(set(steps)) and len(steps) > 1  # one trainer: every step logged once


def test_a_ray_that_does_not_start_is_one_line_naming_the_alternative():
    """The error Ray 2.x raises on a loaded machine becomes one line that says what failed and names
    --workers; the options a local Ray starts with leave the dashboard off."""
    from surmlab.study.raystart import LEAN_LOCAL, ray_start_failed

    raised = Exception(
        "The current node timed out during startup. This could happen because some of the raylet failed to "
        "startup or the GCS has become overloaded."
    )
    message = str(ray_start_failed("local", 2, raised))
    assert "\n" not in message and message.startswith("Ray did not start on this machine (tried 2 times")
    assert "timed out during startup" in message and message.endswith("run the study without Ray instead: --workers 2")
    remote = str(ray_start_failed("10.0.0.1:6379", 0, ConnectionError("no GCS at 10.0.0.1:6379\nretrying")))
    assert remote == (
        "Ray at '10.0.0.1:6379' could not be reached: no GCS at 10.0.0.1:6379; "
        "run the study without Ray instead: --workers 1"
    )
    assert LEAN_LOCAL["include_dashboard"] is False


def test_unreadable_specs_bad_values_and_failed_cells_are_one_line(tmp_path, capsys):
    """A malformed or python-tagged YAML spec (the tag never runs) and bad training values are one line,
    exit 2, before a study folder exists; a study whose cells fail exits 1 with a line saying why."""
    from surmlab.cli import main

    marker = tmp_path / "ran"
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nmethods: [lora]\n')
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: s\nmethods: [lora\nseeds: [0]\n")
    not_json = tmp_path / "spec.json"
    not_json.write_text('{"name": "s",}')
    for spec, says in (
        (tagged, f"{tagged} is not a valid YAML study spec at line 1, column 7: could not determine a constructor"),
        (broken, f"{broken} is not a valid YAML study spec at line 3"),
        (not_json, f"{not_json} is not a valid JSON study spec at line 1, column 14: Expecting property name"),
    ):
        assert main(["study", str(spec), "--root", str(tmp_path)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"surmlab study: error: {says}"), line
    assert not marker.exists()

    grid = "name: bad\nbackbone: tiny-bert\nmethods: [lora]\nbudgets: [2k]\nseeds: [0]\n"
    values = tmp_path / "values.yaml"
    values.write_text(grid)
    assert main(["study", str(values), "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("surmlab study: error: the study spec lacks ['task']; required: [")
    values.write_text(grid + "task: rotten-tomatoes\ntrain: {max_steps: 0, max_train: 16}\n")
    assert main(["study", str(values), "--root", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "surmlab study: error: study bad: max_steps must be a whole number of at least 1, got 0"
    assert not (tmp_path / "bad").exists()  # refused before the folder was claimed

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        f"name: failing\nbackbone: tiny-bert\ntask: 'csv:{tmp_path}/missing.csv'\nmethods: [lora]\nbudgets: [2k]\n"
        "seeds: [0, 1]\ntrain: {max_steps: 1}\n"
    )
    assert main(["study", str(failing), "--root", str(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("2 of 2 cells did not complete (2 failed); first: ") and "missing.csv" in last
    assert last.endswith(f"all reasons in {tmp_path / 'failing' / 'cells.csv'}")
