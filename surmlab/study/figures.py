"""Plotly figures of a study: metric vs trainable parameters with intervals and the Pareto frontier,
and learning curves with a band over seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ..plots import pareto_front
from ..runs import RunDir


def tradeoff(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """Mean metric vs trainable parameters per method (error bars: the 95% interval over seeds), with
    the Pareto frontier of the means."""
    data = summary.dropna(subset=["mean", "method_params"])
    fig = go.Figure()
    for method, part in data.groupby("method", sort=False):
        part = part.sort_values("method_params")
        fig.add_trace(
            go.Scatter(
                x=part.method_params.clip(lower=1),
                y=part["mean"],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": part.ci_high - part["mean"],
                    "arrayminus": part["mean"] - part.ci_low,
                },
                mode="markers+lines",
                name=str(method),
                text=[
                    f"{method} @ {b}: {m:.3f} ({n} seeds)"
                    for b, m, n in zip(part.budget, part["mean"], part.seeds, strict=True)
                ],
            )
        )
    front = pareto_front(data, "method_params", "mean")
    fig.add_trace(
        go.Scatter(
            x=front.method_params.clip(lower=1),
            y=front["mean"],
            mode="lines",
            name="Pareto frontier",
            line={"dash": "dot", "color": "grey"},
        )
    )
    metric = data.metric.dropna().iloc[0] if data.metric.notna().any() else "metric"
    fig.update_layout(
        title=title or f"{metric} vs trainable parameters (mean, 95% interval over seeds)",
        xaxis_title="trainable parameters (method, log)",
        yaxis_title=metric,
        xaxis_type="log",
    )
    return fig


def bars(summary: pd.DataFrame, facet: str | None = "task", title: str = "") -> go.Figure:
    """Mean metric per method (and budget) with its 95% interval over seeds as error bars, one panel
    per value of ``facet``."""
    data = summary.dropna(subset=["mean"]).copy()
    data["label"] = [f"{m} {b}".strip() for m, b in zip(data.method, data.budget.fillna("").astype(str), strict=True)]
    data["above"] = data.ci_high - data["mean"]
    data["below"] = data["mean"] - data.ci_low
    metric = data.metric.dropna().iloc[0] if data.metric.notna().any() else "metric"
    return px.bar(
        data, x="label", y="mean", color="method", error_y="above", error_y_minus="below", facet_col=facet,
        title=title or f"{metric}: mean and 95% interval over seeds", labels={"label": "", "mean": metric},
    )  # fmt: skip


def curves(folder: Path, cells: pd.DataFrame) -> go.Figure:
    """Evaluation metric over steps per method and budget: the mean over seeds and a min-max band."""
    fig = go.Figure()
    for (method, budget), part in cells[cells.run.notna()].groupby(["method", "budget"], sort=False):
        points = []
        for row in part.itertuples():
            key = f"eval_{row.metric}"
            points += [(r["step"], r[key], row.seed) for r in RunDir(folder / row.run).metrics() if key in r]
        if not points:
            continue
        frame = pd.DataFrame(points, columns=["step", "value", "seed"]).groupby("step").value
        stats = pd.DataFrame({"mean": frame.mean(), "low": frame.min(), "high": frame.max()}).reset_index()
        label = f"{method} {budget}".strip()
        fig.add_trace(go.Scatter(x=stats.step, y=stats["mean"], mode="lines+markers", name=label))
        fig.add_trace(
            go.Scatter(
                x=[*stats.step, *stats.step[::-1]],
                y=[*stats.high, *stats.low[::-1]],
                fill="toself",
                opacity=0.2,
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
                name=label,
            )
        )
    fig.update_layout(title="Evaluation over steps (mean and range over seeds)", xaxis_title="step")
    return fig
