"""Write notebooks/<name>.ipynb for every experiment: thin, consistent and without outputs.

Run ``python notebooks/make_notebooks.py`` after changing an experiment's parameters (its ``Params``
fields) or its docstring. Figures live in each experiment module's ``figures(table, out_dir)``, which the
last cell shows (``surmlab.display.show``: each plotly figure with a static PNG beside it): the notebooks
stay thin (parameters, the values used, one ``run`` call, figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from surmlab.experiments import common, get, names  # noqa: E402

SETUP = """from surmlab.display import parameters, provenance, quiet, show

quiet()  # before the lab's imports: no progress-widget warnings, floats as 0.768 rather than 7.68e-01
from surmlab.experiments import common
from surmlab.experiments import {name} as experiment

knobs = dict({knobs})
provenance()
parameters(common.resolve(experiment.PROFILES, profile, knobs), experiment.PROFILES[profile])"""

RUN = """table = experiment.run(profile=profile, out_dir=out_dir, **knobs)
table.head(20)"""

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
        new_code_cell(FIGURES),
    ]
    for index, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell.id = f"{name}-{index}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    for name in names():
        nbformat.write(notebook(name), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
