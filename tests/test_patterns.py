"""Per-layer settings (``SurmConfig.hyper_pattern``, PEFT's ``rank_pattern``): a matched layer takes its own
block size / rank / factor grid; the budget solver counts it as spent and picks the shared setting of the other
layers. Counts and the solver's choice are checked against the oracles' closed forms and a brute-force search
over every valid setting; the built layers against the dense oracle."""

import re

import numpy as np
import pytest
import torch
from oracles import ORACLES, oracle_dense
from torch import nn

from surmlab import BudgetError, SurmConfig, inject, load_adapter, plan_for, save_adapter
from surmlab.structures import FAMILIES
from surmlab.tuner import surm_layers

FAMILY_NAMES = list(FAMILIES)
FC1, FC2 = (48, 32), (48, 48)  # (out, in)


def net():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(FC1[1], FC1[0]))
    model.add_module("fc2", nn.Linear(FC2[1], FC2[0]))
    return model


def pattern_setting(family):
    """A valid setting for fc2 alone, from the oracle's enumeration (the middle one: not a default)."""
    settings = ORACLES[family].settings([FC2])
    return settings[len(settings) // 2]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_budget_solver_spends_what_the_pattern_leaves(family):
    oracle, setting = ORACLES[family], pattern_setting(family)
    fixed = oracle.count(*FC2, setting)
    free_counts = sorted(oracle.count(*FC1, h) for h in oracle.settings([FC1]))
    budget = fixed + free_counts[len(free_counts) // 2] + 1
    config = SurmConfig(family=family, target_modules=["fc1", "fc2"], budget=budget, hyper_pattern={"fc2": setting})
    plan = plan_for(net(), config)
    # Brute force: the largest count of fc1's own settings that fits next to fc2's fixed count.
    best = max(n for n in free_counts if n <= budget - fixed)
    rows = {t.name: (hyper, n) for t, hyper, n in plan.per_layer}
    assert rows["fc2"][1] == fixed and rows["fc1"][1] == best and plan.total == fixed + best <= budget
    assert all(rows["fc2"][0][k] == v for k, v in setting.items())
    assert re.search(rf"\n  fc2 \(48x48\): .*: {fixed:,} parameters$", plan.describe())

    model = inject(net(), config)
    layers = surm_layers(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == plan.total
    assert all(layers["fc2"].updates["full"].hyper[k] == v for k, v in setting.items())
    with torch.no_grad():
        for p in layers["fc2"].updates.parameters():
            p.normal_(0.0, 0.05)
    x = torch.randn(3, 48)
    w = layers["fc2"].base_layer.weight.double() + torch.from_numpy(oracle_dense(layers["fc2"].updates["full"]))
    want = x.double() @ w.T + layers["fc2"].base_layer.bias.double()
    got = layers["fc2"](x).detach().double()
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_pattern_survives_save_and_load(tmp_path):
    config = SurmConfig(
        family="lowrank", target_modules=["fc1", "fc2"], hyper={"rank": 2}, hyper_pattern={"fc2": {"rank": 5}}
    )
    model = inject(net(), config)
    save_adapter(model, tmp_path)
    loaded = load_adapter(net(), tmp_path)
    assert surm_layers(loaded)["fc2"].updates["full"].rank == 5 and surm_layers(loaded)["fc1"].updates["full"].rank == 2
    assert loaded.surm_config.hyper_pattern == {"fc2": {"rank": 5}}


def test_patterns_no_layer_matches_or_can_take_are_named():
    model = net()
    modules = dict(model.named_modules())
    with pytest.raises(ValueError, match=r"hyper_pattern 'fc3' matches none of the targeted layers \(fc1, fc2\)"):
        inject(model, SurmConfig(family="lowrank", target_modules=["fc1", "fc2"], hyper_pattern={"fc3": {"rank": 2}}))
    with pytest.raises(ValueError, match=r"hyper_pattern 'fc1' = \{'block_size': 5\} does not fit fc1 \(48x32\)"):
        inject(model, SurmConfig(target_modules=["fc1", "fc2"], hyper_pattern={"fc1": {"block_size": 5}}))
    with pytest.raises(BudgetError, match="per-layer settings alone take 960 parameters"):
        plan_for(
            model,
            SurmConfig(
                family="lowrank", target_modules=["fc1", "fc2"], budget=900, hyper_pattern={"fc2": {"rank": 10}}
            ),
        )
    assert dict(model.named_modules()) == modules


def test_surmlab_train_takes_a_pattern_and_its_run_reloads(tmp_path, capsys):
    """``--hyper-pattern`` from the command line: the value layers take their own block size, the solver sizes
    the query layers from what is left (closed form: a 64x64 circulant at block b has 64^2 / b parameters), and
    ``surmlab predict`` rebuilds the run with the pattern (its weights would not fit the shared setting)."""
    import json

    from surmlab.cli import main as cli

    runs = tmp_path / "runs"
    args = ["train", "--backbone", "tiny-bert", "--task", "rotten-tomatoes", "--method", "surm-circulant",
            "--budget", "3000", "--hyper-pattern", '{"attention.self.value": {"block_size": 64}}',
            "--max-train", "16", "--max-eval", "8", "--max-steps", "2", "--runs-dir", str(runs), "--cpu"]  # fmt: skip
    assert cli(args) == 0
    (run,) = runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    query_block = min(b for b in (1, 2, 4, 8, 16, 32, 64) if 2 * 64 * 64 // b <= 3000 - 2 * 64)
    assert summary["method_params"] == 2 * 64 + 2 * 64 * 64 // query_block
    capsys.readouterr()
    assert cli(["predict", str(run), "a fine film"]) == 0 and "a fine film" in capsys.readouterr().out
    assert cli(["train", "--backbone", "tiny-bert", "--method", "bitfit", "--hyper-pattern", '{"value": {}}',
                "--runs-dir", str(runs), "--cpu"]) == 2  # fmt: skip
    assert "hyper_pattern) apply to surm-* methods and lora, not bitfit" in capsys.readouterr().err
