"""Write notebooks/<name>.ipynb for every experiment (thin, without outputs) and, with ``--lessons``, build
and execute each lesson source notebooks/lessons/NN_*.py (jupytext percent format) into its .ipynb.

Run ``python notebooks/make_notebooks.py`` after changing an experiment's parameters (its ``Params``
fields) or its docstring. Figures live in each experiment module's ``figures(table, out_dir)``, which the
last cell shows (``surmlab.display.show``: each plotly figure with a static PNG beside it): the notebooks
stay thin (parameters, the values used, one ``run`` call, the result in words from the experiment's
``summarize(table)``, figures).

The lessons are committed executed, so that they read on GitHub before anyone runs them: run
``python notebooks/make_notebooks.py --lessons`` after editing one (a few minutes on a CPU). The stored
outputs carry every figure as a PNG too, no widget state and no timing metadata: the build sets
``SURMLAB_STATIC=1``, so a lesson's sliders (``surmlab.display.explore``) show their default values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
LESSONS = HERE / "lessons"
sys.path.insert(0, str(HERE.parent))

from surmlab.display import STATIC_ENV  # noqa: E402
from surmlab.experiments import common, get, names  # noqa: E402

SETUP = """from surmlab.display import parameters, provenance, quiet, say, show

quiet()  # before the lab's imports: no progress-widget warnings, floats as 0.768 rather than 7.68e-01
from surmlab.experiments import common
from surmlab.experiments import {name} as experiment

knobs = dict({knobs})
provenance()
parameters(common.resolve(experiment.PROFILES, profile, knobs), experiment.PROFILES[profile])"""

RUN = """table = experiment.run(profile=profile, out_dir=out_dir, **knobs)
table.head(20)"""

SUMMARY = """say(experiment.summarize(table))  # what the numbers above show, in words"""

FIGURES = """for figure in experiment.figures(table, out_dir):
    show(figure)  # interactive where plotly's extension runs, a PNG everywhere else"""


def notebook(name: str) -> nbformat.NotebookNode:
    module = get(name)
    knobs = common.parameter_names(module.PROFILES["smoke"])
    doc = (module.__doc__ or "").strip()
    params = "\n".join(
        ['profile = "smoke"  # smoke | cpu | paper: the defaults of every None below', "out_dir = None",
         *[f"{k} = None" for k in knobs]]
    )  # fmt: skip
    cells = [
        new_markdown_cell(
            f"# `{name}`\n\n{doc}\n\nIn batch: `surmlab reproduce {name} -p key value --profile cpu`. "
            "The cell after the parameters prints the commit and versions and lists every value this run uses."
        ),
        new_code_cell(params, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP.format(name=name, knobs=", ".join(f"{k}={k}" for k in knobs))),
        new_code_cell(RUN),
        new_code_cell(SUMMARY),
        new_code_cell(FIGURES),
    ]
    for index, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell.id = f"{name}-{index}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def lesson_sources() -> list[Path]:
    """The lessons, in order: ``notebooks/lessons/NN_<topic>.py``."""
    return sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def lesson_notebook(source: Path) -> nbformat.NotebookNode:
    """A lesson source as a notebook without outputs, with stable cell ids."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata.pop("jupytext", None)
    for index, cell in enumerate(nb.cells):
        cell.id = f"{source.stem}-{index}"
    return nb


def execute_lesson(
    source: Path, parameters: dict[str, Any] | None = None, timeout: int = 3600
) -> nbformat.NotebookNode:
    """Run a lesson top to bottom in a fresh kernel started in ``notebooks/lessons`` (where its ``checks``
    module is); ``parameters`` override its parameters cell, as ``surmlab reproduce -p`` does. The result
    keeps outputs only: no papermill timings, no widget state (GitHub refuses notebooks whose
    ``metadata.widgets`` lacks a state)."""
    import papermill

    sys.path.insert(0, str(HERE.parent))
    from surmlab.reproduce import prefer_this_environment_kernel

    prefer_this_environment_kernel()
    os.environ[STATIC_ENV] = "1"  # the kernel inherits it: the stored lesson shows values, not blank sliders
    try:
        nb = papermill.execute_notebook(
            lesson_notebook(source), None, parameters=parameters or {}, kernel_name="python3", cwd=str(LESSONS),
            progress_bar=False, execution_timeout=timeout,
        )  # fmt: skip
    finally:
        os.environ.pop(STATIC_ENV, None)
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
    return nb


def build_lessons() -> None:
    for source in lesson_sources():
        target = source.with_suffix(".ipynb")
        nbformat.write(execute_lesson(source), target)
        print(f"wrote notebooks/lessons/{target.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", action="store_true", help="also execute every lesson into its .ipynb")
    args = parser.parse_args()
    for name in names():
        nbformat.write(notebook(name), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")
    if args.lessons:
        build_lessons()


if __name__ == "__main__":
    main()
