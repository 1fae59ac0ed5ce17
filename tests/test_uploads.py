"""A student's own data file: kept under the runs folder, names sanitised, unsafe zips refused, columns
checked and previewed by the loader training uses, each problem one message naming the file."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from surmlab.data.uploads import (
    UploadError,
    check_columns,
    guess_columns,
    preview,
    read_upload,
    sanitise,
    store_upload,
    upload_root,
)

ROWS = "".join(f"great film {i},pos\nawful film {i},neg\n" for i in range(20))


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_csv_with_other_column_names_is_kept_guessed_and_previewed(tmp_path):
    source = write(tmp_path / "My Reviews (v2).csv", "review,sentiment\n" + ROWS)
    runs = tmp_path / "runs"
    upload = store_upload(source, runs)
    assert upload.path == upload_root(runs) / "My-Reviews-v2.csv" and upload.path.read_text() == source.read_text()
    assert upload.columns == ("review", "sentiment") and (upload.text_column, upload.label_column) == (
        "review",
        "sentiment",
    )
    assert upload.task == f"csv:{upload.path}"
    shown = preview(upload.task, "review", "sentiment")
    assert list(shown.rows.columns) == ["review", "sentiment"] and shown.rows.iloc[0, 0] == "great film 0"
    assert dict(zip(shown.label_counts["label"], shown.label_counts["count"], strict=True)) == {"neg": 20, "pos": 20}
    assert (shown.train_examples, shown.eval_examples) == (32, 8)  # the lab's stratified 80/20 split
    with pytest.raises(ValueError, match=r"column 'text' not found in My-Reviews-v2.csv; available columns: review"):
        check_columns(upload.task, None, None)  # the defaults a student never renamed: before Start, not 39 s after
    check_columns(upload.task, "review", "sentiment")
    assert store_upload(source, runs).path.name == "My-Reviews-v2-1.csv"  # a second upload never overwrites


def test_tsv_and_jsonl(tmp_path):
    tsv = store_upload(write(tmp_path / "d.tsv", "sentence\tlabel\n" + ROWS.replace(",", "\t")), tmp_path / "runs")
    assert tsv.kind == "tsv" and preview(tsv.task, "sentence", "label").train_examples == 32
    lines = "".join(f'{{"body": "text {i}", "y": "{"ab"[i % 2]}"}}\n' for i in range(20))
    jsonl = store_upload(write(tmp_path / "d.jsonl", lines), tmp_path / "runs")
    assert jsonl.kind == "csv" and jsonl.path.suffix == ".csv" and jsonl.columns == ("body", "y")
    assert preview(jsonl.task, "body", "y").label_counts["count"].tolist() == [10, 10]
    with pytest.raises(UploadError, match=r"bad.jsonl: line 2 is not JSON"):
        store_upload(write(tmp_path / "bad.jsonl", '{"a": 1}\nnot json\n'), tmp_path / "runs")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("latin.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"), r"latin.csv is not UTF-8 text"),
        ("one.csv", "text\n" + "x\n" * 4, r"one.csv has one column"),
        ("empty.csv", b"", r"empty.csv is empty"),
        ("notes.txt", "text,label\n", r"notes.txt: .txt is not a kind the lab reads"),
    ],
)
def test_bad_files_are_refused_by_name_and_nothing_is_kept(tmp_path, name, content, problem):
    runs = tmp_path / "runs"
    with pytest.raises(UploadError, match=problem):
        store_upload(write(tmp_path / name, content), runs)
    assert not [p for p in files_under(upload_root(runs)) if not p.name.startswith(".")]


def test_one_class_and_missing_label_column_are_named_in_the_preview(tmp_path):
    one = store_upload(write(tmp_path / "same.csv", "text,label\n" + "x,pos\n" * 10), tmp_path / "runs")
    with pytest.raises(ValueError, match=r"same.csv: column 'label' has one class"):
        preview(one.task, "text", "label")
    with pytest.raises(ValueError, match=r"column 'sentiment' not found in same.csv"):
        preview(one.task, "text", "sentiment")


def test_size_limit(tmp_path):
    source = write(tmp_path / "big.csv", "text,label\n" + ROWS * 10)
    with pytest.raises(UploadError, match=r"big.csv is [\d,]+ bytes; uploads up to 1,000 bytes are kept"):
        store_upload(source, tmp_path / "runs", max_bytes=1000)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return path


def test_zip_of_class_folders(tmp_path):
    members = {f"shapes/{c}/{i}.png": png() for c in ("red", "blue") for i in range(5)}
    upload = store_upload(make_zip(tmp_path / "shapes.zip", {**members, "__MACOSX/x": b""}), tmp_path / "runs")
    assert upload.kind == "folder" and upload.path == upload_root(tmp_path / "runs") / "shapes" / "shapes"
    assert sorted(p.name for p in upload.path.iterdir()) == ["blue", "red"]
    shown = preview(upload.task, None, None)
    assert shown.label_counts["count"].tolist() == [5, 5] and shown.train_examples + shown.eval_examples == 10


@pytest.mark.parametrize(
    ("members", "links", "problem"),
    [
        ({"../evil/a.png": b"x", "a/b.png": b"x"}, None, r"points outside the archive"),
        ({"/etc/evil.png": b"x"}, None, r"points outside the archive"),
        ({"a/1.png": b"x", "b/1.png": b"x"}, {"a/link.png": "/etc/passwd"}, r"is a symbolic link"),
    ],
)
def test_unsafe_zips_are_refused_and_nothing_is_written(tmp_path, members, links, problem):
    runs = tmp_path / "runs"
    archive = make_zip(tmp_path / "bad.zip", members, links)
    before = files_under(tmp_path)
    with pytest.raises(UploadError, match=rf"bad.zip: member .* {problem}"):
        store_upload(archive, runs)
    after = files_under(tmp_path) - before
    assert all(p == upload_root(runs) or upload_root(runs).is_relative_to(p) for p in after)  # only empty folders
    assert not (tmp_path / "evil").exists()


def test_zip_bomb_sizes_are_checked(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"a/1.png": b"\0" * 5000, "b/1.png": b"\0" * 5000})
    assert archive.stat().st_size < 8000  # small packed, large unpacked
    with pytest.raises(UploadError, match=r"bomb.zip \(extracted\) is 10,000 bytes"):
        store_upload(archive, tmp_path / "runs", max_bytes=8000)


def test_names_and_guesses():
    assert sanitise("../../etc/passwd") == "passwd" and sanitise("..") == "upload" and sanitise(".env") == "env"
    assert sanitise("a b/c d.csv") == "c-d.csv" and sanitise("x\\..\\y.csv") == "y.csv"
    assert guess_columns(["id", "Review", "sentiment"]) == ("Review", "sentiment")
    assert guess_columns(["a", "b"]) == ("a", "b")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UploadError, match=r"gone.csv: file .* does not exist"):
        read_upload(f"csv:{tmp_path / 'gone.csv'}")
    check_columns("rotten-tomatoes", None, None)  # named tasks pass


def test_data_tab_handlers(tmp_path):
    """What the Data tab shows: the kept file and its header, a preview, and each problem as one message."""
    from surmlab.app.data_tab import kept_uploads, on_choose, on_preview, on_upload

    runs = tmp_path / "runs"
    source = write(tmp_path / "reviews.csv", "review,sentiment\n" + ROWS)
    picked = on_upload(str(source), runs)
    assert picked.task == f"csv:{upload_root(runs) / 'reviews.csv'}" and picked.columns == ("review", "sentiment")
    assert (picked.text_column, picked.label_column) == (
        "review",
        "sentiment",
    ) and "Kept **reviews.csv**" in picked.message
    message, rows, counts = on_preview(picked.task, "review", "sentiment", "(none)")
    assert message.startswith("**32 train / 8 eval examples**, 2 classes") and len(rows) == 8
    assert counts.to_dict("list") == {"label": ["neg", "pos"], "count": [20, 20]}
    message, rows, _ = on_preview(picked.task, "text", "sentiment", None)
    assert (
        message
        == "**Cannot train on this:** column 'text' not found in reviews.csv; available columns: review, sentiment"
    )
    assert rows.empty
    assert kept_uploads(runs) == [("reviews.csv", picked.task)] and on_choose(picked.task).columns == picked.columns
    latin = on_upload(str(write(tmp_path / "latin.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"))), runs)
    assert latin.task is None and latin.message.startswith("**Not kept:** latin.csv is not UTF-8 text")
