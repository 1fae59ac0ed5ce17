"""A student's own data file, taken in by the app (or any caller) and kept under the runs folder.

``store_upload`` copies an uploaded CSV / TSV / JSONL file, or extracts a zip of class folders, into
``<runs>/.surmlab-app/uploads/<sanitised name>``: size-limited, the name reduced to ``[A-Za-z0-9._-]``,
zip members with absolute or ``..`` paths, links or special files refused, and nothing written outside
that folder (a zip is extracted into a temporary folder inside it, then renamed). JSONL is kept as the
CSV it converts to, so it trains as a ``csv:`` task. ``preview`` reads a kept file with the columns a
student picked through the same loader training uses, so a problem shows before Start, as one message
naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .schema import missing_column, short
from .user_data import IMAGE_EXTENSIONS, load_table

UPLOAD_FOLDER = Path(".surmlab-app") / "uploads"
MAX_UPLOAD_BYTES = 50 * 2**20  # a file, or a zip's extracted content, larger than this is refused
MAX_ZIP_MEMBERS = 20_000
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SEPARATORS = {"csv": ",", "tsv": "\t"}
PREVIEW_ROWS = 8
# Header names read as the text or the label column when a student has not picked one.
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "comment", "document", "question", "utterance")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "target", "y", "rating", "score")


class UploadError(ValueError):
    """A file the lab will not keep or read; the message names the file and the problem."""


@dataclass(frozen=True)
class Upload:
    """A kept upload: where it is, what kind it is and, for tables, the header and guessed columns."""

    name: str  # the file as the student named it
    path: Path  # where it is kept (a file, or a folder for a zip of class folders)
    kind: str  # csv | tsv | folder
    columns: tuple[str, ...] = ()
    text_column: str | None = None
    label_column: str | None = None

    @property
    def task(self) -> str:
        """The task name training takes: ``csv:<path>``, ``tsv:<path>`` or ``folder:<path>``."""
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class Preview:
    """What a student sees before training: first rows, label counts and the lab's split sizes."""

    rows: pd.DataFrame
    label_counts: pd.DataFrame  # label, count
    train_examples: int
    eval_examples: int
    description: str


def upload_root(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / UPLOAD_FOLDER


def sanitise(name: str) -> str:
    """A file or folder name reduced to ``[A-Za-z0-9._-]`` (no leading dot, at most 80 characters)."""
    base = Path(str(name).replace("\\", "/")).name
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")
    return clean[:80].strip("-.") or "upload"


def _free(root: Path, name: str) -> Path:
    """``root/name``, or ``root/stem-1.suffix`` ... when that exists."""
    candidate, stem, suffix = root / name, Path(name).stem, Path(name).suffix
    for i in range(1, 10_000):
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate
        candidate = root / f"{stem}-{i}{suffix}"
    raise UploadError(f"{name}: too many uploads of that name under {root}")


def _check_size(shown: str, size: int, limit: int) -> None:
    if size > limit:
        raise UploadError(f"{shown} is {size:,} bytes; uploads up to {limit:,} bytes are kept")


def _decode(shown: str, data: bytes) -> str:
    if not data.strip():
        raise UploadError(f"{shown} is empty: give a header row and at least two rows per class")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UploadError(
            f"{shown} is not UTF-8 text (undecodable byte at offset {err.start}); save it as UTF-8"
        ) from None


def _jsonl_to_csv(shown: str, text: str) -> str:
    """JSON Lines (one object per line) as CSV text with the objects' keys as its header."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UploadError(f"{shown}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UploadError(f'{shown}: line {number} is not a JSON object ({{"text": ..., "label": ...}})')
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def _header(shown: str, text: str, kind: str) -> list[str]:
    try:
        frame = pd.read_csv(io.StringIO(text), sep=SEPARATORS[kind], nrows=5)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UploadError(f"{shown} cannot be read as {kind.upper()}: {short(err, 160)}") from None
    return [str(c) for c in frame.columns]


def guess_columns(columns: Sequence[str]) -> tuple[str | None, str | None]:
    """The text and label columns a header most likely means (by name), or ``None``."""

    def pick(names: Sequence[str], avoid: str | None) -> str | None:
        lowered = {c.lower().strip(): c for c in columns if c != avoid}
        return next((lowered[n] for n in names if n in lowered), None)

    text = pick(TEXT_NAMES, None)
    label = pick(LABEL_NAMES, text)
    if text is None:
        text = next((c for c in columns if c != label), None)
    if label is None:
        label = next((c for c in reversed(columns) if c != text), None)
    return text, label


def _store_table(source: Path, shown: str, root: Path, max_bytes: int) -> Upload:
    kind = TABLE_SUFFIXES[Path(shown).suffix.lower()]
    data = source.read_bytes()
    _check_size(shown, len(data), max_bytes)
    text = _decode(shown, data)
    if kind == "jsonl":
        text, kind = _jsonl_to_csv(shown, text), "csv"
    columns = _header(shown, text, kind)
    if len(columns) < 2:
        raise UploadError(
            f"{shown} has one column ({short(columns[0]) if columns else 'none'}); give a text and a label column"
        )
    name = sanitise(Path(shown).stem) + f".{kind}"
    target = _free(root, name)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".upload-")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(text)
    os.replace(tmp, target)
    text_column, label_column = guess_columns(columns)
    return Upload(shown, target, kind, tuple(columns), text_column, label_column)


def _safe_member(shown: str, info: zipfile.ZipInfo) -> str | None:
    """The member's path inside the archive, or None for a folder entry; raises on an unsafe member."""
    name = info.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UploadError(f"{shown}: member {short(info.filename, 80)!r} points outside the archive; refused")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadError(f"{shown}: member {short(info.filename, 80)!r} is a symbolic link; refused")
    if info.is_dir():
        return None
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file (zipfile's writestr)
        raise UploadError(f"{shown}: member {short(info.filename, 80)!r} is not a regular file; refused")
    if (parts and parts[0] == "__MACOSX") or any(p.startswith(".") for p in parts):
        return ""  # resource forks and hidden files: skipped, not refused
    return "/".join(sanitise(p) for p in parts)


def class_root(folder: Path) -> Path:
    """The folder holding the class folders: ``folder`` or its single sub-folder (a zipped folder)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        subs = [p for p in inner.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subs) >= 2 or any(p.name in ("train", "training") for p in subs):
            return inner
    return folder


def _store_zip(source: Path, shown: str, root: Path, max_bytes: int) -> Upload:
    _check_size(shown, source.stat().st_size, max_bytes)
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise UploadError(f"{shown} is not a zip archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise UploadError(f"{shown} holds {len(infos):,} members; zips of up to {MAX_ZIP_MEMBERS:,} are kept")
        members = [(info, _safe_member(shown, info)) for info in infos]  # every member checked first
        _check_size(f"{shown} (extracted)", sum(i.file_size for i, m in members if m), max_bytes)
        images = [m for _, m in members if m and Path(m).suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise UploadError(
                f"{shown} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); zip one folder per class"
            )
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".unzip-"))
        try:
            written = 0
            for info, member in members:
                if not member or Path(member).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                target = staging / member
                if not target.resolve().is_relative_to(staging.resolve()):  # belt and braces
                    raise UploadError(f"{shown}: member {short(info.filename, 80)!r} points outside the archive")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        _check_size(f"{shown} (extracted)", written, max_bytes)  # sizes in the header may lie
                        dst.write(chunk)
            target = _free(root, sanitise(Path(shown).stem))
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    folder = class_root(target)
    classes = [p for p in folder.iterdir() if p.is_dir()]
    if len(classes) < 2:
        shutil.rmtree(target, ignore_errors=True)
        raise UploadError(f"{shown}: found {len(classes)} class folder(s); zip one sub-folder per class (>= 2)")
    return Upload(shown, folder, "folder")


def store_upload(
    source: str | Path, runs_dir: str | Path, name: str | None = None, *, max_bytes: int = MAX_UPLOAD_BYTES
) -> Upload:
    """Keep the uploaded file ``source`` (shown to the student as ``name``, default its file name) under
    ``<runs_dir>/.surmlab-app/uploads``; raises :class:`UploadError` naming the file and the problem."""
    source = Path(source)
    shown = Path(str(name or source.name).replace("\\", "/")).name or "upload"
    if source.is_symlink() or not source.is_file():
        raise UploadError(f"{shown} is not a regular file")
    root = upload_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    suffix = Path(shown).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return _store_table(source, shown, root, max_bytes)
    if suffix == ".zip":
        return _store_zip(source, shown, root, max_bytes)
    known = ", ".join([*TABLE_SUFFIXES, ".zip"])
    raise UploadError(f"{shown}: {suffix or 'no extension'} is not a kind the lab reads; give one of {known}")


def read_upload(task: str) -> Upload:
    """The :class:`Upload` a ``csv:``/``tsv:``/``folder:`` task names (its header read again)."""
    kind, _, rest = task.partition(":")
    path = Path(rest)
    if kind not in ("csv", "tsv", "folder") or not rest:
        raise UploadError(f"{task!r} is not a csv:, tsv: or folder: task")
    if kind == "folder":
        if not path.is_dir():
            raise UploadError(f"{path.name}: folder {path} does not exist")
        return Upload(path.name, path, kind)
    if not path.is_file():
        raise UploadError(f"{path.name}: file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(1 << 16)
    text = _decode(path.name, head[: head.rfind(b"\n") + 1] or head)
    columns = _header(path.name, text, kind)
    guessed = guess_columns(columns)
    return Upload(path.name, path, kind, tuple(columns), *guessed)


def check_columns(task: str, text_column: str | None, label_column: str | None, pair_column: str | None = None) -> None:
    """For a ``csv:``/``tsv:`` task: the file exists and holds the named columns (header only, fast);
    raises ``ValueError`` naming the file and the missing column. Other tasks pass."""
    kind, _, rest = task.partition(":")
    if kind not in SEPARATORS or not rest:
        return
    upload = read_upload(task)
    for column in (text_column or "text", label_column or "label", pair_column):
        if column is not None and column not in upload.columns:
            raise missing_column(column, list(upload.columns), upload.path.name)


def preview(task: str, text_column: str | None, label_column: str | None, pair_column: str | None = None) -> Preview:
    """The first rows, label counts and split sizes of a ``csv:``/``tsv:``/``folder:`` task, read by the
    loader training uses; raises ``ValueError`` naming the file and the problem."""
    upload = read_upload(task)
    if upload.kind == "folder":
        from .user_data import load_image_folder

        loaded = load_image_folder(upload.path)
        labels = list(loaded.train["label"]) + list(loaded.eval["label"])
        names = loaded.label_names or []
        counts = pd.Series([names[i] for i in labels]).value_counts().sort_index()
        first = loaded.train.select(range(min(PREVIEW_ROWS, len(loaded.train))))
        rows = pd.DataFrame(
            {"image": [Path(p["path"] or "").name for p in first.cast_column("image", _path_feature())["image"]],
             "label": [names[i] for i in first["label"]]}
        )  # fmt: skip
    else:
        text, label = text_column or "text", label_column or "label"
        check_columns(task, text, label, pair_column)
        loaded = load_table(upload.path, SEPARATORS[upload.kind], text, pair_column, label)
        frame = pd.read_csv(upload.path, sep=SEPARATORS[upload.kind], nrows=PREVIEW_ROWS)
        rows = frame[[c for c in (text, pair_column, label) if c]]
        full = pd.read_csv(upload.path, sep=SEPARATORS[upload.kind], usecols=[label])[label]
        counts = full.astype(str).value_counts().sort_index()
    label_counts = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy()})
    return Preview(rows, label_counts, len(loaded.train), len(loaded.eval), loaded.description)


def _path_feature():
    import datasets

    return datasets.Image(decode=False)
