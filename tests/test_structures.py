"""Structured families against independent oracles (scipy / numpy), counts, init, dtypes."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracles import (
    ORACLES,
    displacement_rank,
    distinct_real_frequencies,
    oracle_blocks,
    oracle_dense,
    rel_err,
    to_numpy,
)
from torch import nn

from surmlab.budget import Target, layer_count
from surmlab.structures import FAMILIES, make

# Every family in the registry; what a test needs to know about one comes from its oracle (tests/oracles.py).
FAMILY_NAMES = list(FAMILIES)
FFT_FAMILIES = ["circulant", "toeplitz", "symmetric_toeplitz", "ldr", "circulant_chain", "sparse_spectrum"]

# Square, fused-qkv-like, MLP-down-like, odd-sized and small rectangular layers (out, in).
SHAPES = [(768, 768), (2304, 768), (768, 3072), (37, 37), (15, 21)]


def hyper_for(family, shape):
    assert family in ORACLES, f"family {family!r} has no oracle in tests/oracles.py"
    return ORACLES[family].example(*shape)


def randomize(module, std=1.0):
    """Fill every parameter with normal noise (the zero init would make every check trivial)."""
    for p in module.parameters():
        nn.init.normal_(p, std=std)
    return module


def build(family, shape, **override):
    out_features, in_features = shape
    return randomize(make(family, in_features, out_features, **{**hyper_for(family, shape), **override}))


def build_half_test_structure(family):
    """A 48x96 layer (of 16-blocks where the family has blocks) for the dtype tests."""
    hyper = hyper_for(family, (48, 96))
    return build(family, (48, 96), **({"block_size": 16} if "block_size" in hyper else {}))


def test_every_family_has_an_oracle():
    """The shared tests cover every registered family: each needs its oracle in tests/oracles.py."""
    missing = sorted(set(FAMILIES) - set(ORACLES))
    assert not missing, f"families without an oracle in tests/oracles.py: {missing}"
    assert not set(ORACLES) - set(FAMILIES), f"oracles of unregistered families: {sorted(set(ORACLES) - set(FAMILIES))}"


# -- forward == dense, dense == oracle ----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_forward_matches_dense(family, shape):
    """The activation-space product equals x @ dense().T (reference in float64)."""
    m = build(family, shape)
    x = torch.randn(2, 3, shape[1])
    with torch.no_grad():
        got = m(x)
        want = x.double() @ m.dense().double().T
    assert got.shape == (2, 3, shape[0])
    assert got.dtype == torch.float32
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dense_matches_oracle(family, shape):
    """dense() has the family's structure, built from the parameters by scipy/numpy."""
    m = build(family, shape)
    with torch.no_grad():
        dense = m.dense()
    assert dense.shape == shape
    assert rel_err(dense, oracle_dense(m)) < 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ldr_displacement_rank(shape):
    """Every LDR block M has rank(Z_1 M - M Z_{-1}) <= rank, while a dense block does not."""
    m = build("ldr", shape)
    rank = m.hyper["rank"]
    p, q, n = m.out_features // m.hyper["block_size"], m.in_features // m.hyper["block_size"], m.hyper["block_size"]
    with torch.no_grad():
        dense = to_numpy(m.dense())
    for a in range(p):
        for b in range(q):
            assert displacement_rank(dense[a * n : (a + 1) * n, b * n : (b + 1) * n]) <= rank, (a, b)
    if rank < n:  # the check can fail: an unstructured block has full displacement rank
        assert displacement_rank(np.random.default_rng(0).standard_normal((n, n))) > rank


def test_toeplitz_layout_is_documented_one():
    """weight = [t_0..t_{n-1}, t_{-(n-1)}..t_{-1}]: S[i, j] = t_{i-j}, checked entry by entry."""
    n = 4
    m = make("toeplitz", n, n, block_size=n)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[[0.0, 1, 2, 3, -3, -2, -1]]]))  # t_k = k
    dense = m.dense().detach()
    for i in range(n):
        for j in range(n):
            assert abs(dense[i, j] - (i - j)) < 1e-5, (i, j)


def test_ldr_skew_circulant_definition():
    """With g = e_0 (C = identity) and rank 1, an LDR block is the skew-circulant Z(h) itself."""
    n = 5
    m = make("ldr", n, n, block_size=n, rank=1)
    h = torch.arange(1.0, n + 1)
    with torch.no_grad():
        m.g.zero_()
        m.g[0, 0, 0, 0] = 1.0
        m.h.copy_(h.view(1, 1, 1, n))
    dense = m.dense().detach()
    for i in range(n):
        for j in range(n):
            expected = h[i - j] if i >= j else -h[i - j + n]
            assert abs(dense[i, j] - expected) < 1e-5, (i, j)


# -- init, gradients, counts --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(37, 37), (15, 21), (2304, 768)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_zero_at_init_with_nonzero_gradient(family, shape):
    """S = 0 at construction, so the model is unchanged, but a loss still has a gradient."""
    out_features, in_features = shape
    m = make(family, in_features, out_features, **hyper_for(family, shape))
    x = torch.randn(2, 3, in_features)
    assert torch.count_nonzero(m.dense()) == 0
    y = m(x)
    assert torch.count_nonzero(y) == 0
    loss = (y * torch.randn_like(y)).sum()
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_parameter_counts(family, shape):
    """numel == num_parameters == budget.layer_count == the closed form of the README's family table."""
    out_features, in_features = shape
    m = make(family, in_features, out_features, **hyper_for(family, shape))
    actual = sum(p.numel() for p in m.parameters())
    assert actual == type(m).num_parameters(in_features, out_features, **m.hyper)
    assert actual == layer_count(family, Target("layer", out_features, in_features), m.hyper)
    assert actual == ORACLES[family].count(out_features, in_features, m.hyper)
    # the adapter mode adds a bias of size out
    assert layer_count(family, Target("layer", out_features, in_features), m.hyper, "adapter") == actual + out_features


def test_kronecker_default_factors_cover_the_layer():
    """Default factors give A (m1 x n1), B ((out/m1) x (in/n1)) whose Kronecker product is out x in."""
    m = make("kronecker", 768, 2304)
    (m1, n1), (m2, n2) = m.a.shape, m.b.shape
    assert (m1 * m2, n1 * n2) == (2304, 768)
    assert m.hyper["factors"] == [m1, n1]


# -- hypothesis: random small shapes ------------------------------------------------------------------


@st.composite
def small_structures(draw):
    """A registered family on a small layer with any of its valid settings (from its oracle)."""
    family = draw(st.sampled_from(FAMILY_NAMES))
    n, p, q = draw(st.integers(1, 8)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    out_features, in_features = p * n, q * n
    hyper = draw(st.sampled_from(ORACLES[family].settings([(out_features, in_features)])))
    return family, out_features, in_features, hyper


@given(small_structures(), st.integers(1, 3))
def test_property_forward_dense_oracle_counts(spec, tokens):
    """For any small shape: forward == dense == oracle, and every count agrees."""
    family, out_features, in_features, hyper = spec
    m = randomize(make(family, in_features, out_features, **hyper))
    x = torch.randn(2, tokens, in_features)
    with torch.no_grad():
        got, dense = m(x), m.dense()
    assert rel_err(got, x.double() @ dense.double().T) < 1e-5
    assert rel_err(dense, oracle_dense(m)) < 1e-5
    actual = sum(p.numel() for p in m.parameters())
    assert actual == type(m).num_parameters(in_features, out_features, **hyper)
    assert actual == layer_count(family, Target("t", out_features, in_features), hyper)
    assert actual == ORACLES[family].count(out_features, in_features, m.hyper)
    if family == "ldr":
        n = hyper["block_size"]
        blocks, *_ = oracle_blocks(m)
        d = to_numpy(dense)
        for a, b in blocks:
            assert displacement_rank(d[a * n : (a + 1) * n, b * n : (b + 1) * n]) <= hyper["rank"]


# -- half precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FFT_FAMILIES)
def test_fft_families_under_bf16_autocast(family):
    """Under CPU bf16 autocast the FFT runs in fp32: output dtype is the input's and the result ~ fp32."""
    m = build_half_test_structure(family)
    x = torch.randn(2, 5, 96)
    with torch.no_grad():
        reference = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x)
    assert got.dtype == torch.float32
    assert rel_err(got, reference) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("family", FFT_FAMILIES)
def test_fft_families_half_inputs(family, dtype):
    """Half-precision inputs (with and without autocast) return that dtype, close to the fp32 product."""
    m = build_half_test_structure(family)
    x = torch.randn(2, 5, 96).to(dtype)
    with torch.no_grad():
        reference = m(x.float())
        plain = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = m(x)
    for got in (plain, autocast):
        assert got.dtype == dtype
        assert torch.isfinite(got).all()
        assert rel_err(got, reference) < 1e-2


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_takes_bf16_inputs(family):
    """bf16 activations (as under a bf16 model) come back in bf16, finite and close to the fp32 product."""
    m = build_half_test_structure(family)
    x = torch.randn(2, 5, 96)
    with torch.no_grad():
        reference, got = m(x), m(x.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == reference.shape
    assert torch.isfinite(got).all()
    assert rel_err(got, reference) < 3e-2


# -- kronecker never materialises the product --------------------------------------------------------


def test_kronecker_forward_does_not_call_torch_kron(monkeypatch):
    """The vec trick: forward (and its backward) work with torch.kron disabled."""
    m = build("kronecker", (2304, 768), factors=[48, 32])
    x = torch.randn(2, 3, 768)
    want = x.double() @ torch.from_numpy(oracle_dense(m)).T

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.kron called in the Kronecker forward")

    monkeypatch.setattr(torch, "kron", forbidden)
    y = m(x)
    y.sum().backward()
    assert rel_err(y, want) < 1e-5
    assert m.a.grad is not None and m.b.grad is not None


def test_kronecker_forward_cost_is_not_dense():
    """activation_flops of the vec trick is far below a dense out x in product for a large layer."""
    m = make("kronecker", 768, 2304, factors=[48, 32])
    assert m.activation_flops(100) < 0.1 * 2 * 100 * 768 * 2304


# -- errors ------------------------------------------------------------------------------------------


def test_unknown_family_lists_known():
    with pytest.raises(ValueError, match="unknown structure 'foo'") as info:
        make("foo", 4, 4)
    for name in FAMILY_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("family", [f for f in ORACLES if "block_size" in hyper_for(f, (15, 21))])
def test_non_dividing_block_size_names_valid_options(family):
    """block_size=4 on a 15x21 layer: the message names the size, the layer and the divisors 1, 3."""
    with pytest.raises(ValueError) as info:
        make(family, 21, 15, block_size=4)
    message = str(info.value)
    assert "block_size=4" in message and "15x21" in message
    assert message.rstrip().endswith("1, 3")


def test_rank_too_large_is_rejected():
    with pytest.raises(ValueError, match="rank=9"):
        make("ldr", 8, 8, block_size=8, rank=9)
    with pytest.raises(ValueError, match="rank=16"):
        make("lowrank", 15, 21, rank=16)


def test_kronecker_factors_must_divide():
    with pytest.raises(ValueError, match=r"factors=\(4, 4\) do not fit the 15x21 layer"):
        make("kronecker", 21, 15, factors=[4, 4])


@pytest.mark.parametrize(("family", "hyper"), [("lowrank", {"block_size": 3}), ("circulant", {"rank": 2})])
def test_foreign_hyper_parameter_is_named(family, hyper):
    """A hyper-parameter the family does not take is rejected, naming it (resolve_hyper: ValueError)."""
    (key,) = hyper
    with pytest.raises(ValueError, match=key):
        FAMILIES[family].num_parameters(21, 15, **hyper)
    with pytest.raises(ValueError, match=f"{family} takes .*{key}"):
        make(family, 21, 15, **hyper)


def test_circulant_first_column_is_the_kernel():
    """Sanity of the circulant convention on a hand example: C(c) @ e_0 is c itself."""
    m = make("circulant", 5, 5, block_size=5)
    c = torch.arange(1.0, 6.0)
    with torch.no_grad():
        m.weight.copy_(c.view(1, 1, 5))
        y = m(torch.eye(5)[0])
    assert torch.allclose(y, c) and math.isclose(y.sum().item(), 15.0)


# -- gradients in float64 ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gradcheck_fp64(family):
    """Both products (forward and dense) have exact gradients for x and every parameter (finite differences)."""
    m = randomize(make(family, 12, 8, **hyper_for(family, (8, 12)))).double()
    names = [name for name, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in m.parameters())
    x = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)

    def forward(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x,))

    def dense(*ps):
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (), strict=False)

    assert torch.autograd.gradcheck(forward, (x, *params))
    m.forward = m.dense  # functional_call calls the module: route it to dense() for the second check
    assert torch.autograd.gradcheck(dense, params)


# -- monarch ------------------------------------------------------------------------------------------


def test_monarch_rank_reaches_nblocks_times_block_rank():
    """At LoRA rank 2's count, a 4-block Monarch has rank 8 (LoRA's is 2): the count does not cap the rank."""
    m = build("monarch", (64, 64), nblocks=4, block_rank=2)
    assert sum(p.numel() for p in m.parameters()) == 2 * (64 + 64)
    dense = to_numpy(m.dense())  # computed in fp32: singular values below 1e-5 of the largest are zero
    assert np.linalg.matrix_rank(dense, tol=1e-5 * np.linalg.norm(dense, 2)) == 8


def test_monarch_bad_hyper_names_the_feasible_values():
    with pytest.raises(ValueError, match=r"nblocks=5 does not divide the 15x21 layer; .*: 1, 3$"):
        make("monarch", 21, 15, nblocks=5)
    with pytest.raises(ValueError, match=r"block_rank=6 is out of range for nblocks=3 .* so 1\.\.5$"):
        make("monarch", 21, 15, nblocks=3, block_rank=6)
    with pytest.raises(ValueError, match="block_rank must be a positive integer, got 0"):
        make("monarch", 21, 15, block_rank=0)


# -- block low rank ------------------------------------------------------------------------------------


def test_block_lowrank_blocks_have_rank_r_over_k_and_s_reaches_k_r():
    """A 3 x 3 grid at rank 6: every block has rank 2, S has rank 18 (LoRA at the same count: 6)."""
    m = build("block_lowrank", (48, 48), grid=3, rank=6)
    assert sum(p.numel() for p in m.parameters()) == 6 * (48 + 48)
    dense = to_numpy(m.dense())
    tol = 1e-5 * np.linalg.norm(dense, 2)
    assert np.linalg.matrix_rank(dense, tol=tol) == 18
    corners = [(i, j) for i in (0, 16, 32) for j in (0, 16, 32)]
    assert all(np.linalg.matrix_rank(dense[i : i + 16, j : j + 16], tol=tol) == 2 for i, j in corners)


def test_block_lowrank_bad_hyper_names_the_feasible_values():
    with pytest.raises(ValueError, match=r"grid=2 does not divide the 15x21 layer into 2x2 blocks; .*: 1, 3$"):
        make("block_lowrank", 21, 15, grid=2)
    with pytest.raises(ValueError, match=r"rank=4 is out of range for grid=3 .* multiple of 3 from 3 to 15$"):
        make("block_lowrank", 21, 15, grid=3, rank=4)
    with pytest.raises(ValueError, match=r"rank=18 is out of range"):
        make("block_lowrank", 21, 15, grid=3, rank=18)


# -- circulant-diagonal chains --------------------------------------------------------------------------


def test_chain_of_one_is_the_circulant():
    """chain_length=1 is the circulant family: same count, same S from the same kernels."""
    chain = build("circulant_chain", (15, 21), block_size=3, chain_length=1)
    circulant = make("circulant", 21, 15, block_size=3)
    with torch.no_grad():
        circulant.weight.copy_(chain.kernels[:, :, 0])
    assert sum(p.numel() for p in chain.parameters()) == sum(p.numel() for p in circulant.parameters())
    assert rel_err(chain.dense(), circulant.dense()) < 1e-6


def test_chain_is_more_than_one_circulant():
    """A two-factor chain block is not circulant (its diagonals are not constant), unlike one factor."""
    block = to_numpy(build("circulant_chain", (8, 8), block_size=8, chain_length=2).dense())
    assert np.ptp(np.diagonal(block)) > 1e-3


def test_chain_bad_hyper_names_the_feasible_values():
    with pytest.raises(ValueError, match=r"chain_length=3 is out of range for block_size=3: 1\.\.2 "):
        make("circulant_chain", 21, 15, block_size=3, chain_length=3)
    with pytest.raises(ValueError, match="chain_length must be a positive integer, got 0"):
        make("circulant_chain", 21, 15, chain_length=0)


# -- sparse spectrum -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 8), (7, 5), (8, 3), (1, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_sparse_spectrum_draws_distinct_real_frequencies(shape):
    """At the largest count the draw is one frequency of each pair {(u, v), (-u, -v)}: S can be any real matrix."""
    out_features, in_features = shape
    limit = distinct_real_frequencies(out_features, in_features)
    m = build("sparse_spectrum", shape, coefficients=limit)
    pairs = {min((u, v), ((-u) % out_features, (-v) % in_features)) for u, v in m.frequencies.tolist()}
    assert len(pairs) == limit
    with pytest.raises(ValueError, match=rf"coefficients={limit + 1} is out of range .*: 1\.\.{limit} "):
        make("sparse_spectrum", in_features, out_features, coefficients=limit + 1)
    # the cosine matrices are orthonormal: the coefficients are coordinates of S
    dense = to_numpy(m.dense())
    assert abs(np.linalg.norm(dense) - np.linalg.norm(to_numpy(m.coefficients))) < 1e-5 * np.linalg.norm(dense)


def test_sparse_spectrum_draw_is_seeded_nested_and_pinned():
    """Same seed and shape: same frequencies (pinned, since saved adapters rely on them); the draw of n is the
    first n of a larger draw; another seed draws others."""
    first = make("sparse_spectrum", 768, 768, coefficients=5).frequencies.tolist()
    assert first == [[80, 335], [660, 230], [459, 214], [585, 33], [545, 275]]
    assert make("sparse_spectrum", 768, 768, coefficients=50).frequencies[:5].tolist() == first
    assert make("sparse_spectrum", 768, 768, coefficients=5, seed=1).frequencies.tolist() != first
    assert make("sparse_spectrum", 3072, 768, coefficients=3, seed=777).frequencies.tolist() == [
        [453, 717],
        [86, 1484],
        [759, 161],
    ]


def test_sparse_spectrum_product_never_forms_s(monkeypatch):
    """The training product (forward and backward) works with dense() and every 2-D FFT disabled."""
    m = build("sparse_spectrum", (240, 96), coefficients=500)
    x = torch.randn(2, 3, 96)
    want = x.double() @ torch.from_numpy(oracle_dense(m)).T

    def forbidden(*args, **kwargs):
        raise AssertionError("S materialised in the sparse-spectrum product")

    for name in ("ifft2", "fft2", "irfft2", "rfft2", "ifftn", "fftn"):
        monkeypatch.setattr(torch.fft, name, forbidden)
    monkeypatch.setattr(type(m), "dense", forbidden)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert rel_err(y, want) < 1e-5
    assert m.coefficients.grad is not None and m.coefficients.grad.abs().sum() > 0


def test_sparse_spectrum_state_round_trip_and_foreign_draw():
    """The draw is saved with the state: a reload gives the same outputs; a draw that does not fit the layer
    is refused by name."""
    m = build("sparse_spectrum", (15, 21), coefficients=30, seed=3)
    other = make("sparse_spectrum", 21, 15, coefficients=30)  # seed 0: other frequencies
    other.load_state_dict(m.state_dict())
    x = torch.randn(4, 21)
    assert torch.equal(other.frequencies, m.frequencies)
    assert torch.equal(other(x), m(x))
    state = m.state_dict()
    with pytest.raises(ValueError, match=r"15x21 layer: saved shape \[12, 2\], expected \[30, 2\]"):
        other.load_state_dict({**state, "frequencies": state["frequencies"][:12]})
    bad = state["frequencies"].clone()
    bad[0] = torch.tensor([15, 0])
    with pytest.raises(ValueError, match=r"\(15, 0\) is not one of its frequencies"):
        other.load_state_dict({**state, "frequencies": bad})
    bad[0] = bad[1]
    with pytest.raises(ValueError, match="a frequency is repeated"):
        other.load_state_dict({**state, "frequencies": bad})


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_adapter_buffers_are_buffers_checked_against_the_layer(family):
    """What a family declares for the adapter file is a real, persistent buffer; a saved one of another
    shape is refused by name (sparse_spectrum: its drawn frequencies, also checked for validity)."""
    m = make(family, 16, 8)
    persistent = dict(m.state_dict())
    for name in type(m).adapter_buffers:
        own = dict(m.named_buffers())[name]
        assert name in persistent and name not in dict(m.named_parameters())
        m.check_adapter_buffer(name, own.clone())  # its own draw fits
        with pytest.raises(ValueError, match=rf"{family} {name} for the 8x16 layer: saved shape"):
            m.check_adapter_buffer(name, own[:1].clone())
    assert (family == "sparse_spectrum") == bool(type(m).adapter_buffers)


def test_sparse_spectrum_bad_seed():
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 2\\*\\*64 - 1, got -1"):
        make("sparse_spectrum", 8, 8, seed=-1)


def test_sparse_spectrum_is_peft_fourierft_at_the_same_frequencies():
    """PEFT's FourierFT (its dense ifft2 delta) given our frequencies and our coefficients, rescaled by our
    unit-norm weights and its scaling, is our S: the same update, by PEFT's own code."""
    from peft import FourierFTConfig, inject_adapter_in_model

    out_features, in_features, n = 24, 36, 50
    ours = build("sparse_spectrum", (out_features, in_features), coefficients=n, seed=5)
    holder = nn.Sequential()
    holder.add_module("layer", nn.Linear(in_features, out_features))
    inject_adapter_in_model(FourierFTConfig(n_frequency=n, target_modules=["layer"]), holder)
    theirs = holder.layer
    scaling = theirs.fourierft_scaling["default"]
    with torch.no_grad():
        theirs.indices["default"] = ours.frequencies.T.clone()
        coefficients = ours.coefficients * ours.weights(torch.float32) * out_features * in_features / scaling
        theirs.fourierft_spectrum["default"].copy_(coefficients)
        assert rel_err(theirs.get_delta_weight("default"), ours.dense()) < 1e-5
