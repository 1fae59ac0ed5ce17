"""Every notebook runs top to bottom through papermill in the smoke profile, and is committed clean."""

import importlib.util
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from notebook_checks import report_problems

from surmlab.experiments import get, names
from surmlab.reproduce import main, reproduce

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_experiment_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(names())


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "profile" in tagged[0].source


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_notebook_runs_in_the_smoke_profile(tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a notebook writes by default stays in tmp
    record = reproduce(name, {}, "smoke", tmp_path)
    assert record["status"] == "ok", record.get("error")
    folder = tmp_path / name
    executed = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    assert report_problems(executed) == []  # every figure also as a PNG; no errors, warnings, stderr or bars
    figures = [o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert figures, "every experiment shows at least one figure"
    result = json.loads((folder / f"{name}.json").read_text())
    said = [o for c in executed.cells for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    paragraph = get(name).summarize(pd.DataFrame(result["rows"]))  # the result in words, from its record
    assert len(said) == 1 and said[0]["data"]["text/markdown"] == paragraph
    assert result["rows"] and result["profile"] == "smoke" and result["command"].startswith("surmlab reproduce")
    assert (folder / f"{name}.csv").stat().st_size > 0


def test_the_report_check_finds_each_problem():
    """The checker the executed notebooks pass must be able to fail: one cell per kind of problem."""
    figure = {"application/vnd.plotly.v1+json": {"data": [], "layout": {}}, "text/plain": "<figure>"}
    cells = [
        new_code_cell(outputs=[new_output("display_data", data=figure)]),
        new_code_cell(outputs=[new_output("stream", name="stderr", text="TqdmWarning: IProgress not found")]),
        new_code_cell(outputs=[new_output("stream", name="stdout", text="UserWarning: something")]),
        new_code_cell(outputs=[new_output("error", ename="ValueError", evalue="bad", traceback=[])]),
        new_code_cell(outputs=[new_output("display_data", data={"image/png": "iVBO", **figure})]),  # fine
    ]
    problems = report_problems(new_notebook(cells=cells))
    expected = ["cell 0: a plotly figure without", "cell 1: stderr", "cell 2: a warning on stdout", "cell 3: ValueE"]
    assert len(problems) == len(expected), problems
    assert all(p.startswith(e) for p, e in zip(problems, expected, strict=True)), problems


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("approximation", {"nonsense": 1}, "approximation: unknown parameter.s. nonsense; this experiment takes: "),
        ("approximation", {"size": "abc"}, "approximation: size must be an int, got 'abc'"),
        ("approximation", {"size": 48}, "approximation: size must be a power of two"),
        ("approximation", {"families": "circulant,foo"}, "approximation: unknown family 'foo'; known: "),
        ("pinwheel", {"seeds": "0,0"}, "pinwheel: seeds must not repeat"),
        ("pinwheel", {"seeds": -1}, "pinwheel: seeds must be a non-empty list"),
        ("tour", {"budget": 10**7}, "tour: a budget of 10,000,000 is infeasible"),
    ],
)
def test_a_bad_parameter_stops_before_a_kernel_starts(tmp_path, name, params, message):
    """Name, type and value are checked in this process: one line naming the value, and no output folder
    (reproduce makes it just before papermill starts the kernel)."""
    with pytest.raises(ValueError, match=message) as err:
        reproduce(name, params, "smoke", tmp_path)
    assert "\n" not in str(err.value) and not (tmp_path / name).exists()


def test_reproduce_all_refuses_a_key_no_experiment_takes(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--all", "-p", "sedes", "0,1", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "no experiment takes parameter(s) sedes; known: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_seeds_is_a_list_of_seeds_everywhere():
    from surmlab.experiments import get, names

    for name in names():
        defaults = get(name).PROFILES["smoke"]
        if hasattr(defaults, "seeds"):
            assert isinstance(defaults.seeds, tuple), name
    assert get("pinwheel").run.params("smoke", seeds="3,5").seeds == (3, 5)


@pytest.fixture(scope="module")
def maker():
    """notebooks/make_notebooks.py, which is a script and not part of the package."""
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", names())
def test_regenerating_a_notebook_rewrites_nothing(maker, name):
    """Cell ids are stable and the committed notebook is what make_notebooks.py writes today."""
    assert nbformat.writes(maker.notebook(name)) + "\n" == (NOTEBOOKS / f"{name}.ipynb").read_text()


def test_a_study_notebook_run_again_with_a_changed_setting_writes_a_new_study(tmp_path):
    from dataclasses import replace

    from surmlab.experiments.common import own_folder
    from surmlab.study import StudySpec

    spec = StudySpec(
        name="rt", backbone="tiny-bert", task="rotten-tomatoes", methods=("lora",), budgets=("2048",), seeds=(0,),
        train={"max_steps": 2},
    )  # fmt: skip
    assert own_folder(spec, tmp_path) == spec  # nothing there yet
    spec.claim(tmp_path / "rt")
    assert own_folder(spec, tmp_path) == spec  # the same settings continue their study
    changed = replace(spec, train={"max_steps": 3})
    with pytest.raises(ValueError, match="different spec"):
        changed.claim(tmp_path / "rt")  # what stopped the notebook before
    renamed = own_folder(changed, tmp_path)
    assert renamed.name.startswith("rt-") and replace(renamed, name="rt") == changed
    renamed.claim(tmp_path / renamed.name)
    assert own_folder(changed, tmp_path) == renamed  # run again with that setting: its own study continues
