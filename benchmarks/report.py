"""The issue's targets checked against a results file, and the Markdown tables of the README.

python -m benchmarks.report benchmarks/results/full-cpu.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

# (name, limit, better) -- better: "min" = the value must be at least limit, "max" = at most.
C3A_SPEEDUP = ("circulant fwd+bwd speed-up over PEFT C3A (same block size)", 1.5, "min")
C3A_ADAPTER = ("  circulant vs C3A, adapter part only (time minus the frozen layer's)", 1.5, "min")
LOKR_SPEEDUP = ("kronecker fwd+bwd speed-up over PEFT LoKr (same factors)", 2.0, "min")
LOKR_ADAPTER = ("  kronecker vs LoKr, adapter part only (time minus the frozen layer's)", 2.0, "min")
HIGHER_IS_BETTER = {C3A_SPEEDUP[0], C3A_ADAPTER[0], LOKR_SPEEDUP[0], LOKR_ADAPTER[0]}
LOKR_MEMORY = ("kronecker peak memory / PEFT LoKr", 1.0, "max")
STEP_TIME = ("training step time / PEFT LoRA (same budget)", 1.15, "max")
STEP_MEMORY = ("training step peak memory / PEFT LoRA", 1.10, "max")
MERGED = ("merged inference time / base model", 1.03, "max")


def _target(spec: tuple[str, float, str], case: str, value: float | None, **extra: Any) -> dict[str, Any]:
    name, limit, better = spec
    met = None if value is None else (value >= limit if better == "min" else value <= limit)
    return {"target": name, "case": case, "value": value, "limit": limit, "met": met, **extra}


def _inverse(value: float | None) -> float | None:
    return None if not value else 1.0 / value


def _adapter_speedup(ours: dict[str, Any], theirs: dict | None, frozen: dict | None) -> float | None:
    """``(theirs - frozen) / (ours - frozen)`` in median fwd+bwd time: the adapters' own cost."""
    if not (theirs and frozen):
        return None
    mine = ours["train"]["median_s"] - frozen["train"]["median_s"]
    other = theirs["train"]["median_s"] - frozen["train"]["median_s"]
    return other / mine if mine > 0 else None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (target, case) with the measured value and whether it meets the limit."""
    out = []
    layers = result.get("layers", [])
    by = {(r["group"], r["method"]): r for r in layers}
    for row in layers:
        ratios = row.get("ratios", {})
        if "train_vs_pair" not in ratios:
            continue
        group, frozen = row["group"], by.get((row["group"], "base"))
        adapter = _adapter_speedup(row, by.get((group, row["pair"])), frozen)
        if row["method"] == "circulant/fft":
            out.append(_target(C3A_SPEEDUP, group, _inverse(ratios["train_vs_pair"])))
            out.append(_target(C3A_ADAPTER, group, adapter))
        if row["method"] == "kronecker@lokr/fft":
            out.append(_target(LOKR_SPEEDUP, group, _inverse(ratios["train_vs_pair"])))
            out.append(_target(LOKR_ADAPTER, group, adapter))
            out.append(_target(LOKR_MEMORY, group, ratios.get("train_peak_vs_pair")))
    for row in result.get("model_steps", []):
        if row.get("impl") != "surmlab":  # the targets are for SURM; PEFT C3A / LoKr rows are for reference
            continue
        case = f"{row['model']} {row['method']}"
        out.append(_target(STEP_TIME, case, row["ratios"].get("step_vs_lora"), path=row.get("path")))
        out.append(_target(STEP_MEMORY, case, row["ratios"].get("step_peak_vs_lora"), path=row.get("path")))
    for row in result.get("merged_inference", []):
        out.append(_target(MERGED, f"{row['model']} {row['family']}", row["ratios"].get("merged_infer_vs_base")))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_table(result: dict[str, Any]) -> str:
    """Per target: worst, median and best measured value, and how many cases meet it."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for t in targets(result):
        by_target.setdefault(t["target"], []).append(t)
    lines = ["| target | limit | worst | median | best | cases met |", "|---|---|---|---|---|---|"]
    for name, rows in by_target.items():
        values = [r["value"] for r in rows if r["value"] is not None]
        if not values:
            continue
        higher_better = name in HIGHER_IS_BETTER
        worst, best = (min(values), max(values)) if higher_better else (max(values), min(values))
        met = sum(bool(r["met"]) for r in rows)
        sign = ">=" if higher_better else "<="
        lines.append(
            f"| {name} | {sign} {rows[0]['limit']} | {_fmt(worst)} | {_fmt(statistics.median(values))} | "
            f"{_fmt(best)} | {met}/{len(rows)} |"
        )
    return "\n".join(lines)


def layer_table(result: dict[str, Any], metric: str = "train") -> str:
    """Median milliseconds per layer group and method (``train``: fwd+bwd, ``infer``: no-grad fwd)."""
    rows = result.get("layers", [])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cell = {(r["group"], r["method"]): r for r in rows}
    lines = ["| group | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for g in groups:
        values = []
        for m in methods:
            r = cell.get((g, m))
            values.append("" if r is None else f"{1e3 * r[metric]['median_s']:.1f}")
        lines.append(f"| {g} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def compact_layer_table(result: dict[str, Any]) -> str:
    """Per group: fwd+bwd time / PEFT LoRA of each SURM family's faster path (``f``: fft, ``d``: dense,
    ``*``: the one ``auto`` picks when training), and C3A / LoKr against our same-shape rows."""
    rows = result.get("layers", [])
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cell = {(r["group"], r["method"]): r for r in rows}
    families = list(dict.fromkeys(r["family"] for r in rows if r["impl"] == "surmlab" and "@" not in r["method"]))
    head = "| group | LoRA ms | " + " | ".join(families) + " | C3A / circulant | LoKr / kronecker |"
    lines = [head, "|---" * (len(families) + 4) + "|"]
    for g in groups:
        lora = cell.get((g, "lora"))
        values = [f"{1e3 * lora['train']['median_s']:.1f}" if lora else ""]
        for f in families:
            fft, dense = cell.get((g, f"{f}/fft")), cell.get((g, f"{f}/dense"))
            if not (fft and dense):
                values.append("")
                continue
            best = min((fft, dense), key=lambda r: r["ratios"]["train_vs_lora"])
            star = "*" if best["auto_path"]["train"] == best["path"] else ""
            values.append(f"{best['ratios']['train_vs_lora']:.2f} {best['path'][0]}{star}")
        for ours in ("circulant/fft", "kronecker@lokr/fft"):
            r = cell.get((g, ours))
            pair = r and r["ratios"].get("train_vs_pair")
            values.append(f"{1 / pair:.2f}x" if pair else "")
        lines.append(f"| {g} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def model_table(result: dict[str, Any]) -> str:
    lines = [
        "| model | method | hyper | params | path | step ms | x LoRA | peak MiB | x LoRA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("model_steps", []):
        hyper = ", ".join(f"{k}={v}" for k, v in r.get("hyper", {}).items())
        lines.append(
            f"| {r['model']} | {r['method']} | {hyper} | {r['params']:,} | {r.get('path') or '-'} | "
            f"{1e3 * r['step']['median_s']:.0f} | {_fmt(r['ratios'].get('step_vs_lora'))} | "
            f"{r['step_peak_bytes'] / 2**20:.0f} | {_fmt(r['ratios'].get('step_peak_vs_lora'))} |"
        )
    lines += ["", "| model | family | base ms | merged ms | x base |", "|---|---|---|---|---|"]
    for r in result.get("merged_inference", []):
        lines.append(
            f"| {r['model']} | {r['family']} | {1e3 * r['base_merged_infer']['median_s']:.1f} | "
            f"{1e3 * r['merged_infer']['median_s']:.1f} | {_fmt(r['ratios'].get('merged_infer_vs_base'), 3)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for path in argv:
        result = json.loads(Path(path).read_text())
        env = result["environment"]
        print(
            f"## {path}: profile {result['profile']}, {env['device_name']}, threads {env['torch_threads']}, "
            f"load {env['load_average_start']} -> {env.get('load_average_end')}\n"
        )
        print(summary_table(result), "\n")
        print("fwd+bwd / LoRA, faster path\n\n" + compact_layer_table(result), "\n")
        print("fwd+bwd ms\n\n" + layer_table(result, "train"), "\n")
        print("no-grad fwd ms\n\n" + layer_table(result, "infer"), "\n")
        print(model_table(result), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
