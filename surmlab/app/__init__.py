"""The Gradio lab: pick a backbone, a task, a structure and a budget; train; watch the trade-off.

``python app.py`` (or ``surmlab app``) serves it on 127.0.0.1:7860. Listening on other interfaces
(``--host 0.0.0.0``), a public share link (``--share``) and a login (``--auth user:password``) are
opt-in. Training runs in child processes (:mod:`.jobs`), so the page survives any failure there, and
a reload or an app restart re-attaches to the running job.

Modules: ``jobs`` (subprocess queue), ``readout`` (budget solver before training), ``watch`` (cheap
reads of run folders), ``plots`` (plotly figures), ``handlers`` (what the buttons do, no Gradio),
``ui`` (the page).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["add_arguments", "build_app", "launch", "main", "parse_auth", "run_from_args"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def build_app(
    runs_dir: str | Path = "runs", *, watch: bool = True, data_roots: list[str | Path] | None = None
) -> gr.Blocks:
    """The page over ``runs_dir``; ``watch`` polls the job queue in a background thread, so queued
    jobs start even with no browser open. The handlers' state is at ``app.lab``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline lab
    from .handlers import Lab
    from .ui import build

    lab = Lab(runs_dir, data_roots=data_roots)
    if watch:
        lab.jobs.start_watcher()
    demo = build(lab)
    demo.lab = lab
    return demo


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """``user:password``, or a file with one ``user:password`` per line -> Gradio's auth list."""
    if not value:
        return None
    path = Path(value).expanduser()
    lines = path.read_text().splitlines() if path.is_file() else [value]
    pairs = []
    for line in filter(None, (ln.strip() for ln in lines)):
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth takes user:password (or a file of user:password lines)")
        pairs.append((user, password))
    return pairs


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    share: bool = False,
    auth: list[tuple[str, str]] | tuple[str, str] | None = None,
    runs_dir: str | Path = "runs",
    data_roots: list[str | Path] | None = None,
    **kwargs: Any,
) -> Any:
    """Build the app and serve it (blocks unless ``prevent_thread_lock=True`` is passed on)."""
    from ..data.uploads import MAX_UPLOAD_BYTES
    from .ui import theme_kwargs

    if (share or not _is_loopback(host)) and not auth:
        where = "a public share link" if share else f"{host}"
        print(f"warning: serving on {where} without --auth: anyone who can reach it can start training jobs")
    demo = build_app(runs_dir, data_roots=data_roots)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        ssr_mode=False,
        allowed_paths=[str(demo.lab.downloads)],
        # the server refuses far larger uploads outright; up to this, the Data tab names the file and the limit
        max_file_size=4 * MAX_UPLOAD_BYTES,
        **{**theme_kwargs(), **kwargs},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio share link")
    parser.add_argument("--auth", default=None, help="require a login: user:password, or a file of such lines")
    parser.add_argument("--runs-dir", dest="runs_dir", default="runs", help="where run directories go")
    parser.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        default=None,
        help="a folder the page may read csv:/tsv:/folder: data and hf:<path> model folders from (repeatable; "
        "default: the current directory and the runs folder)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="The surmlab lab in the browser.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    """Shared by ``app.py``, ``python -m surmlab.app`` and ``surmlab app``."""
    try:
        auth = parse_auth(args.auth)
        if Path(args.runs_dir).exists() and not Path(args.runs_dir).is_dir():
            raise ValueError(f"--runs-dir {args.runs_dir!r}: a folder was expected, but it is a file")
    except (OSError, ValueError) as err:
        print(f"error: {err}")
        return 2
    launch(
        host=args.host,
        port=args.port,
        share=args.share,
        auth=auth,
        runs_dir=args.runs_dir,
        data_roots=args.data_roots,
    )
    return 0
