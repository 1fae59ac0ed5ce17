"""Plotly figures of the app: live curves, run comparison, and the parameters-vs-metric trade-off.

Colours are fixed per structure (method), so a structure keeps its colour across every figure and
every refresh; ``uirevision`` keeps a user's zoom when a figure is replaced by a newer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..methods import METHODS
from ..status import RunStatus
from .readout import takes_mode

PALETTE = qualitative.Dark24
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "triangle-down"]
COLOURS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(METHODS)}
LAYOUT = {
    "height": 300,
    "margin": {"l": 55, "r": 15, "t": 40, "b": 45},
    "legend": {"orientation": "h", "y": -0.25},
    "template": "plotly_white",
    "uirevision": "keep",
    "modebar": {"orientation": "v"},  # down the right edge: on a phone it never covers the title
}
Series = list[tuple[str, list[dict[str, Any]]]]  # (label, metrics.jsonl rows)


def colour(method: str | None) -> str:
    return COLOURS.get(str(method), PALETTE[hash(str(method)) % len(PALETTE)])


def structure(method: Any, mode: Any) -> str:
    """``surm-circulant``, ``surm-circulant (adapter)``, ``lora``: what the trade-off plot colours by."""
    method = str(method)
    return f"{method} (adapter)" if takes_mode(method) and mode == "adapter" else method


def empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "grey"})
    fig.update_layout(title=title, **LAYOUT)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _xy(rows: list[dict[str, Any]], key: str) -> tuple[list[Any], list[Any]]:
    points = [(r["step"], r[key]) for r in rows if key in r and r.get(key) is not None and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def curves(series: Series, key: str, title: str, ytitle: str, colours: list[str] | None = None) -> go.Figure:
    """One line per run of ``key`` against the optimiser step."""
    fig = go.Figure()
    for i, (label, rows) in enumerate(series):
        x, y = _xy(rows, key)
        if not x:
            continue
        line = {"color": colours[i]} if colours else {}
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label, line=line, marker={"size": 5}))
    if not fig.data:
        return empty(title, "no points yet")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=ytitle, showlegend=len(series) > 1, **LAYOUT)
    return fig


def live(rows: list[dict[str, Any]], metric: str | None, label: str) -> tuple[go.Figure, go.Figure]:
    """Training loss and eval metric of the run being watched."""
    loss = curves([(label, rows)], "loss", "Training loss", "loss")
    metric = metric or "accuracy"
    evals = curves([(label, rows)], f"eval_{metric}", f"Eval {metric}", metric)
    if evals.data:
        evals.update_yaxes(range=metric_range(metric, _xy(rows, f"eval_{metric}")[1]))
    return loss, evals


def compare(runs: list[tuple[str, str, list[dict[str, Any]], str | None]], smoothing: float = 0.0) -> go.Figure:
    """Loss and eval metric of several runs side by side; ``runs``: (label, method, rows, metric).
    ``smoothing`` in [0, 1): the loss as an exponential moving average (the metric is left raw)."""
    if not runs:
        return empty("Compare runs", "select runs in the list above")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "eval metric"))
    for label, method, rows, metric in runs:
        c = colour(method)
        for col, key in ((1, "loss"), (2, f"eval_{metric or 'accuracy'}")):
            x, y = _xy(rows, key)
            if col == 1 and smoothing:
                y = smooth(y, smoothing)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    line={"color": c},
                    marker={"size": 5},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="step")
    metrics = {m for *_, m in runs}
    values = [v for _, _, rows, m in runs for v in _xy(rows, f"eval_{m or 'accuracy'}")[1]]
    if len(metrics) == 1 and values:
        fig.update_yaxes(range=metric_range(next(iter(metrics)), values), row=1, col=2)
    fig.update_layout(**{**LAYOUT, "height": 340})
    return fig


@dataclass(frozen=True)
class Axis:
    """A trade-off axis: a run-table column, its title, whether more is better, whether it is logged."""

    column: str
    title: str
    higher_is_better: bool
    log: bool = False


AXES = {
    "trainable parameters": Axis("trainable_params", "trainable parameters (log)", False, log=True),
    "wall time (s)": Axis("wall_time_s", "wall time (s)", False),
    "examples/s": Axis("examples_per_s", "training examples per second", True),
    "peak memory (MB)": Axis("peak_memory_mb", "peak memory (MB)", False),
    "metric": Axis("best", "best eval metric", True),
}
DOMINATED = "#c7c7c7"
# The range each metric can take: the axis shows it (tightened to the data), never 0..1.5.
METRIC_RANGES = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0), "spearman": (-1.0, 1.0)}


def metric_range(metric: str | None, values: Any) -> list[float] | None:
    """The y range for ``metric``: the data padded by a tenth of its spread, clipped to the metric's range."""
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(0.02, 0.1 * (high - low))
    lo, hi = METRIC_RANGES.get(str(metric), (-math.inf, math.inf))
    return [max(lo, low - pad), min(hi, high + pad)]


def dominated(part: pd.DataFrame, x: Axis, y: Axis) -> list[bool]:
    """For each row: another row is at least as good on both axes and better on one."""
    sx = 1.0 if x.higher_is_better else -1.0
    sy = 1.0 if y.higher_is_better else -1.0
    px_, py_ = sx * part[x.column].to_numpy(float), sy * part[y.column].to_numpy(float)
    out = []
    for i in range(len(part)):
        ge = (px_ >= px_[i]) & (py_ >= py_[i])
        gt = (px_ > px_[i]) | (py_ > py_[i])
        out.append(bool((ge & gt).any()))
    return out


def tradeoff(
    table: pd.DataFrame,
    title: str = "Trade-off",
    x: str = "trainable parameters",
    y: str = "metric",
) -> go.Figure:
    """Finished runs on two chosen axes (``AXES``), coloured by structure, one marker shape per
    backbone/task; points another run of the same backbone/task beats on both axes are grey.

    ``table``: ``surmlab.runs.list_runs`` rows (plus ``examples_per_s``, ``peak_memory_mb``).
    Completed runs are filled markers, stopped runs with an evaluation are open ones; running and
    failed runs are left out. Several backbone/task pairs: each pair gets its own marker shape and
    the legend names it, so one task's point never hides another's.
    """
    ax, ay = AXES[x], AXES[y]
    finished = table["status"].isin([RunStatus.COMPLETED, RunStatus.STOPPED])
    columns = list(dict.fromkeys(["trainable_params", "best", ax.column, ay.column]))
    data = table[finished].copy()
    for column in columns:
        data[column] = pd.to_numeric(data.get(column), errors="coerce")
    data = data.dropna(subset=[ax.column, ay.column])
    if data.empty:
        return empty(title, "finished runs appear here")
    data["structure"] = [structure(m, md) for m, md in zip(data["method"], data["mode"], strict=True)]
    data["group"] = data["backbone"].astype(str) + " / " + data["task"].astype(str)
    groups = sorted(set(data["group"]))
    symbols = {g: SYMBOLS[i % len(SYMBOLS)] for i, g in enumerate(groups)}
    data["dominated"] = False
    for _, part in data.groupby("group"):
        data.loc[part.index, "dominated"] = dominated(part, ax, ay)
    fig = go.Figure()
    for (name, group), part in data.groupby(["structure", "group"], sort=True):
        part = part.sort_values("status")  # completed first: the legend shows a filled marker
        method = part["method"].iloc[0]
        base = colour(method)
        colours = [DOMINATED if d else base for d in part["dominated"]]
        shape = symbols[group]
        label = name if len(groups) == 1 else f"{name} · {group}"
        fig.add_trace(
            go.Scatter(
                x=part[ax.column],
                y=part[ay.column],
                mode="markers",
                name=label,
                marker={
                    "size": 11,
                    "color": colours,
                    "symbol": [shape if s == RunStatus.COMPLETED else f"{shape}-open" for s in part["status"]],
                    "line": {"width": 1.5, "color": colours},
                },
                customdata=part[["run", "group", "metric", "status", "dominated"]].to_numpy(),
                hovertemplate=(
                    "%{customdata[0]}<br>%{customdata[1]}<br>"
                    + ax.title
                    + " %{x:,.4g}<br>"
                    + ay.title
                    + " %{y:,.4g}<br>%{customdata[2]} · %{customdata[3]} · dominated: %{customdata[4]}"
                    "<extra>" + name + "</extra>"
                ),
            )
        )
    metrics = sorted(set(data["metric"].dropna()))
    for axis, which in ((ax, fig.update_xaxes), (ay, fig.update_yaxes)):
        values = data[axis.column]
        if axis.log:
            lv = np.log10(values.clip(lower=1))
            which(type="log", dtick=1, tickformat="~s", range=[math.floor(lv.min()) - 0.1, math.ceil(lv.max()) + 0.1])
        elif axis.column == "best":
            which(range=metric_range(metrics[0] if len(metrics) == 1 else None, values))
    ytitle = f"best eval {' / '.join(metrics)}" if ay.column == "best" else ay.title
    xtitle = f"best eval {' / '.join(metrics)}" if ax.column == "best" else ax.title
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        xaxis_title=xtitle,
        yaxis_title=ytitle,
        **{**LAYOUT, "height": 400, "margin": {**LAYOUT["margin"], "t": 60}},
    )
    return fig


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's exponential moving average with bias correction (``weight`` 0: the raw values)."""
    out, last = [], 0.0
    for n, v in enumerate(values, 1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight else v)
    return out
