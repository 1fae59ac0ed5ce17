"""Budget solver against a brute-force enumeration written from the README's family table."""

import functools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import ORACLES

from surmlab.budget import BudgetError, Target, layer_count, parse_budget, plan, solve
from surmlab.structures import FAMILIES

FAMILY_NAMES = list(FAMILIES)  # every registered family; its settings and counts come from its oracle

# A ViT-B-like mix of shapes (out x in): attention slice, MLP up, MLP down.
MIXED = (Target("q", 768, 768), Target("fc1", 3072, 768), Target("fc2", 768, 3072))
SQUARE = tuple(Target(f"blocks.{i}.attn.proj", 384, 384) for i in range(4))
SMALL = (Target("a", 24, 36), Target("b", 36, 24))


@functools.cache
def brute_force_counts(family, targets, mode):
    """Every achievable total count, enumerated from the family's oracle (one setting shared by all layers)."""
    targets = list(targets)
    oracle = ORACLES[family]
    bias = sum(t.out_features for t in targets) if mode == "adapter" else 0
    settings = oracle.settings([t.shape for t in targets])
    return sorted({sum(oracle.count(t.out_features, t.in_features, h) for t in targets) + bias for h in settings})


def numbers_in(message):
    return {int(s.replace(",", "")) for s in re.findall(r"\d[\d,]*", message)}


# -- solve -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [MIXED, SQUARE, SMALL], ids=["mixed", "square", "small"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_solve_is_the_best_fit_below_budget(family, targets):
    """nearest=False: total <= budget and no achievable count lies between them."""
    counts = brute_force_counts(family, targets, "lora")
    for budget in sorted({counts[0], counts[len(counts) // 2] + 1, (counts[0] + counts[-1]) // 3, counts[-1]}):
        result = solve(family, targets, budget)
        assert result.total <= budget
        assert result.total == max(c for c in counts if c <= budget)
        assert result.budget == budget
        assert result.total == sum(n for *_, n in result.per_layer)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_solve_nearest_picks_the_closest(family):
    counts = brute_force_counts(family, SMALL, "lora")
    for budget in range(counts[0], counts[-1] + 1, max(1, (counts[-1] - counts[0]) // 37)):
        result = solve(family, SMALL, budget, nearest=True)
        assert result.total in counts
        assert abs(result.total - budget) == min(abs(c - budget) for c in counts)


@given(
    family=st.sampled_from(FAMILY_NAMES),
    mode=st.sampled_from(["lora", "adapter"]),
    nearest=st.booleans(),
    fraction=st.floats(0, 1),
)
def test_property_solve_against_brute_force(family, mode, nearest, fraction):
    targets = SQUARE if mode == "adapter" else MIXED
    counts = brute_force_counts(family, targets, mode)
    budget = round(counts[0] + fraction * (counts[-1] - counts[0]))
    result = solve(family, targets, budget, mode=mode, nearest=nearest)
    if nearest:
        assert abs(result.total - budget) == min(abs(c - budget) for c in counts)
    else:
        assert result.total == max(c for c in counts if c <= budget)
    # the per-layer counts are the closed forms of the shared hyper-parameters
    for target, hyper, n in result.per_layer:
        assert hyper == result.hyper
        assert n == layer_count(family, target, hyper, mode)


def test_adapter_mode_counts_the_bias():
    lora = solve("circulant", SQUARE, 4 * 384, mode="lora")
    adapter = solve("circulant", SQUARE, 4 * 384 + 4 * 384, mode="adapter")
    assert lora.hyper == adapter.hyper == {"block_size": 384}
    assert adapter.total == lora.total + 4 * 384


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_infeasible_budget_states_the_range(family):
    """Budgets outside [smallest, largest] raise BudgetError naming both achievable extremes."""
    counts = brute_force_counts(family, MIXED, "lora")
    for budget in (counts[0] - 1, counts[-1] + 1):
        with pytest.raises(BudgetError, match="infeasible") as info:
            solve(family, MIXED, budget)
        assert {counts[0], counts[-1], budget} <= numbers_in(str(info.value))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_nearest_outside_the_range_takes_the_nearest_end(family):
    counts = brute_force_counts(family, MIXED, "lora")
    assert solve(family, MIXED, counts[-1] * 10, nearest=True).total == counts[-1]
    assert solve(family, MIXED, max(1, counts[0] // 2), nearest=True).total == counts[0]


def test_budget_error_is_a_value_error():
    assert issubclass(BudgetError, ValueError)


def test_solve_without_targets():
    with pytest.raises(BudgetError, match="no target layers"):
        solve("circulant", [], 1000)


def test_solve_rejects_unknown_mode_and_family():
    with pytest.raises(ValueError, match="unknown mode 'prefix'"):
        solve("circulant", SMALL, 1000, mode="prefix")
    with pytest.raises(ValueError, match="known: circulant"):
        solve("foo", SMALL, 1000)


def test_plan_adapter_needs_square_targets():
    with pytest.raises(ValueError, match="square"):
        plan("circulant", SMALL, {}, mode="adapter")


def test_plan_names_the_layer_on_bad_hyper():
    targets = [Target("ok", 32, 16), Target("odd", 24, 24)]
    with pytest.raises(ValueError, match=r"layer odd: block_size=16 does not divide the 24x24 layer") as info:
        plan("circulant", targets, {"block_size": 16})
    assert str(info.value).endswith("1, 2, 3, 4, 6, 8, 12, 24")


def test_plan_fixed_hyper_counts():
    result = plan("toeplitz", MIXED, {"block_size": 256})
    # 768x768: 9 blocks, 3072x768 and 768x3072: 36 blocks each, 511 numbers per block
    assert result.total == (9 + 36 + 36) * 511
    assert result.hyper == {"block_size": 256}


# -- parse_budget --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"),
    [("50k", 50_000), ("50K", 50_000), ("1.5M", 1_500_000), ("2m", 2_000_000), (" 12000 ", 12_000), (".5k", 500)],
)
def test_parse_budget_strings(text, count):
    assert parse_budget(text) == count


def test_parse_budget_ints():
    assert parse_budget(50_000) == 50_000
    assert parse_budget("1e5") == parse_budget("1E+5") == 100_000 and parse_budget("1.5e2k") == 150_000
    assert solve("lowrank", SMALL, "0.6k").total == 600  # strings go through the solver too


@pytest.mark.parametrize("bad", ["abc", "50x", "", "k", "1.2.3", "5 k 3", "1e-5e", "--5", True, None])
def test_parse_budget_rejects_garbage(bad):
    with pytest.raises(BudgetError, match="cannot read budget"):
        parse_budget(bad)


@pytest.mark.parametrize("bad", [0, -3, "0", "0.0001k", "-5", "-5k", "1e-5"])
def test_parse_budget_rejects_non_positive(bad):
    with pytest.raises(BudgetError, match="must be positive"):
        parse_budget(bad)


def test_closest_is_the_one_selection_rule():
    """Below the budget by default, either side with ``nearest``, first of equals, clear when infeasible."""
    from surmlab.budget import closest

    options = [(10, {"k": 1}), (20, {"k": 2}), (20, {"k": 3}), (40, {"k": 4})]
    assert closest(options, 39) == (20, {"k": 2})
    assert closest(options, 39, nearest=True) == (40, {"k": 4})
    assert closest(options, 1000, nearest=True) == (40, {"k": 4})
    assert closest(options, "20") == (20, {"k": 2})
    with pytest.raises(BudgetError, match="budget of 5 is infeasible for knob: achievable counts range from 10 to 40"):
        closest(options, 5, what="knob")
