"""A zip of a run's adapter folder that never leaves the folder: a run folder may be planted by someone
else (the app may serve other users), so no symbolic link is followed, at any depth, and nothing but
regular files is read (a FIFO would block the server, a device would stream forever).

Every file is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a link swapped in after
the listing is refused by the kernel rather than read.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

from ..fileio import atomic_write

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class UnsafeFolder(ValueError):
    """The folder holds a symbolic link or something that is not a regular file or folder."""


def _open_dir(name: str, dir_fd: int | None, shown: str) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as err:
        raise UnsafeFolder(f"{shown} cannot be opened as a folder without following links ({err.strerror})") from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFolder(f"{shown} is not a folder")
    return fd


def _write_members(z: zipfile.ZipFile, dir_fd: int, prefix: str, shown: str, names: list[str]) -> None:
    """Stream every file under the folder open as ``dir_fd`` into ``z``, appending archive names to ``names``."""
    with os.scandir(dir_fd) as entries:
        listing = sorted(e.name for e in entries)
    for name in listing:
        where = f"{shown}/{name}"
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeFolder(f"{where} is a symbolic link; links are never served")
        if stat.S_ISDIR(st.st_mode):
            sub = _open_dir(name, dir_fd, where)
            try:
                _write_members(z, sub, f"{prefix}{name}/", where, names)
            finally:
                os.close(sub)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFolder(f"{where} is not a regular file")
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=dir_fd)
        except OSError as err:  # swapped for a link since the listing: ELOOP
            raise UnsafeFolder(f"{where} cannot be read without following links ({err.strerror})") from None
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise UnsafeFolder(f"{where} is not a regular file")
            with z.open(prefix + name, "w") as dst:
                shutil.copyfileobj(src, dst)
        names.append(prefix + name)


def zip_folder(run: Path, sub: str, archive: Path) -> list[str]:
    """Write the files of ``run/sub`` into the zip ``archive`` (atomically) and return their names.
    Raises ``UnsafeFolder`` naming the first symbolic link or special file met (``run`` and ``run/sub``
    included); no archive is left behind then."""
    shown = f"{run.name}/{sub}"
    if run.is_symlink():
        raise UnsafeFolder(f"{run.name} is a symbolic link; links are never served")
    run_fd = _open_dir(str(run), None, run.name)
    try:
        if stat.S_ISLNK(os.stat(sub, dir_fd=run_fd, follow_symlinks=False).st_mode):
            raise UnsafeFolder(f"{shown} is a symbolic link; links are never served")
        sub_fd = _open_dir(sub, run_fd, shown)
    finally:
        os.close(run_fd)
    names: list[str] = []

    def write(tmp: str) -> None:
        names.clear()
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            _write_members(z, sub_fd, "", shown, names)

    try:
        atomic_write(archive, write)
    finally:
        os.close(sub_fd)
    return names


def export_zip(run: Path, archive: Path, *, best: bool = False) -> list[str]:
    """A zip of ``export_run``'s folder for the run (adapter once, labels, run config, merged model and
    PEFT LoRA adapter where the method allows): the run folder is first checked for links and special
    files the way ``zip_folder`` reads, then exported into a private temporary folder that is zipped."""
    import tempfile

    from ..run_export import export_run
    from ..runs import RunDir

    weights = "best" if best else RunDir(run).final_dir.name  # final/ (adapter/ in older runs)
    if run.is_symlink():
        raise UnsafeFolder(f"{run.name} is a symbolic link; links are never served")
    for name in ("config.json", weights):
        if (run / name).is_symlink():
            raise UnsafeFolder(f"{run.name}/{name} is a symbolic link; links are never served")
    with tempfile.TemporaryDirectory(prefix="surmlab-export-") as tmp:
        zip_folder(run, weights, Path(tmp) / "check.zip")  # refuses links at any depth
        folder = Path(tmp) / "export"
        export_run(run, folder, best=best)
        return zip_folder(Path(tmp), "export", archive)
