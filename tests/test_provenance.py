"""The shared result-recording helpers: atomic file writes and package versions."""

import json
from pathlib import Path

import pytest

from exo2ego_base.provenance import (
    atomic_path,
    atomic_write,
    package_versions,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)


def test_write_json_atomic_writes_sorted_json_and_keeps_the_old_file_when_serializing_fails(tmp_path):
    path = write_json_atomic(tmp_path / "new" / "results.json", {"b": 1, "a": [1.5, None]})
    assert path.read_text().startswith('{\n  "a"') and json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": Path("x")})
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}  # the reader never sees half a file
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # nor a stray temp file
    write_json_atomic(path, {"a": Path("x")}, default=str)
    assert json.loads(path.read_text()) == {"a": "x"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_atomic_write_leaves_neither_a_partial_file_nor_a_temp_file_when_the_write_fails(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "report.md", "old\n")
    assert path.read_text() == "old\n"
    with pytest.raises(RuntimeError, match="killed"), atomic_write(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["report.md"]
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "never.bin", "wb") as handle:
        handle.write(b"x")
        raise RuntimeError
    assert not (tmp_path / "never.bin").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_atomic_path_keeps_the_suffix_for_writers_that_need_it_and_renames_only_on_success(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".clip.tmp-")
        tmp.write_bytes(b"video")
        assert not target.exists()  # nothing at the final name before the block ends
    assert target.read_bytes() == b"video" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_staged_folder_replaces_the_output_only_when_the_block_finishes_and_wrote_its_marker(tmp_path):
    out = tmp_path / "ckpt"
    with staged_folder(out, marker="done.json") as staging:
        (staging / "weights").write_text("v1")
        assert not out.exists()
        write_json_atomic(staging / "done.json", {})
    assert (out / "weights").read_text() == "v1"
    with pytest.raises(FileExistsError, match="complete: it has done.json"):
        with staged_folder(out, marker="done.json"):
            pass
    with pytest.raises(RuntimeError, match="killed"):
        with staged_folder(out, marker="done.json", overwrite=True) as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(FileExistsError, match="did not write done.json"):
        with staged_folder(out, marker="done.json", overwrite=True) as staging:
            (staging / "weights").write_text("v2 without its marker")
    assert (out / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with staged_folder(out, marker="done.json", overwrite=True) as staging:
        write_json_atomic(staging / "done.json", {"version": 2})
    assert sorted(p.name for p in out.iterdir()) == ["done.json"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        with staged_folder(tmp_path / "file", marker="done.json", overwrite=True):
            pass


def test_package_versions_names_python_and_marks_missing_packages():
    versions = package_versions(["torch", "no-such-package-exo2ego"])
    assert versions["python"].count(".") == 2 and versions["torch"].startswith("2.")
    assert versions["no-such-package-exo2ego"] == "not installed"
