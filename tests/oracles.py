"""Reference implementations written from the definitions (scipy/numpy), independent of surmlab's code.

Parameter layouts follow the documented conventions: a block grid ``(p, q, ...)`` where block
``(a, b)`` occupies rows ``a*n:(a+1)*n`` and columns ``b*n:(b+1)*n``.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import torch


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def conv_block(family: str, w: np.ndarray) -> np.ndarray:
    """One ``n x n`` block of the circulant / Toeplitz / symmetric-Toeplitz families."""
    if family == "circulant":
        return scipy.linalg.circulant(w)
    if family == "toeplitz":
        # w = [t_0 .. t_{n-1}, t_{-(n-1)} .. t_{-1}]
        n = (len(w) + 1) // 2
        first_col = w[:n]
        first_row = np.concatenate([w[:1], w[n:][::-1]])  # [t_0, t_{-1}, ..., t_{-(n-1)}]
        return scipy.linalg.toeplitz(first_col, first_row)
    if family == "symmetric_toeplitz":
        return scipy.linalg.toeplitz(w)
    raise ValueError(family)


def skew_circulant(h: np.ndarray) -> np.ndarray:
    """``Z[i, j] = h[i - j]`` for ``i >= j``, ``-h[i - j + n]`` above the diagonal."""
    n = len(h)
    i, j = np.indices((n, n))
    # (i - j) % n is i - j on and below the diagonal; (i - j + n) % n is i - j + n above it.
    return np.where(i >= j, h[(i - j) % n], -h[(i - j + n) % n])


def ldr_block(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``sum_r C(g_r) Z(h_r)`` for ``g, h`` of shape ``(rank, n)``."""
    return sum(scipy.linalg.circulant(g_r) @ skew_circulant(h_r) for g_r, h_r in zip(g, h, strict=True))


def shift(n: int, f: float) -> np.ndarray:
    """``Z_f``: the down-shift matrix with ``f`` in the top-right corner."""
    z = np.zeros((n, n))
    z[np.arange(1, n), np.arange(n - 1)] = 1.0
    z[0, n - 1] += f
    return z


def displacement_rank(block: np.ndarray, rel_tol: float = 1e-4) -> int:
    """``rank(Z_1 M - M Z_{-1})`` with singular values below ``rel_tol * ||M||_2`` counted as zero."""
    n = block.shape[0]
    disp = shift(n, 1.0) @ block - block @ shift(n, -1.0)
    scale = max(np.linalg.norm(block, 2), 1e-30)
    return int(np.linalg.matrix_rank(disp, tol=rel_tol * scale))


def tile(blocks: dict[tuple[int, int], np.ndarray], p: int, q: int, n: int) -> np.ndarray:
    out = np.zeros((p * n, q * n))
    for (a, b), block in blocks.items():
        out[a * n : (a + 1) * n, b * n : (b + 1) * n] = block
    return out


def block_grid(m) -> tuple[int, int, int]:
    n = m.hyper["block_size"]
    return m.out_features // n, m.in_features // n, n


def oracle_blocks(m) -> tuple[dict[tuple[int, int], np.ndarray], int, int, int]:
    """The ``n x n`` blocks of a block family, built from its parameters."""
    p, q, n = block_grid(m)
    if m.family == "ldr":
        g, h = to_numpy(m.g), to_numpy(m.h)
        blocks = {(a, b): ldr_block(g[a, b], h[a, b]) for a in range(p) for b in range(q)}
    else:
        w = to_numpy(m.weight)
        blocks = {(a, b): conv_block(m.family, w[a, b]) for a in range(p) for b in range(q)}
    return blocks, p, q, n


# -- one oracle per family -----------------------------------------------------------------------------
#
# Every family-parametrised test (structures, budget, tuner) runs over ``surmlab.structures.FAMILIES``; what
# those tests need to know about a family comes from its entry here, written from the family's definition
# (the README's family table), never from its code. A new family is its structure module, its registry
# line and an ``Oracle`` below; ``test_every_family_has_an_oracle`` names a family that lacks one.

Shapes = Sequence[tuple[int, int]]  # (out, in) of each layer


@dataclass(frozen=True)
class Oracle:
    """An independent description of one family.

    ``dense(m)``: ``S`` built from the module's parameters by the definition (numpy / scipy).
    ``count(out, in, hyper)``: the closed form of the README's family table.
    ``settings(shapes)``: every hyper-parameter setting valid for all ``shapes`` at once (what the budget
    solver may choose among), enumerated from the definition.
    ``example(out, in)``: a non-trivial setting for one layer, for the shared checks.
    """

    dense: Callable[[Any], np.ndarray]
    count: Callable[[int, int, dict], int]
    settings: Callable[[Shapes], list[dict]]
    example: Callable[[int, int], dict]


def all_divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def shared_block_sizes(shapes: Shapes) -> list[int]:
    return all_divisors(math.gcd(*[d for shape in shapes for d in shape]))


def example_block(out_features: int, in_features: int) -> int:
    """The largest block size up to 256 that tiles the layer (a grid of several blocks on big layers)."""
    return max(d for d in all_divisors(math.gcd(out_features, in_features)) if d <= 256)


def grid_count(out_features: int, in_features: int, n: int, per_block: int) -> int:
    return (out_features // n) * (in_features // n) * per_block


def _conv_oracle(per_block: Callable[[int], int]) -> Oracle:
    return Oracle(
        dense=lambda m: tile(*oracle_blocks(m)),
        count=lambda o, i, h: grid_count(o, i, h["block_size"], per_block(h["block_size"])),
        settings=lambda shapes: [{"block_size": n} for n in shared_block_sizes(shapes)],
        example=lambda o, i: {"block_size": example_block(o, i)},
    )


ORACLES: dict[str, Oracle] = {
    "circulant": _conv_oracle(lambda n: n),
    "symmetric_toeplitz": _conv_oracle(lambda n: n),
    "toeplitz": _conv_oracle(lambda n: 2 * n - 1),
    "ldr": Oracle(
        dense=lambda m: tile(*oracle_blocks(m)),
        count=lambda o, i, h: grid_count(o, i, h["block_size"], 2 * h["rank"] * h["block_size"]),
        settings=lambda shapes: [
            {"block_size": n, "rank": r} for n in shared_block_sizes(shapes) for r in range(1, n + 1)
        ],
        example=lambda o, i: {"block_size": example_block(o, i), "rank": min(3, example_block(o, i))},
    ),
    "kronecker": Oracle(
        dense=lambda m: np.kron(to_numpy(m.a), to_numpy(m.b)),
        count=lambda o, i, h: h["factors"][0] * h["factors"][1] + (o // h["factors"][0]) * (i // h["factors"][1]),
        settings=lambda shapes: [
            {"factors": [m1, n1]}
            for m1 in all_divisors(math.gcd(*[s[0] for s in shapes]))
            for n1 in all_divisors(math.gcd(*[s[1] for s in shapes]))
        ],
        example=lambda o, i: {},  # the default factor shape (fewest parameters)
    ),
    "lowrank": Oracle(
        dense=lambda m: to_numpy(m.b) @ to_numpy(m.a),
        count=lambda o, i, h: h["rank"] * (i + o),
        settings=lambda shapes: [{"rank": r} for r in range(1, min(min(s) for s in shapes) + 1)],
        example=lambda o, i: {"rank": min(8, o, i)},
    ),
}


def monarch_dense(m) -> np.ndarray:
    """``P2 blockdiag(R) P1 blockdiag(L)`` with the permutations written as 0/1 matrices: ``P1`` sends
    entry ``a k + j`` of the ``k r`` first-factor outputs (block-major) to input ``a`` of ``R_j`` (position
    ``j r + a``); ``P2`` sends output ``o`` of ``R_j`` (position ``j out/k + o``) to row ``o k + j``."""
    left, right = to_numpy(m.left), to_numpy(m.right)  # (k, r, in/k), (k, out/k, r)
    k, r, _ = left.shape
    s = right.shape[1]
    p1 = np.zeros((k * r, k * r))
    for j in range(k):
        for a in range(r):
            p1[j * r + a, a * k + j] = 1.0
    p2 = np.zeros((k * s, k * s))
    for j in range(k):
        for o in range(s):
            p2[o * k + j, j * s + o] = 1.0
    return p2 @ scipy.linalg.block_diag(*right) @ p1 @ scipy.linalg.block_diag(*left)


def monarch_settings(shapes: Shapes) -> list[dict]:
    return [
        {"nblocks": k, "block_rank": r}
        for k in shared_block_sizes(shapes)
        for r in range(1, min(min(o, i) // k for o, i in shapes) + 1)
    ]


ORACLES["monarch"] = Oracle(
    dense=monarch_dense,
    count=lambda o, i, h: h["block_rank"] * (o + i),
    settings=monarch_settings,
    example=lambda o, i: {"nblocks": 4, "block_rank": min(3, min(o, i) // 4)} if math.gcd(o, i) % 4 == 0 else {},
)


def block_lowrank_dense(m) -> np.ndarray:
    """Block ``(i, j)`` of the ``k x k`` grid is ``B_ij A_ij``."""
    a, b = to_numpy(m.a), to_numpy(m.b)  # (k, k, r/k, in/k), (k, k, out/k, r/k)
    return np.block([[b[i, j] @ a[i, j] for j in range(a.shape[1])] for i in range(a.shape[0])])


ORACLES["block_lowrank"] = Oracle(
    dense=block_lowrank_dense,
    count=lambda o, i, h: h["rank"] * (o + i),
    settings=lambda shapes: [
        {"grid": k, "rank": k * s}
        for k in shared_block_sizes(shapes)
        if k > 1 or shared_block_sizes(shapes) == [1]  # a 1 x 1 grid is LoRA: a budget choice only when alone
        for s in range(1, min(min(o, i) // k for o, i in shapes) + 1)
    ],
    example=lambda o, i: {"grid": 3, "rank": 6} if math.gcd(o, i) % 3 == 0 and min(o, i) >= 6 else {},
)


def circulant_chain_dense(m) -> np.ndarray:
    """Each block is ``C(c_0) diag(a_1) C(c_1) ... diag(a_{m-1}) C(c_{m-1})``; the inner factors are stored as
    offsets from the identity (``a_j - 1``, ``sqrt(n) (c_j - e_0)``)."""
    p, q, n = block_grid(m)
    c = to_numpy(m.kernels)  # (p, q, m, n)
    a = to_numpy(m.diagonals) if m.diagonals is not None else np.zeros((p, q, 0, n))
    blocks = {}
    for i in range(p):
        for j in range(q):
            block = scipy.linalg.circulant(c[i, j, 0])
            for f in range(1, c.shape[2]):
                inner = c[i, j, f] / np.sqrt(n) + np.eye(n)[0]
                block = block @ np.diag(1 + a[i, j, f - 1]) @ scipy.linalg.circulant(inner)
            blocks[i, j] = block
    return tile(blocks, p, q, n)


ORACLES["circulant_chain"] = Oracle(
    dense=circulant_chain_dense,
    count=lambda o, i, h: grid_count(o, i, h["block_size"], (2 * h["chain_length"] - 1) * h["block_size"]),
    settings=lambda shapes: [
        {"block_size": n, "chain_length": m} for n in shared_block_sizes(shapes) for m in range(1, (n + 1) // 2 + 1)
    ],
    example=lambda o, i: {"block_size": example_block(o, i), "chain_length": min(3, (example_block(o, i) + 1) // 2)},
)


def sparse_spectrum_dense(m) -> np.ndarray:
    """``S[j, l] = sum_k w_k c_k cos(2 pi (u_k j / out + v_k l / in))`` with ``w_k`` making each cosine matrix of unit
    Frobenius norm (``1 / sqrt(out in)`` where the cosine is +-1 everywhere, else ``sqrt(2 / (out in))``)."""
    out_features, in_features = m.out_features, m.in_features
    j, col = np.arange(out_features), np.arange(in_features)
    s = np.zeros((out_features, in_features))
    for (u, v), c in zip(m.frequencies.tolist(), to_numpy(m.coefficients), strict=True):
        row_angle, col_angle = 2 * np.pi * u * j / out_features, 2 * np.pi * v * col / in_features
        # cos(a + b) = cos a cos b - sin a sin b
        cosine = np.outer(np.cos(row_angle), np.cos(col_angle)) - np.outer(np.sin(row_angle), np.sin(col_angle))
        s += c * cosine / np.linalg.norm(cosine)
    return s


def distinct_real_frequencies(out_features: int, in_features: int) -> int:
    """Frequencies ``(u, v)`` up to ``(u, v) ~ (-u, -v)``, counted by brute force."""
    pairs = [(u, v) for u in range(out_features) for v in range(in_features)]
    return len({min((u, v), ((-u) % out_features, (-v) % in_features)) for u, v in pairs})


def frequency_limit(out_features: int, in_features: int) -> int:
    if out_features * in_features <= 4096:
        return distinct_real_frequencies(out_features, in_features)
    # big layers: every (u, v) pairs with (-u, -v), and 1, 2 or 4 of them pair with themselves
    return (out_features * in_features + (1 + (out_features % 2 == 0)) * (1 + (in_features % 2 == 0))) // 2


ORACLES["sparse_spectrum"] = Oracle(
    dense=sparse_spectrum_dense,
    count=lambda o, i, h: h["coefficients"],
    settings=lambda shapes: [{"coefficients": n} for n in range(1, min(frequency_limit(o, i) for o, i in shapes) + 1)],
    example=lambda o, i: {"coefficients": min(40, frequency_limit(o, i)), "seed": 7},
)


def oracle_dense(m) -> np.ndarray:
    """``S`` of any family, from its parameters and the family's definition."""
    return ORACLES[m.family].dense(m)


def expected_count(family: str, out_features: int, in_features: int, hyper: dict) -> int:
    """Closed-form parameter count from the README's family table."""
    return ORACLES[family].count(out_features, in_features, hyper)


def rel_err(got, want) -> float:
    """``max |got - want| / max |want|`` in float64."""
    got = got.detach().double().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=float)
    want = want.detach().double().cpu().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=float)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / (scale if scale > 0 else 1.0))
