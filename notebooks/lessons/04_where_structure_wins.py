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
# # Lesson 4: Where structure wins, and where it does not
#
# Lessons 1-3 showed that structured matrices reach full rank with few parameters, and how to compare two
# methods honestly. Full rank is not the same as a good fit. This lesson reads two of the lab's own
# records, written by `surmlab reproduce ... --profile cpu` and committed in `docs/results/cpu/`, and asks
# you to answer questions from them.
#
# **You will learn** to read an approximation experiment (which matrices each structure fits, at which
# parameter count) and a low-resource study (few labelled images per class), and to state what they show
# and what they do not.
#
# **Time**: seconds to run (it only reads records), 30 minutes to read and answer (solutions in
# `solutions.py`).
#
# **Change and rerun**: `records` points at another results folder, e.g. your own
# `results/cpu` after `surmlab reproduce approximation --profile cpu`.

# %%
from surmlab.display import quiet, show

quiet()

import json
from pathlib import Path

import checks
import pandas as pd

from surmlab import plots

# %% tags=["parameters"]
records = "../../docs/results/cpu"  # a folder with approximation.json and low_resource.json


# %%
def record(name: str) -> tuple[dict, pd.DataFrame]:
    """An experiment's record: its parameters and command, and its table."""
    data = json.loads((Path(records) / f"{name}.json").read_text())
    return data, pd.DataFrame(data["rows"])


approximation, fits = record("approximation")
print("command:", approximation["command"])
print("parameters:", approximation["parameters"])

# %% [markdown]
# ## 1. Approximation: fit a target matrix with each structure
#
# For each `64 x 64` target and each structure at a few parameter counts, the experiment finds the closest
# structured matrix (closed form, checked against gradient descent) and records the relative error
# `||S - T||_F / ||T||_F`. Four kinds of target:
#
# - `psd`: random positive semi-definite matrices, full rank with a spread-out spectrum;
# - `gaussian`: i.i.d. entries;
# - `lowrank_noise`: a low-rank matrix plus a little noise;
# - `weight_update`: real updates, the difference between MiniLM-L6's weights after a short full fine-tune
#   and before (64 x 64 crops).

# %%
show(
    plots.lines(fits, "params", "error", "family", facet="target", log_x=True,
                title="Relative error vs parameter count (mean and std over trials)")
)  # fmt: skip
mean_error = fits.groupby(["target", "family", "params"]).error.mean().unstack("family")
show(mean_error.loc["psd"])

# %% [markdown]
# **Questions to ask of this figure.** On which targets does a structured family beat low rank at the same
# count? Where does low rank win? The column `beats_lowrank` records, for each structured fit, whether its
# error is below low rank's at that parameter count:

# %%
show(fits[fits.family != "lowrank"].groupby(["target", "family"]).beats_lowrank.mean().unstack("family"))

# %% [markdown]
# ## 2. Low resource: 1, 5 and 10 labelled images per class
#
# A ViT-S/14 fine-tuned on Fashion-MNIST with only a few labelled images per class, three seeds each, every
# method at the same budget, and each compared with LoRA seed by seed (lesson 3's paired difference).

# %%
low, shots = record("low_resource")
print("command:", low["command"])
columns = ["method", "setting", "mean", "ci_low", "ci_high", "vs_baseline", "vs_low", "vs_high", "verdict"]
show(shots[columns])
show(plots.lines(shots, "shots_per_class", "mean", "method", error=None, title="Accuracy vs labelled images per class"))

# %% [markdown]
# **Read it with lesson 3's care**: three seeds, intervals, and a verdict only where the paired interval
# excludes zero. What the record supports is a statement about *this* backbone, task, budget and length of
# training, not about structure in general.
#
# ## Exercises
#
# **Exercise 1.** On the `psd` targets at exactly 1,024 parameters, which family has the lowest mean error?
# (A family name as a string.)

# %%
best_family_psd_1024 = None  # e.g. "circulant"

# %%
checks.lesson4_best_psd(best_family_psd_1024)

# %% [markdown]
# **Exercise 2.** On the real `weight_update` targets, which structured families beat low rank at the same
# parameter count in at least one trial? (A set of family names; `set()` if none.)

# %%
families_beating_lowrank_on_updates = None  # e.g. {"toeplitz"}

# %%
checks.lesson4_weight_updates(families_beating_lowrank_on_updates)

# %% [markdown]
# **Exercise 3.** At which numbers of labelled images per class is `surm-circulant` distinguishably *above*
# LoRA? (A set of numbers, e.g. `{1, 5}`.)

# %%
circulant_above_lora_at = None  # a set of shots per class

# %%
checks.lesson4_low_resource(circulant_above_lora_at)
