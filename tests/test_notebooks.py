"""Every notebook runs top to bottom through papermill in the smoke profile, and is committed clean."""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from surmlab.experiments import names
from surmlab.reproduce import reproduce

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
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    result = json.loads((folder / f"{name}.json").read_text())
    assert result["rows"] and result["profile"] == "smoke" and result["command"].startswith("surmlab reproduce")
    assert (folder / f"{name}.csv").stat().st_size > 0


def test_a_bad_parameter_stops_before_a_kernel_starts(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter"):
        reproduce("approximation", {"nonsense": 1}, "smoke", tmp_path)


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
