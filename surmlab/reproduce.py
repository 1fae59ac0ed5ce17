"""``surmlab reproduce``: execute the experiment notebooks with papermill.

Each notebook runs in a fresh kernel (``python3``; jupyter_client launches a kernelspec whose argv
starts with ``python`` with the running interpreter, so the kernel sees this environment). The
executed notebook, its result JSON/CSV and a ``reproduce.json`` (command, parameters, environment,
status) land in one folder per experiment.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .experiments import common, get, names
from .fileio import atomic_write, write_json

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(
            f"no notebook for experiment {name!r} at notebooks/{name}.ipynb (needs a source checkout)"
        )
    return path


def prefer_this_environment_kernel() -> None:
    """Put this interpreter's ``share/jupyter`` first on ``JUPYTER_PATH``: a user-level ``python3``
    kernelspec pointing at another Python would otherwise win over the environment's own."""
    share = Path(sys.prefix) / "share" / "jupyter"
    if (share / "kernels" / KERNEL / "kernel.json").is_file():
        paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
        if str(share) not in paths:
            os.environ["JUPYTER_PATH"] = os.pathsep.join([str(share), *paths])


def parse_value(text: str) -> Any:
    """``-p`` values: Python literals where they parse (``3``, ``0.5``, ``None``, ``[1, 2]``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check(name: str, params: dict[str, Any], profile: str = "smoke") -> Any:
    """The parameters ``name`` would run with, or a one-line ``ValueError`` (unknown experiment, profile or
    parameter; a value of the wrong type; a value its ``validate`` refuses, such as an infeasible budget)."""
    try:
        return get(name).run.params(profile, **params)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def check_all(names_: Sequence[str], params: dict[str, Any], profile: str = "smoke") -> dict[str, dict[str, Any]]:
    """Each experiment's share of ``params`` (the ones it takes), checked; a key that no experiment takes
    is an error (a misspelled key is not dropped without a word)."""
    taken = {name: set(common.parameter_names(get(name).PROFILES[profile])) for name in names_}
    unknown = sorted(set(params) - set().union(*taken.values()))
    if unknown:
        known = ", ".join(sorted(set().union(*taken.values())))
        raise ValueError(f"no experiment takes parameter(s) {', '.join(unknown)}; known: {known}")
    shares = {name: {k: v for k, v in params.items() if k in keys} for name, keys in taken.items()}
    for name, own in shares.items():
        check(name, own, profile)
    return shares


def reproduce(
    name: str, params: dict[str, Any] | None = None, profile: str = "smoke", out_dir: str | Path | None = None,
    kernel_name: str = KERNEL, timeout: int | None = None, html: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Execute ``notebooks/<name>.ipynb`` into ``out_dir/<name>/`` and return a status record; with
    ``html``, also ``<name>.html``: the executed notebook as a page that opens offline, figures interactive.

    Parameters are checked (name, type and value, by the experiment's own ``validate``) before a kernel
    starts: a typo or a bad value is one ``ValueError`` naming it, not a traceback from inside the notebook.
    """
    import papermill

    params = dict(params or {})
    check(name, params, profile)
    folder = Path(out_dir or Path("results") / profile) / name
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    cmd = " ".join(shlex.quote(a) for a in ["surmlab", "reproduce", name, "--profile", profile]) + "".join(
        f" -p {k} {shlex.quote(v if isinstance(v, str) else repr(v))}" for k, v in params.items()
    )
    started = time.time()
    record: dict[str, Any] = {"experiment": name, "profile": profile, "parameters": params, "command": cmd}
    prefer_this_environment_kernel()
    os.environ[common.COMMAND_ENV] = cmd  # the kernel inherits it: result files name this command
    try:
        papermill.execute_notebook(
            str(notebook_path(name)), str(folder / f"{name}.ipynb"),
            parameters={"profile": profile, "out_dir": str(folder), **params},
            kernel_name=kernel_name, cwd=os.getcwd(), progress_bar=False, execution_timeout=timeout,
        )  # fmt: skip
        record["status"] = "ok"
        if html:
            write_html(folder / f"{name}.ipynb", folder / f"{name}.html")
    except Exception as err:  # a failed cell: record it and let the caller decide
        record.update(status="failed", error=f"{type(err).__name__}: {str(err).strip()[-2000:]}")
    finally:
        os.environ.pop(common.COMMAND_ENV, None)
    record["wall_time_s"] = round(time.time() - started, 2)
    missing = [f"{name}.{ext}" for ext in ("json", "csv") if not (folder / f"{name}.{ext}").is_file()]
    if missing and record["status"] == "ok":
        record.update(status="failed", error=f"result file(s) missing: {', '.join(missing)}")
    record.update(folder=str(folder), environment=common.environment())
    write_json(folder / "reproduce.json", record)
    return record


def write_html(notebook: Path, target: Path) -> Path:
    """``surmlab.display.html_report`` of an executed notebook, written atomically."""
    import nbformat

    from .display import html_report

    page = html_report(nbformat.read(notebook, as_version=4))
    return atomic_write(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def reproduce_all(
    profile: str = "smoke", out_dir: str | Path | None = None, only: Sequence[str] | None = None,
    params: dict[str, Any] | None = None, html: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Every experiment in sequence (a failure does not stop the rest); writes ``summary.csv/json``.
    ``params`` applies to the experiments that take each parameter; every experiment's share is checked
    before the first one runs, and a key no experiment takes is a ``ValueError``."""
    root = Path(out_dir or Path("results") / profile)
    rows = []
    for name, own in check_all(list(only or names()), dict(params or {}), profile).items():  # all, before any runs
        rec = reproduce(name, own, profile, root, html=html)
        rows.append({k: rec.get(k) for k in ("experiment", "status", "wall_time_s", "folder", "error")})
        print(f"{name}: {rec['status']} in {rec['wall_time_s']:.0f} s", file=sys.stderr)
    table = pd.DataFrame(rows)
    atomic_write(root / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json(root / "summary.json", {"profile": profile, "environment": common.environment(), "rows": rows})
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="surmlab reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help=f"experiment: {', '.join(names())}")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--profile", default="smoke", choices=common.PROFILE_NAMES)
    parser.add_argument("--all", action="store_true", help="run every experiment and write one summary table")
    parser.add_argument("--out", default=None, help="output folder (default results/<profile>)")
    parser.add_argument("--html", action="store_true", help="also write <name>.html (figures interactive offline)")
    args = parser.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.param}
    if args.all == bool(args.name):
        parser.error("give one experiment name or --all")
    if args.all:
        try:
            table = reproduce_all(args.profile, args.out, params=params, html=args.html)
        except ValueError as err:
            parser.error(str(err))
        print(table.to_string(index=False))
        return 0 if (table.status == "ok").all() else 1
    try:
        record = reproduce(args.name, params, args.profile, args.out, html=args.html)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f"{record['status']}: {record['folder']} ({record['wall_time_s']:.0f} s)")
    if record["status"] != "ok":
        print(record.get("error", ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
