"""Reference implementations written from the definitions (scipy/numpy), independent of surmlab's code.

Parameter layouts follow the documented conventions: a block grid ``(p, q, ...)`` where block
``(a, b)`` occupies rows ``a*n:(a+1)*n`` and columns ``b*n:(b+1)*n``.
"""

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


def oracle_dense(m) -> np.ndarray:
    """``S`` of any family, from its parameters and the family's definition."""
    if m.family == "kronecker":
        return np.kron(to_numpy(m.a), to_numpy(m.b))
    if m.family == "lowrank":
        return to_numpy(m.b) @ to_numpy(m.a)
    blocks, p, q, n = oracle_blocks(m)
    return tile(blocks, p, q, n)


def expected_count(family: str, out_features: int, in_features: int, hyper: dict) -> int:
    """Closed-form parameter count from the README's family table."""
    if family in ("circulant", "symmetric_toeplitz", "toeplitz", "ldr"):
        n = hyper["block_size"]
        blocks = (out_features // n) * (in_features // n)
        per_block = {"circulant": n, "symmetric_toeplitz": n, "toeplitz": 2 * n - 1}.get(family)
        return blocks * (per_block if per_block is not None else 2 * hyper["rank"] * n)
    if family == "kronecker":
        m1, n1 = hyper["factors"]
        return m1 * n1 + (out_features // m1) * (in_features // n1)
    if family == "lowrank":
        return hyper["rank"] * (in_features + out_features)
    raise ValueError(family)


def rel_err(got, want) -> float:
    """``max |got - want| / max |want|`` in float64."""
    got = got.detach().double().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=float)
    want = want.detach().double().cpu().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=float)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / (scale if scale > 0 else 1.0))
