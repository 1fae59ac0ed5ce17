"""Shared test settings: deterministic seeds and a fast hypothesis profile."""

import os

# The matrices and models in the tests are small: one BLAS/OpenMP thread avoids wake-up and contention
# costs that otherwise dominate on a shared 2-core machine (tens of ms per op, seconds per SVD).
# The variables only take effect if numpy/torch are not imported yet; torch's own setting always does.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

settings.register_profile("surmlab", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("surmlab")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def offline_cache(tmp_path_factory):
    """No hub access (tests must not wait for network retries) and a fresh surmlab cache, so the
    ViT-S/14 conversion and dataset caches are exercised from scratch once per test module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("SURMLAB_CACHE", str(tmp_path_factory.mktemp("surmlab-cache")))
        yield
