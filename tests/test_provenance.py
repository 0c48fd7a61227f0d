"""The shared result-recording helpers: atomic JSON writes and package versions."""

import json
from pathlib import Path

import pytest

from exo2ego.provenance import package_versions, write_json_atomic


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


def test_package_versions_names_python_and_marks_missing_packages():
    versions = package_versions(["torch", "no-such-package-exo2ego"])
    assert versions["python"].count(".") == 2 and versions["torch"].startswith("2.")
    assert versions["no-such-package-exo2ego"] == "not installed"
