"""`exo2ego_base.run_folder.RunFolder`: record and resume with an allow-list, foreign folders refused by what they
record, `--overwrite`, staging, and what a killed process leaves behind."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exo2ego_base.run_folder import (
    FOLDER_FILE,
    UNSET,
    Difference,
    RunFolder,
    compare_arguments,
    read_identity,
)

ROOT = Path(__file__).resolve().parents[1]


def stage_folder(path, **kwargs):
    return RunFolder(path, "a stage folder", "stage.json", record="run.json", **kwargs)


def eval_folder(path, **kwargs):
    return RunFolder(path, "an eval run folder", "results.json", record="run_config.json", **kwargs)


ARGUMENTS = {"training": {"learning_rate": 0.001, "output_dir": "a", "hub_model_id": "x/y"}, "data": {"rows": 4}}


# ---- record and resume -------------------------------------------------------------------------------------------


def test_record_claims_the_folder_and_a_resume_with_the_same_arguments_passes(tmp_path):
    folder = stage_folder(tmp_path / "run")
    folder.record(ARGUMENTS)
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == ARGUMENTS
    assert read_identity(tmp_path / "run") == folder.identity
    assert folder.is_mine() and not folder.is_finished()
    folder.check_resume(json.loads(json.dumps(ARGUMENTS)))  # compared with the record file


def test_a_resume_with_other_arguments_lists_every_difference(tmp_path):
    folder = stage_folder(tmp_path / "run")
    folder.record(ARGUMENTS)
    changed = {"training": {**ARGUMENTS["training"], "learning_rate": 0.0005}, "data": {"rows": 8, "seed": 1}}
    with pytest.raises(ValueError) as error:
        folder.check_resume(changed)
    message = str(error.value)
    assert message.startswith(f"cannot resume the run in {tmp_path / 'run'}: it was run with other arguments (")
    for part in ("data.rows: was 4, now 8", f"data.seed: was {UNSET!r}, now 1", "learning_rate: was 0.001, now"):
        assert part in message
    assert "--overwrite" in message
    assert error.value.differences == [
        Difference("data.rows", 4, 8),
        Difference("data.seed", UNSET, 1),
        Difference("training.learning_rate", 0.001, 0.0005),
    ]


def test_the_allow_list_names_what_a_resume_may_change(tmp_path):
    folder = stage_folder(tmp_path / "run")
    folder.record(ARGUMENTS)
    moved = {"training": {**ARGUMENTS["training"], "output_dir": "b", "hub_model_id": "x/z"}, "data": {"rows": 4}}
    folder.check_resume(moved, may_differ={"output_dir"}, may_differ_prefixes=("hub_",))
    with pytest.raises(ValueError, match=r"training\.hub_model_id: was 'x/y', now 'x/z'"):
        folder.check_resume(moved, may_differ={"output_dir"})


def test_the_message_reason_advice_and_line_are_the_callers(tmp_path):
    folder = stage_folder(tmp_path / "run", error=RuntimeError)
    folder.record(ARGUMENTS)
    with pytest.raises(RuntimeError, match=r"it trains other things \(rows: 4 before, 5 now\); start over"):
        folder.check_resume(
            {**ARGUMENTS, "data": {"rows": 5}},
            reason="it trains other things",
            advice="start over",
            line="{short}: {before!r} before, {now!r} now",
        )


def test_optional_parts_are_compared_only_where_both_runs_have_them():
    before = {"settings": {"scorer": "a"}, "data": {"task1": "sha-1", "task2": "sha-2"}}
    now = {"settings": {"scorer": "a"}, "data": {"task1": "sha-1", "task3": "sha-3"}}
    assert compare_arguments(before, now, optional_prefixes=("data.",), missing=None) == []
    assert [d.name for d in compare_arguments(before, now)] == ["data.task2", "data.task3"]
    assert compare_arguments(before, {**now, "data": {"task1": "other"}}, optional_prefixes=("data.",)) == [
        Difference("data.task1", "sha-1", "other")
    ]


def test_without_a_record_there_is_nothing_to_compare(tmp_path):
    stage_folder(tmp_path / "new").check_resume(ARGUMENTS)
    assert not (tmp_path / "new").exists()


# ---- foreign folders ---------------------------------------------------------------------------------------------


def test_a_folder_another_kind_wrote_is_refused_naming_that_kind_from_the_folder(tmp_path):
    out = tmp_path / "out"
    stage_folder(out).finish({"stage": "stage1"})
    other = eval_folder(out, label=f"--out {out}", error=RuntimeError)
    assert not other.is_mine() and not other.is_finished()
    with pytest.raises(RuntimeError, match=r"--out .*out is a stage folder \(stage\.json\); eval never writes"):
        other.refuse_foreign(advice="eval never writes into it")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError):
        other.refuse_foreign()
    assert sorted(p.name for p in out.iterdir()) == before  # nothing changed
    stage_folder(out).refuse_foreign()  # its own kind


def test_an_unfinished_foreign_folder_says_so(tmp_path):
    stage_folder(tmp_path / "out").record(ARGUMENTS)
    with pytest.raises(ValueError, match=r"is a stage folder \(unfinished: no stage\.json yet\)"):
        eval_folder(tmp_path / "out").refuse_foreign()


def test_folders_of_other_tools_are_told_by_their_files_and_only_when_nobody_claimed_the_folder(tmp_path):
    others = {"config.json": "a model folder"}
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a model folder \(config\.json\)"):
        eval_folder(model).refuse_foreign(others)
    stage = tmp_path / "stage"
    stage_folder(stage).finish({})
    (stage / "config.json").write_text("{}")  # a stage folder is a model folder too: its identity says which
    with pytest.raises(ValueError, match=r"is a stage folder \(stage\.json\)"):
        eval_folder(stage).refuse_foreign(others)


def test_a_folder_written_before_identities_is_this_kinds_when_it_holds_this_kinds_record_or_marker(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "run_config.json").write_text("{}")
    (legacy / "config.json").write_text("{}")
    folder = eval_folder(legacy)
    assert folder.owner() is None and folder.is_mine()
    folder.refuse_foreign({"config.json": "a model folder"})
    assert not stage_folder(legacy).is_mine()
    stage_folder(legacy).refuse_foreign()  # nobody's: no identity to name


def test_a_broken_identity_file_claims_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / FOLDER_FILE).write_text("not json")
    assert read_identity(tmp_path / "out") is None
    eval_folder(tmp_path / "out").refuse_foreign()
    assert read_identity(tmp_path / "missing") is None


# ---- overwrite ---------------------------------------------------------------------------------------------------


def test_clear_removes_what_the_kind_wrote_and_keeps_the_rest(tmp_path):
    out = tmp_path / "out"
    folder = stage_folder(out)
    folder.record(ARGUMENTS)
    (out / "weights.bin").write_text("w")
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "state").write_text("s")
    (folder.staging_dir / "output").mkdir(parents=True)
    (out / "notes.txt").write_text("mine, not the run's")
    (tmp_path / "outside.txt").write_text("keep")
    folder.finish({"files": ["weights.bin"]})
    folder.clear(["weights.bin", "checkpoint-1", "../outside.txt", "."])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (tmp_path / "outside.txt").read_text() == "keep"
    assert not folder.is_mine()


def test_overwrite_does_not_replace_a_folder_of_another_kind(tmp_path):
    out = tmp_path / "out"
    eval_folder(out).finish({})
    with pytest.raises(FileExistsError, match=r"is an eval run folder \(results\.json\)"):
        with RunFolder(out, "a dataset folder", "info.json", error=FileExistsError).staged(overwrite=True):
            raise AssertionError("never reached")
    assert sorted(p.name for p in out.iterdir()) == sorted([FOLDER_FILE, "results.json"])


def test_a_staged_folder_appears_whole_with_its_identity_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "data"
    folder = RunFolder(out, "a dataset folder", "info.json")
    with folder.staged() as staging:
        (staging / "table.parquet").write_text("v1")
        assert not out.exists()
        (staging / "info.json").write_text("{}")
    assert folder.is_finished() and read_identity(out) == folder.identity
    with pytest.raises(ValueError, match="already exists"):
        with folder.staged():
            pass
    with folder.staged(overwrite=True) as staging:
        folder_in_staging = RunFolder(staging, folder.kind, folder.marker)
        folder_in_staging.finish({"version": 2})
    assert sorted(p.name for p in out.iterdir()) == sorted([FOLDER_FILE, "info.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ---- staging and kills -------------------------------------------------------------------------------------------


def test_move_staged_moves_every_file_into_place(tmp_path):
    folder = stage_folder(tmp_path / "out")
    staged = folder.staging_dir / "output"
    (staged / "adapter").mkdir(parents=True)
    (staged / "model.safetensors").write_text("m")
    (staged / "adapter" / "adapter_config.json").write_text("{}")
    assert folder.move_staged(staged) == ["adapter/adapter_config.json", "model.safetensors"]
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    folder.clear_staging()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter", "model.safetensors"]


def test_files_left_in_the_staging_folder_by_a_kill_are_not_a_finished_run(tmp_path):
    folder = stage_folder(tmp_path / "out")
    folder.record(ARGUMENTS)
    staged = folder.staging_dir / "output"
    staged.mkdir(parents=True)
    (staged / "stage.json").write_text("{}")  # everything written, killed before the move
    assert not folder.is_finished() and folder.read_marker() is None
    folder.clear_staging()
    assert not folder.staging_dir.exists()


KILLED_IN_THE_BLOCK = """
import os, sys, time
from exo2ego_base.run_folder import RunFolder

folder = RunFolder(sys.argv[1], "a dataset folder", "info.json")
with folder.staged() as staging:
    (staging / "table.parquet").write_text("rows")
    (staging / "info.json").write_text("{}")
    print(staging, flush=True)
    time.sleep(60)
"""


def test_a_whole_folder_staging_left_by_a_kill_is_neither_the_folder_nor_kept(tmp_path):
    out = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_IN_THE_BLOCK, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        staging = Path(process.stdout.readline().strip())
        assert (staging / "info.json").is_file() and staging.name == f"data.tmp-{process.pid}"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    folder = RunFolder(out, "a dataset folder", "info.json")
    assert staging.is_dir() and not out.exists()  # the kill left the staging folder, and nothing at the folder
    assert not folder.is_finished() and folder.owner() is None
    with folder.staged() as fresh:
        (fresh / "info.json").write_text('{"again": true}')
    assert not staging.exists()  # the next run removed it
    assert folder.read_marker() == {"again": True}


def test_a_block_that_fails_leaves_nothing(tmp_path):
    folder = RunFolder(tmp_path / "data", "a dataset folder", "info.json")
    with pytest.raises(RuntimeError, match="boom"):
        with folder.staged() as staging:
            (staging / "info.json").write_text("{}")
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="did not write info.json"):
        with folder.staged():
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
