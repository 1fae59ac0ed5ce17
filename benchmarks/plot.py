"""Figures of a results file: layer fwd+bwd time per method, and the model steps against LoRA.

python -m benchmarks.plot benchmarks/results/full-cpu.json   # writes full-cpu.html (and .png with kaleido)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def figure(result: dict[str, Any]) -> go.Figure:
    layers = [r for r in result.get("layers", []) if r["dtype"] == "float32"]
    groups = list(dict.fromkeys(r["group"] for r in layers))
    steps = result.get("model_steps", [])
    fig = make_subplots(
        rows=2,
        cols=1,
        subplot_titles=(
            "one adapted layer: forward+backward time / PEFT LoRA (same round)",
            "training step time / PEFT LoRA at the same budget",
        ),
        vertical_spacing=0.25,
    )
    for method in dict.fromkeys(r["method"] for r in layers):
        rows = {r["group"]: r for r in layers if r["method"] == method}
        fig.add_trace(
            go.Bar(
                name=method,
                x=groups,
                y=[rows[g]["ratios"].get("train_vs_lora") if g in rows else None for g in groups],
                legendgroup="layers",
            ),
            row=1,
            col=1,
        )
    models = list(dict.fromkeys(r["model"] for r in steps))
    for method in dict.fromkeys(r["method"] for r in steps):
        rows = {r["model"]: r for r in steps if r["method"] == method}
        fig.add_trace(
            go.Bar(
                name=f"step: {method}",
                x=models,
                y=[rows[m]["ratios"].get("step_vs_lora") if m in rows else None for m in models],
                legendgroup="steps",
            ),
            row=2,
            col=1,
        )
    for row, limit in ((1, None), (2, 1.15)):
        fig.add_hline(y=1.0, line_dash="dot", row=row, col=1)
        if limit:
            fig.add_hline(y=limit, line_dash="dash", line_color="red", row=row, col=1)
    env = result["environment"]
    fig.update_layout(
        title=f"surmlab benchmarks ({result['profile']}, {env['device_name']}, {env['torch_threads']} thread(s))",
        barmode="group",
        height=900,
        yaxis_type="log",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    for path in map(Path, sys.argv[1:] if argv is None else argv):
        fig = figure(json.loads(path.read_text()))
        html = path.with_suffix(".html")
        fig.write_html(html, include_plotlyjs="cdn")
        try:
            fig.write_image(path.with_suffix(".png"), width=1400, height=900)
        except (ImportError, ValueError, RuntimeError) as err:  # kaleido missing or unusable: HTML only
            print(f"no PNG for {path.name}: {err}", file=sys.stderr)
        print(f"wrote {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
