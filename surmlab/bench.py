"""``surmlab bench``: the speed and memory suite in ``benchmarks/`` (see benchmarks/README.md).

The suite lives next to the package in a source checkout (it is not installed with it); this entry
point finds it there and forwards the arguments of ``python -m benchmarks.run``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "run.py").is_file():
        raise SystemExit(
            f"surmlab bench needs a source checkout of surmlab: no benchmarks/run.py next to {Path(__file__).parent}"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.run import main as run_main

    return run_main(argv)
