"""Plotly figures for the experiment notebooks and the app: small functions over tables and arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def heatmap_grid(matrices: Mapping[str, np.ndarray], cols: int = 3, title: str = "") -> go.Figure:
    """One heatmap per named matrix, a shared diverging colour scale centred at zero per panel."""
    names = list(matrices)
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.04, vertical_spacing=0.08)
    for i, name in enumerate(names):
        m = np.asarray(matrices[name], dtype=float)
        lim = float(np.abs(m).max()) or 1.0
        fig.add_trace(
            go.Heatmap(z=m, zmin=-lim, zmax=lim, colorscale="RdBu", showscale=False),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=title, height=260 * rows, width=260 * cols + 60)
    return fig


def spectra(values: Mapping[str, np.ndarray], title: str = "Singular values") -> go.Figure:
    """Singular values (descending) per matrix on a log y axis: the rank is where a curve drops."""
    fig = go.Figure()
    for name, s in values.items():
        s = np.asarray(s, dtype=float)
        fig.add_trace(go.Scatter(x=np.arange(1, len(s) + 1), y=np.maximum(s, 1e-16), mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="index", yaxis_title="singular value", yaxis_type="log")
    return fig


def lines(
    table: pd.DataFrame, x: str, y: str, color: str, *, error: str | None = None, facet: str | None = None,
    log_x: bool = False, log_y: bool = False, title: str = "",
) -> go.Figure:  # fmt: skip
    """Mean of ``y`` per (facet, color, x) with a standard-deviation band as error bars."""
    keys = [k for k in (facet, color, x) if k]
    agg = table.groupby(keys, as_index=False)[y].agg(["mean", "std"]).reset_index(drop=True)
    agg = agg.rename(columns={"mean": y, "std": f"{y}_std"}).sort_values(keys)
    fig = px.line(
        agg, x=x, y=y, color=color, facet_col=facet, markers=True, log_x=log_x, log_y=log_y,
        error_y=f"{y}_std" if error is None else error, title=title,
    )  # fmt: skip
    fig.update_yaxes(matches=None)
    return fig


def loss_curves(table: pd.DataFrame, step: str = "step", loss: str = "loss", color: str = "method",
                facet: str | None = None, title: str = "Training loss") -> go.Figure:  # fmt: skip
    return px.line(table, x=step, y=loss, color=color, facet_col=facet, log_y=True, title=title)


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (fewer or equal ``x`` and higher or equal ``y``, one strictly)."""
    ordered = table.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    best, keep = -np.inf, []
    for idx, value in ordered[y].items():
        if value > best:
            keep.append(idx)
            best = value
    return ordered.loc[keep]


def tradeoff(table: pd.DataFrame, x: str = "trainable_params", y: str = "best", color: str = "method",
             group: Sequence[str] = (), title: str = "Accuracy vs trainable parameters") -> go.Figure:  # fmt: skip
    """Scatter on a log x axis with the Pareto frontier per group (e.g. per backbone and task)."""
    data = table.dropna(subset=[x, y]).copy()
    data["group"] = data[list(group)].astype(str).agg(" / ".join, axis=1) if group else "all runs"
    fig = px.scatter(data, x=x, y=y, color=color, symbol="group", log_x=True, title=title, hover_data=data.columns)
    for name, part in data.groupby("group"):
        front = pareto_front(part, x, y)
        fig.add_trace(
            go.Scatter(x=front[x], y=front[y], mode="lines", line={"dash": "dot", "color": "black"},
                       name=f"Pareto frontier ({name})")
        )  # fmt: skip
    fig.update_layout(xaxis_title=x.replace("_", " "), yaxis_title=y)
    return fig


def bars(table: pd.DataFrame, x: str, y: str, color: str, facet: str | None = None, title: str = "") -> go.Figure:
    agg = table.groupby([k for k in (facet, x, color) if k], as_index=False)[y].mean()
    return px.bar(agg, x=x, y=y, color=color, facet_col=facet, barmode="group", title=title)
