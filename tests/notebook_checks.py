"""What an executed notebook must show to read as a report anywhere (GitHub, an HTML export, JupyterLab)."""

from __future__ import annotations

import nbformat

PLOTLY = "application/vnd.plotly.v1+json"
STATIC = ("image/png", "image/svg+xml")
WIDGET = "application/vnd.jupyter.widget-view+json"


def report_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Each problem as a line: a figure without a static image, stderr output, a warning, an error,
    a progress-bar widget or stored widget state."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            where = f"cell {index}"
            if out.output_type == "error":
                problems.append(f"{where}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream":
                if out.name == "stderr":
                    problems.append(f"{where}: stderr: {out.text.strip()[:200]}")
                elif "Warning" in out.text:
                    problems.append(f"{where}: a warning on stdout: {out.text.strip()[:200]}")
            else:
                data = out.get("data", {})
                if PLOTLY in data and not any(kind in data for kind in STATIC):
                    problems.append(f"{where}: a plotly figure without a static image")
                if WIDGET in data:
                    problems.append(f"{where}: a widget output (blank outside a live kernel)")
    if "widgets" in nb.metadata:
        problems.append("metadata.widgets: widget state stored")
    return problems
