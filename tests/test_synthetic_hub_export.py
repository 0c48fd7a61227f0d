"""Hub export helpers: atomic folders, deterministic Parquet, dataset card configs, one-commit push."""

from __future__ import annotations

import hashlib
import json

import datasets
import pytest
import yaml

from datasets_scripts import hub_export

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "score": datasets.Value("float64"),
        "tags": datasets.List(datasets.Value("string")),
    }
)


def _rows(n):
    return [{"id": f"r{i:03d}", "score": i / 7, "tags": ["a"] * (i % 3)} for i in range(n)]


def _export(out, n=5, overwrite=False, fail=False):
    with hub_export.staged_folder(out, overwrite=overwrite) as staging:
        data_files = hub_export.write_parquet_configs(
            staging,
            {"main": {"train": _rows(n), "test": _rows(2), "empty": []}, "other": {"train": _rows(1)}},
            {"main": FEATURES, "other": FEATURES},
        )
        card = hub_export.make_dataset_card(
            data_files,
            pretty_name="Toy",
            license="apache-2.0",
            sections={"Licence": "ours", "Loading": "load_dataset(...)"},
        )
        card.save(staging / "README.md")
        if fail:
            raise ValueError("boom")
        hub_export.write_build_info(staging, {"counts": {"train": n}, "skips": {}, "seed": 0})
    return data_files


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_roundtrip_card_and_determinism(tmp_path):
    data_files = _export(tmp_path / "a")
    _export(tmp_path / "b")
    assert data_files["main"]["train"] == ["data/main/train-00000-of-00001.parquet"]
    assert "empty" not in data_files["main"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # byte-identical, README and build_info too

    front = (tmp_path / "a" / "README.md").read_text().split("---")[1]
    configs = {c["config_name"]: c for c in yaml.safe_load(front)["configs"]}
    assert configs["main"].get("default") is True and "default" not in configs["other"]
    assert {f["split"] for f in configs["main"]["data_files"]} == {"train", "test"}
    assert "## Licence" in (tmp_path / "a" / "README.md").read_text()

    ds = datasets.load_dataset(str(tmp_path / "a"), "main", split="train", download_mode="force_redownload")
    assert ds.features == FEATURES and ds["id"] == [f"r{i:03d}" for i in range(5)]
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert info["counts"] == {"train": 5} and "datasets" in info["versions"]


def test_sharding_keeps_order(tmp_path):
    files = hub_export.write_parquet_configs(
        tmp_path, {"c": {"train": _rows(7)}}, {"c": FEATURES}, max_rows_per_shard=3
    )
    assert files["c"]["train"] == [f"data/c/train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset("parquet", data_files=[str(tmp_path / p) for p in files["c"]["train"]], split="train")
    assert ds["id"] == [f"r{i:03d}" for i in range(7)]


def test_atomic_refuse_replace_and_failure(tmp_path):
    out = tmp_path / "out"
    _export(out, n=3)
    with pytest.raises(hub_export.ExportError, match="already exists"):
        _export(out, n=4)
    with pytest.raises(ValueError, match="boom"):
        _export(out, n=4, overwrite=True, fail=True)
    # The failed build left the old complete folder untouched and no staging folder behind.
    assert json.loads((out / "build_info.json").read_text())["counts"] == {"train": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    _export(out, n=4, overwrite=True)
    assert json.loads((out / "build_info.json").read_text())["counts"] == {"train": 4}
    # A staging folder of a killed process is cleaned up by the next build.
    stale = tmp_path / "new.tmp-999999999"
    stale.mkdir()
    _export(tmp_path / "new")
    assert not stale.exists()
    # A block that forgets build_info.json does not produce a folder that looks complete.
    with pytest.raises(hub_export.ExportError, match="build_info"):
        with hub_export.staged_folder(tmp_path / "incomplete") as staging:
            (staging / "x.txt").write_text("x")
    assert not (tmp_path / "incomplete").exists()


def test_push_is_one_commit(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    _export(tmp_path / "out")
    calls = {"repo": [], "commit": []}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls["repo"].append((repo_id, kw)))

    def fake_commit(self, repo_id, operations, **kw):
        calls["commit"].append((repo_id, sorted(op.path_in_repo for op in operations), kw))
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_commit", fake_commit)
    assert hub_export.push_folder_to_hub(tmp_path / "out", "org/toy", private=True) == "commit-url"
    assert calls["repo"] == [("org/toy", {"repo_type": "dataset", "private": True, "exist_ok": True})]
    [(repo, paths, kw)] = calls["commit"]
    assert repo == "org/toy" and kw["repo_type"] == "dataset"
    assert paths == sorted(
        [
            "README.md",
            "build_info.json",
            "data/main/train-00000-of-00001.parquet",
            "data/main/test-00000-of-00001.parquet",
            "data/other/train-00000-of-00001.parquet",
        ]
    )

    (tmp_path / "out" / "clip.mp4").write_bytes(b"0")
    with pytest.raises(hub_export.ExportError, match="media"):
        hub_export.push_folder_to_hub(tmp_path / "out", "org/toy")
    with pytest.raises(hub_export.ExportError, match="not a complete"):
        hub_export.push_folder_to_hub(tmp_path, "org/toy")
    assert len(calls["commit"]) == 1


def test_load_folder_reads_rebuilt_folders(tmp_path):
    out = tmp_path / "rebuilt"
    _export(out, n=3)
    assert hub_export.load_folder(out, "main", split="train")["id"] == [f"r{i:03d}" for i in range(3)]
    _export(out, n=6, overwrite=True)  # load_dataset(out, "main") may still return the 3 cached rows here
    ds = hub_export.load_folder(out, "main", split="train")
    assert ds.features == FEATURES and len(ds) == 6
    assert set(hub_export.load_folder(out)) == {"train", "test"}  # default config, all splits
    with pytest.raises(hub_export.ExportError, match="no config 'nope'"):
        hub_export.load_folder(out, "nope")
