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
# # Lesson 1: Structured matrices
#
# LoRA adds a low-rank product `B A` to a frozen weight: `2 n r` numbers buy rank at most `r`. The lab's
# structured updates spend their numbers differently. In this lesson you build five structures from their
# definitions in a few lines each, check that the *fast* product (FFTs, reshapes) equals multiplying by the
# dense matrix, and compare parameter count, rank and singular values with low rank.
#
# **You will learn** what a circulant, Toeplitz, low-displacement-rank (LDR), Kronecker and Monarch-style
# matrix is; why each has a fast product; and why full rank at LoRA's parameter count is possible.
#
# **Time**: about 2 minutes to run on a laptop CPU, 30-45 minutes to read and do the three exercises.
# Solutions are in `solutions.py` beside this notebook: try first.
#
# **Change and rerun**: `n` (the matrix size; a perfect square such as 16, 64 or 256) and `seed` in the
# parameters cell below.

# %%
from surmlab.display import quiet, show

quiet()  # before the lab's imports: no progress-widget warnings in the outputs

import checks  # the exercises' check cells, beside this notebook
import numpy as np
import torch

from surmlab import make
from surmlab.plots import heatmap_grid, spectra

# %% tags=["parameters"]
n = 64  # matrix size: a perfect square (16, 64, 256) so that Kronecker and Monarch blocks are square
seed = 0  # change it: every check below must still pass

# %%
k = round(n**0.5)
assert k * k == n, f"n must be a perfect square, got {n}"
rng = np.random.default_rng(seed)
x = rng.standard_normal(n)  # the vector every fast product is tested on


def check_product(name: str, fast: np.ndarray, dense: np.ndarray) -> None:
    """The lab's claim, in one line: the structured product equals multiplying by the dense matrix."""
    error = np.abs(fast - dense @ x).max()
    assert error < 1e-9 * n, f"{name}: fast product differs from the dense one by {error:.2e}"
    print(f"{name:>10}: max |fast - dense @ x| = {error:.1e}")


# %% [markdown]
# ## 1. Circulant: `n` numbers, `C[i, j] = c[(i - j) mod n]`
#
# Each column is the previous one rotated down by one. A circulant matrix is diagonalised by the discrete
# Fourier transform, so `C x` is a circular convolution: `ifft(fft(c) * fft(x))`, `O(n log n)` instead of
# `O(n^2)`. Its eigenvalues are `fft(c)`: for random `c` none is zero, so **`n` numbers give rank `n`**.

# %%
c = rng.standard_normal(n)
C = np.stack([np.roll(c, j) for j in range(n)], axis=1)  # column j is c rotated down by j
check_product("circulant", np.fft.ifft(np.fft.fft(c) * np.fft.fft(x)).real, C)

# %% [markdown]
# The lab's `surmlab.make("circulant", ...)` is the same matrix: give it `c` and compare its `dense()`.

# %%
lab = make("circulant", n, n, block_size=n).double()
with torch.no_grad():
    lab.weight.copy_(torch.from_numpy(c).reshape(lab.weight.shape))
same = np.allclose(lab.dense().detach().numpy(), C)
assert same, "the lab's circulant differs from the definition"
print("lab circulant == ours:", same)

# %% [markdown]
# ## 2. Toeplitz: `2n - 1` numbers, `T[i, j] = t[i - j]`
#
# Constant along each diagonal, but the diagonals no longer wrap around. The trick: a Toeplitz matrix is
# the top-left corner of a circulant matrix of size `2n`, so `T x` is the first half of that circulant
# times `x` padded with zeros.

# %%
t = rng.standard_normal(2 * n - 1)  # t[d + n - 1] is the value on diagonal d = i - j
i, j = np.indices((n, n))
T = t[i - j + n - 1]
first_column = np.concatenate([t[n - 1 :], [0.0], t[: n - 1]])  # diagonals 0..n-1, a zero, then -(n-1)..-1
fast = np.fft.ifft(np.fft.fft(first_column) * np.fft.fft(np.concatenate([x, np.zeros(n)]))).real[:n]
check_product("toeplitz", fast, T)

# %% [markdown]
# ## 3. Low displacement rank: `sum_i C(g_i) Z(h_i)`, `2 n r` numbers
#
# `Z(h)` is *skew*-circulant: like a circulant, but what wraps around changes sign. A sum of `r` products
# `C(g) Z(h)` has **displacement rank** at most `r`: shifting the matrix down one row (wrapping) and
# subtracting it shifted left one column (wrapping with a sign) leaves a matrix of rank `r`. Circulant and
# Toeplitz matrices have displacement rank 1 or 2; the LDR family lets `r` grow.

# %%
r = 1


def skew_circulant(h: np.ndarray) -> np.ndarray:
    d = i - j
    return np.where(d >= 0, h[d % n], -h[d % n])


def circulant(g: np.ndarray) -> np.ndarray:
    return g[(i - j) % n]


G, H = rng.standard_normal((r, n)), rng.standard_normal((r, n))
M = sum(circulant(g) @ skew_circulant(h) for g, h in zip(G, H, strict=True))


def ldr_product(v: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    for g, h in zip(G, H, strict=True):
        full = np.convolve(h, v)  # the linear convolution, length 2n - 1
        z = full[:n] - np.concatenate([full[n:], [0.0]])  # Z(h) v: what wraps around, with a minus sign
        out += np.fft.ifft(np.fft.fft(g) * np.fft.fft(z)).real  # C(g) z
    return out


check_product("ldr", ldr_product(x), M)
shift_down = np.roll(np.eye(n), 1, axis=0)  # Z_1: ones below the diagonal and one in the corner
shift_neg = shift_down.copy()
shift_neg[0, -1] = -1  # Z_{-1}
print(f"displacement rank: {np.linalg.matrix_rank(shift_down @ M - M @ shift_neg)} (r = {r})")

# %% [markdown]
# ## 4. Kronecker: `A ⊗ B`, `a^2 + b^2` numbers
#
# `(A ⊗ B)[(i, k), (j, l)] = A[i, j] B[k, l]`. Multiplying by it never builds it: reshape `x` into an
# `a x b` matrix `X`, and `(A ⊗ B) x` is `A X B^T` flattened. The rank is `rank(A) * rank(B)`.

# %%
A, B = rng.standard_normal((k, k)), rng.standard_normal((k, k))
K = np.kron(A, B)
check_product("kronecker", (A @ x.reshape(k, k) @ B.T).ravel(), K)

lab = make("kronecker", n, n, factors=[k, k]).double()
with torch.no_grad():
    lab.a.copy_(torch.from_numpy(A))
    lab.b.copy_(torch.from_numpy(B))
same = np.allclose(lab.dense().detach().numpy(), K)
assert same, "the lab's Kronecker product differs from the definition"
print("lab kronecker == ours:", same)

# %% [markdown]
# ## 5. Monarch-style: block-diagonal, transpose, block-diagonal, `2 n^1.5` numbers
#
# `M = P^T L P R`: `R` and `L` are block-diagonal with `k` blocks of `k x k` (`n = k^2`), and `P` is the
# permutation that transposes `x` viewed as a `k x k` grid. Each block-diagonal factor mixes within a
# group; the transpose makes the second factor mix across groups. Two batched small matrix products.

# %%
R_blocks, L_blocks = rng.standard_normal((k, k, k)), rng.standard_normal((k, k, k))


def block_diagonal(blocks: np.ndarray) -> np.ndarray:
    out = np.zeros((n, n))
    for b, block in enumerate(blocks):
        out[b * k : (b + 1) * k, b * k : (b + 1) * k] = block
    return out


P = np.eye(n)[np.arange(n).reshape(k, k).T.ravel()]  # (P v) is v as a k x k grid, transposed
Monarch = P.T @ block_diagonal(L_blocks) @ P @ block_diagonal(R_blocks)


def monarch_product(v: np.ndarray) -> np.ndarray:
    y = np.einsum("bij,bj->bi", R_blocks, v.reshape(k, k))  # R: each block on its group
    y = np.einsum("bij,bj->bi", L_blocks, y.T)  # P then L: groups are now the grid's columns
    return y.T.ravel()  # P^T


check_product("monarch", monarch_product(x), Monarch)

# %% [markdown]
# ## 6. Parameters, rank and spectrum next to low rank
#
# Every structure above is built from far fewer than `n^2` numbers. The table counts them and the rank
# they reach, beside LoRA's rank at the same count (`2 n r` numbers for rank `r`).

# %%
import pandas as pd

lowrank = rng.standard_normal((n, 1)) @ rng.standard_normal((1, n))
shown = {
    "lowrank r=1": (lowrank, 2 * n),
    "circulant": (C, n),
    "toeplitz": (T, 2 * n - 1),
    f"ldr r={r}": (M, 2 * n * r),
    f"kronecker {k}x{k} ⊗ {k}x{k}": (K, 2 * k * k),
    "monarch-style": (Monarch, 2 * k**3),
}
table = pd.DataFrame(
    [
        {"structure": name, "parameters": p, "rank": np.linalg.matrix_rank(m), "LoRA rank at that count": p // (2 * n)}
        for name, (m, p) in shown.items()
    ]
).set_index("structure")
show(table)

# %%
show(heatmap_grid({name: m[:16, :16] for name, (m, _) in shown.items()}, title="The top-left 16 x 16 of each"))
show(spectra({f"{name} ({p} params)": np.linalg.svd(m, compute_uv=False) for name, (m, p) in shown.items()}))

# %% [markdown]
# **Read the spectra.** Low rank is one value then a cliff (to the floating-point floor): everything it
# can say lives in one direction. The circulant, Toeplitz and LDR curves stay off the floor to the end: full
# rank from `n` to `2n` numbers, the count of LoRA at rank 1 or less. The Kronecker product's singular
# values are the products of its factors' ones, and Monarch-style blocks reach full rank with `2 n^1.5`.
#
# Full rank is not the same as *expressive*: a circulant matrix can only be a circular convolution. Lesson 4
# asks which weight updates these structures approximate well, and which they do not.

# %% [markdown]
# **Move the values.** The lab's circulant update is a grid of `b x b` circulant blocks (`n^2 / b` numbers);
# LoRA at rank `r` has `2 n r`. Move `block_size` and `rank` (sliders in a live Jupyter kernel with
# ipywidgets; elsewhere change the defaults in the `def` line) and watch the counts, the ranks and the
# spectra: a smaller block buys more numbers, never less rank.

# %%
from surmlab.display import explore


def compare(block_size: int = n // 4, rank: int = 1) -> None:
    torch.manual_seed(seed)
    pair = {
        f"circulant, block {block_size}": make("circulant", n, n, block_size=block_size).double(),
        f"lowrank, rank {rank}": make("lowrank", n, n, rank=rank).double(),  # float64: ranks exact
    }
    dense = {}
    for name, structure in pair.items():
        with torch.no_grad():
            for p in structure.parameters():
                p.normal_()  # the lab starts LoRA's B at zero: random values show the structure
        dense[name] = structure.dense().detach().numpy()
        count = sum(p.numel() for p in structure.parameters())
        print(f"{name:>22}: {count:>5} parameters, rank {np.linalg.matrix_rank(dense[name])} of {n}")
    show(spectra({name: np.linalg.svd(m, compute_uv=False) for name, m in dense.items()}))


explore(compare, block_size=[b for b in range(1, n + 1) if n % b == 0], rank=(1, n // 2, 1))

# %% [markdown]
# ## Exercises
#
# Each check cell prints whether your answer is right and fails with a hint if it is not. Until you answer,
# it says so and moves on.
#
# **Exercise 1.** Write `circulant_matvec(c, v)`: the product of the circulant matrix with first column `c`
# and the vector `v`, without building the matrix (`O(n log n)`).

# %%
circulant_matvec = None  # your function here

# %%
checks.lesson1_circulant_matvec(circulant_matvec)

# %% [markdown]
# **Exercise 2.** `A` is a `4 x 4` matrix of rank 3 and `B` a `5 x 5` matrix of rank 2. What is the rank of
# `A ⊗ B`?

# %%
kronecker_rank = None  # a number

# %%
checks.lesson1_kronecker_rank(kronecker_rank)

# %% [markdown]
# **Exercise 3.** Write `toeplitz_parameters(n)`: how many free numbers an `n x n` Toeplitz matrix has
# (the dimension of the space of Toeplitz matrices).

# %%
toeplitz_parameters = None  # your function here

# %%
checks.lesson1_toeplitz_parameters(toeplitz_parameters)
