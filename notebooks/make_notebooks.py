"""Write notebooks/<name>.ipynb for every experiment: thin, consistent and without outputs.

Run ``python notebooks/make_notebooks.py`` after changing an experiment's parameters (its ``Params``
fields) or its docstring. Figures live in each experiment module's ``figures(table, out_dir)``, which the
last cell calls: the notebooks stay thin (parameters, one ``run`` call, figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from surmlab.experiments import common, get, names  # noqa: E402

FIGURES = """from IPython.display import display

for figure in experiment.figures(table, out_dir):
    display(figure)"""


def notebook(name: str) -> nbformat.NotebookNode:
    module = get(name)
    knobs = common.parameter_names(module.PROFILES["smoke"])
    doc = (module.__doc__ or "").strip()
    params = "\n".join(
        ['profile = "smoke"  # smoke | cpu | paper: the defaults of every None below', "out_dir = None",
         *[f"{k} = None" for k in knobs]]
    )  # fmt: skip
    call = "".join(f"\n    {k}={k}," for k in ["profile", "out_dir", *knobs]) + "\n"
    cells = [
        new_markdown_cell(f"# `{name}`\n\n{doc}\n\nIn batch: `surmlab reproduce {name} -p key value --profile cpu`."),
        new_code_cell(params, metadata={"tags": ["parameters"]}),
        new_code_cell(
            f"from surmlab.experiments import {name} as experiment\n\ntable = experiment.run({call})\ntable.head(20)"
        ),
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
