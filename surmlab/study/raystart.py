"""Starting Ray for a study: lean, patient on a busy machine, and one line when it still fails.

A study hands Ray only small task arguments and results, so a Ray started here (``--ray local``) leaves
off what it does not use: the dashboard, metrics collection, the timeline, usage statistics and the
prestarted worker pool. Ray's raylet gets a fixed 30 s to register (``ray/_private/node.py``), which a
machine busy with training can miss; the start is then tried once more, and if that fails too the error
says so in one line and names the alternative, worker processes (``--workers N``), which need no Ray.
"""

from __future__ import annotations

import os
from typing import Any

# ray.init options for an instance started here (a cluster reached by address keeps its own settings).
LEAN_LOCAL: dict[str, Any] = {
    "include_dashboard": False,
    "_system_config": {
        "enable_metrics_collection": False,
        "enable_timeline": False,
        "prestart_worker_first_driver": False,  # workers start when cells need them, not all during start-up
        "worker_register_timeout_seconds": 300,  # a worker importing torch on a loaded machine is slow
    },
}
ATTEMPTS = 2


def ray_start_failed(address: str, workers: int, err: BaseException) -> RuntimeError:
    """The one-line error for a Ray that did not start (``local``) or could not be reached (an address)."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    if address == "local":
        what = f"Ray did not start on this machine (tried {ATTEMPTS} times; a machine busy with other work does this)"
    else:
        what = f"Ray at {address!r} could not be reached"
    return RuntimeError(f"{what}: {first}; run the study without Ray instead: --workers {max(1, workers)}")


def start_ray(address: str, workers: int) -> Any:
    """The ``ray`` module, connected to ``address`` or to a lean instance started here (``local``)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            f"--ray needs Ray, an optional extra: pip install 'surmlab[ray]'; or run the study with --workers {workers}"
        ) from None
    if ray.is_initialized():
        return ray
    if address != "local":
        try:
            ray.init(address=address)
        except Exception as err:
            raise ray_start_failed(address, workers, err) from err
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    failure: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            ray.init(num_cpus=workers, **LEAN_LOCAL)
            return ray
        except Exception as err:  # ray.init raises a bare Exception when the node times out
            ray.shutdown()  # leave nothing half-started behind
            failure = err
    raise ray_start_failed(address, workers, failure) from failure
