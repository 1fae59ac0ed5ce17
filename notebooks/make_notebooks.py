"""Write notebooks/<name>.ipynb for every experiment: thin, consistent and without outputs.

Run ``python notebooks/make_notebooks.py`` after changing an experiment's parameters or figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from surmlab.experiments import get, names  # noqa: E402

FIGURES: dict[str, list[str]] = {
    "approximation": [
        'plots.lines(table, "params", "error", "family", facet="target", log_x=True, log_y=True,\n'
        '            title="Relative Frobenius error vs parameter count (mean and std over trials)")',
        'print("closed form and gradient descent agree:", table["agree"].dropna().all())\n'
        'experiment.ordering(table, "psd")',
    ],
    "tour": [
        'plots.heatmap_grid(experiment.example_matrices(16), title="dense() of each structure (16 x 16)")',
        "plots.spectra(experiment.example_spectra(64))",
        "table",
    ],
    "pinwheel": [
        'plots.loss_curves(experiment.curves(out_dir or "results/pinwheel"), facet="bottom")',
        "table",
    ],
    "tradeoff": ['plots.tradeoff(table, group=["backbone", "task"])', "table"],
    "weight_analysis": [
        'plots.bars(table, "layer", "one_minus_cos", "method", title="1 - cos(W_ft, W_0) per adapted layer")',
        'plots.bars(table, "method", "cka_vs_full", "method", title="Linear CKA with the fully fine-tuned model")',
        "experiment.paper_table(table)",
    ],
    "speed": [
        'plots.bars(table, "method", "step_vs_lora", "method", title="Training-step time / LoRA (same rounds)")',
        'plots.bars(table, "method", "step_peak_mb", "method", title="Training-step peak memory (MiB)")',
        'plots.bars(table, "method", "infer_merged_ms", "method", title="Merged inference latency (ms)")',
        "table",
    ],
}
DEFAULT_FIGURES = ['plots.bars(table, "method", "best", "method", facet="task") if "best" in table else None', "table"]


def notebook(name: str) -> nbformat.NotebookNode:
    module = get(name)
    knobs = list(module.PROFILES["smoke"])
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
            "from surmlab import plots\n"
            f"from surmlab.experiments import {name} as experiment\n\n"
            f"table = experiment.run({call})\ntable.head(20)"
        ),
        *[new_code_cell(src) for src in FIGURES.get(name, DEFAULT_FIGURES)],
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
