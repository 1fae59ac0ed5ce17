"""Plotly figures of the app: live curves, run comparison, and the parameters-vs-metric trade-off.

Colours are fixed per structure (method), so a structure keeps its colour across every figure and
every refresh; ``uirevision`` keeps a user's zoom when a figure is replaced by a newer one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..methods import METHODS
from ..plots import pareto_front
from ..status import RunStatus
from .readout import takes_mode

PALETTE = qualitative.Dark24
COLOURS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(METHODS)}
LAYOUT = {
    "height": 300,
    "margin": {"l": 55, "r": 15, "t": 40, "b": 45},
    "legend": {"orientation": "h", "y": -0.25},
    "template": "plotly_white",
    "uirevision": "keep",
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
    return loss, evals


def compare(runs: list[tuple[str, str, list[dict[str, Any]], str | None]]) -> go.Figure:
    """Loss and eval metric of several runs side by side; ``runs``: (label, method, rows, metric)."""
    if not runs:
        return empty("Compare runs", "select runs in the list above")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "eval metric"))
    for label, method, rows, metric in runs:
        c = colour(method)
        for col, key in ((1, "loss"), (2, f"eval_{metric or 'accuracy'}")):
            x, y = _xy(rows, key)
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
    fig.update_layout(**{**LAYOUT, "height": 340})
    return fig


def tradeoff(table: pd.DataFrame, title: str = "Trade-off: trainable parameters vs eval metric") -> go.Figure:
    """Finished runs on a log parameter axis, coloured by structure, with the Pareto frontier of each
    backbone/task pair (runs on different data are not comparable, so each pair gets its own line).

    ``table``: ``surmlab.runs.list_runs`` rows. Completed runs are filled markers, stopped runs with
    an evaluation are open ones; running and failed runs are left out.
    """
    finished = table["status"].isin([RunStatus.COMPLETED, RunStatus.STOPPED])
    data = table[finished].dropna(subset=["trainable_params", "best"])
    if data.empty:
        return empty(title, "finished runs appear here")
    data = data.assign(
        structure=[structure(m, md) for m, md in zip(data["method"], data["mode"], strict=True)],
        group=data["backbone"].astype(str) + " / " + data["task"].astype(str),
        trainable_params=data["trainable_params"].astype(float),
        best=data["best"].astype(float),
    )
    fig = go.Figure()
    for name, part in data.groupby("group", sort=True):
        front = pareto_front(part, "trainable_params", "best")
        fig.add_trace(
            go.Scatter(
                x=front["trainable_params"],
                y=front["best"],
                mode="lines",
                line={"dash": "dot", "color": "#555"},
                line_shape="hv",
                name=f"Pareto frontier: {name}",
                hoverinfo="skip",
            )
        )
    for name, part in data.groupby("structure", sort=True):
        part = part.sort_values("status")  # completed first: the legend shows a filled marker
        method = part["method"].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=part["trainable_params"],
                y=part["best"],
                mode="markers",
                name=name,
                marker={
                    "size": 11,
                    "color": colour(method),
                    "symbol": ["circle" if s == RunStatus.COMPLETED else "circle-open" for s in part["status"]],
                    "line": {"width": 1.5, "color": colour(method)},
                },
                customdata=part[["run", "group", "metric", "status"]].to_numpy(),
                hovertemplate=(
                    "%{customdata[0]}<br>%{customdata[1]}<br>%{x:,} trainable parameters<br>"
                    "best %{customdata[2]} %{y:.4f} (%{customdata[3]})<extra>" + name + "</extra>"
                ),
            )
        )
    metrics = sorted(set(data["metric"].dropna()))
    x, y = np.log10(data["trainable_params"]), data["best"]
    pad = max(0.02, 0.1 * float(y.max() - y.min()))
    fig.update_xaxes(type="log", dtick=1, tickformat="~s", range=[math.floor(x.min()) - 0.1, math.ceil(x.max()) + 0.1])
    fig.update_yaxes(range=[float(y.min()) - pad, float(y.max()) + pad])
    fig.update_layout(
        title=title,
        xaxis_title="trainable parameters (log)",
        yaxis_title=f"best eval {' / '.join(metrics)}",
        **{**LAYOUT, "height": 380},
    )
    return fig
