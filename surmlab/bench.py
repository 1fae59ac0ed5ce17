"""``surmlab bench``: the speed and memory suite in ``benchmarks/`` (see benchmarks/README.md).

The suite lives next to the package in a source checkout (it is not installed with it) and depends on
the package, not the other way round: this entry point runs ``python -m benchmarks.run`` with the
checkout importable in a child process and forwards the arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    if not (ROOT / "benchmarks" / "run.py").is_file():
        raise SystemExit(
            f"surmlab bench needs a source checkout of surmlab: no benchmarks/run.py next to {Path(__file__).parent}"
        )
    args = sys.argv[1:] if argv is None else argv
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "benchmarks.run", *args]
    return subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, check=False).returncode
