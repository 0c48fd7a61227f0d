"""Bad input to training, to `exo2ego tiny-model` and to the Hub push, as tables: the next bad input is one row.

Every refusal happens before a training step and leaves the output folder exactly as it was. Stages start from the
tiny base (`--allow_stage_mismatch true`) and train 2 steps in-process, so each row costs a second or two.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from test_train_pipeline import CONFIGS, ENV, REPO, data_args

from exo2ego.cli import main as exo2ego_main
from exo2ego_base.run_folder import RunFolder
from train.hub import files_to_push, push_stage_output
from train.pipeline import run_stage
from train.stage_folder import STAGE_METADATA_NAME

STEPS = ("--max_steps", "2", "--save_steps", "1", "--lr_scheduler_type", "constant")
DECOYS = (".env", "notes.txt", "private/.env")


def stage_argv(world, stage, out, *extra):
    return [
        "--config",
        str(CONFIGS / f"tiny_{stage}.yaml"),
        "--model_name_or_path",
        str(world / "base"),
        "--allow_stage_mismatch",
        "true",
        "--output_dir",
        str(out),
        *data_args(world, stage),
        *STEPS,
        *extra,
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic Ego-Exo world (3 takes), its Ego-ExoClip build and a tiny base checkpoint (as in
    test_train_pipeline)."""
    from datasets_scripts.ego_exoclip.export import build_ego_exoclip
    from datasets_scripts.ego_exoclip.plan import EgoExoClipOptions
    from datasets_scripts.synthetic.world import WorldConfig, generate_world
    from exo2ego.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("world")
    generate_world(root / "synth", WorldConfig(num_takes=3, actions_per_take=3, height=64, downscaled_height=32))
    build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root / "synth"), variant="448"), str(root / "ego-exoclip"))
    save_tiny_model(str(root / "base"))
    return root


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    """A finished stage-1 folder: 2 steps at the tiny yaml's learning rate 1e-3, checkpoints 1 and 2."""
    out = tmp_path_factory.mktemp("finished") / "stage1"
    run_stage("stage1", stage_argv(world, "stage1", out))
    return out


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file under `folder`; a file itself maps to its own entry."""
    if not os.path.exists(folder):
        return None
    if os.path.isfile(folder):
        return {".": (os.path.getsize(folder), os.stat(folder).st_mtime_ns)}
    entries = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            entries[os.path.relpath(path, folder)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return entries


def checkpoint_names(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("checkpoint-"))


def add_decoys(folder):
    for name in DECOYS:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("HF_TOKEN=hf_secret\n")


# ---- output folders a row starts from -------------------------------------------------------------------------


def fresh(tmp_path, finished):
    return tmp_path / "out"


def a_file(tmp_path, finished):
    path = tmp_path / "out"
    path.write_text("not a folder\n")
    return path


def with_decoys(tmp_path, finished):
    out = tmp_path / "out"
    out.mkdir()
    add_decoys(out)
    return out


def finished_copy(tmp_path, finished):
    return shutil.copytree(finished, tmp_path / "out")


def under_a_file(tmp_path, finished):
    (tmp_path / "a_file").write_text("not a folder\n")
    return tmp_path / "a_file" / "out"


def an_eval_run(tmp_path, finished):
    """A folder another command wrote: it records its kind and marker (`exo2ego_base.run_folder`)."""
    out = tmp_path / "out"
    RunFolder(out, "an eval run folder", "results.json", record="run_config.json").finish({"tasks": {}})
    return out


def a_downloaded_dataset(tmp_path, finished):
    """A dataset folder as the Hub gives it: `build_info.json` but no run-folder identity (pushes leave it out)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "build_info.json").write_text("{}")
    return out


def in_proc(tmp_path, finished):
    return Path("/proc/exo2ego-out")


def leftover_checkpoints(tmp_path, finished):
    """checkpoint-1 and checkpoint-2 of an earlier run (learning rate 1e-3) that never finished."""
    out = shutil.copytree(finished, tmp_path / "out")
    (out / STAGE_METADATA_NAME).unlink()
    return out


# (id, stage, output folder, extra arguments, error message pattern)
REFUSED_RUNS = [
    ("abbreviated-argument", "stage1", fresh, ["--learning_rat", "5e-4"], r"--learning_rat"),
    ("zero-train-samples", "stage1", fresh, ["--max_train_samples", "0"], r"max_train_samples must be >= 1, got 0"),
    ("negative-train-samples", "stage1", fresh, ["--max_train_samples", "-3"], r"max_train_samples must be >= 1"),
    ("subset-seed-alone", "stage1", fresh, ["--subset_seed", "0"], r"subset_seed draws the max_train_samples rows"),
    (
        "lora-regex-matches-nothing",
        "stage3",
        fresh,
        ["--lora_target_regex", r".*no_such_layer"],
        r"lora_target_regex '\.\*no_such_layer' matches no linear layer",
    ),
    (
        "lora-regex-invalid",
        "stage3",
        fresh,
        ["--lora_target_regex", "(q_proj"],
        r"lora_target_regex '\(q_proj' is not a valid regular expression",
    ),
    ("lora-r-without-lora", "stage1", fresh, ["--lora_r", "8"], r"lora_r=8 .*stage1 does not use it"),
    ("save-mode-without-lora", "stage2", fresh, ["--save_mode", "adapter"], r"save_mode='adapter' .*stage2 does not"),
    ("kl-weight-without-kl", "stage1", fresh, ["--kl_weight", "0.5"], r"kl_weight=0\.5 .*stage1 does not use it"),
    ("shuffle-pairs-without-pairs", "stage1", fresh, ["--shuffle_pairs", "true"], r"shuffle_pairs=True .*stage1"),
    ("mapping-lr-without-mappings", "stage1", fresh, ["--mapping_lr", "1e-4"], r"mapping_lr=0\.0001 .*stage1"),
    ("max-steps-0", "stage1", fresh, ["--max_steps", "0"], r"max_steps must be > 0, or -1 to train .* epochs, got 0"),
    ("max-steps-negative", "stage1", fresh, ["--max_steps", "-5"], r"max_steps must be > 0, or -1 .*got -5"),
    ("num-frames-0", "stage1", fresh, ["--num_frames", "0"], r"num_frames must be >= 1, got 0"),
    ("num-frames-negative", "stage1", fresh, ["--num_frames", "-2"], r"num_frames must be >= 1, got -2"),
    (
        "gradient-accumulation-0",
        "stage1",
        fresh,
        ["--gradient_accumulation_steps", "0"],
        r"gradient_accumulation_steps must be >= 1, got 0",
    ),
    (
        "wrong-video-root",
        "stage1",
        fresh,
        ["--video_root", str(REPO)],
        rf"the first row's video '[^']+\.mp4' is not under the video root '{re.escape(str(REPO))}' .*--video_root",
    ),
    (
        "wrong-video-root-egoit",
        "stage3",
        fresh,
        ["--video_root", str(REPO)],
        r"dataset .*egoit' \(split 'train'\): the first row's video .* is not under the video root",
    ),
    ("output-dir-is-a-file", "stage1", a_file, [], r"output_dir .*out' is a file"),
    ("output-dir-under-a-file", "stage1", under_a_file, [], r"output_dir .*a_file/out lies under the file .*a_file,"),
    ("output-dir-in-proc", "stage1", in_proc, [], r"output_dir /proc/exo2ego-out cannot be created in /proc: "),
    ("output-dir-not-empty", "stage1", with_decoys, [], r"output_dir .*out' is not empty .*--overwrite_output_dir"),
    (
        "output-dir-of-another-command-even-with-overwrite",
        "stage1",
        an_eval_run,
        ["--overwrite_output_dir", "true"],
        r"output_dir .*out' is an eval run folder \(results\.json\); a stage never trains into another command's",
    ),
    (
        "output-dir-is-a-downloaded-dataset-even-with-overwrite",
        "stage1",
        a_downloaded_dataset,
        ["--overwrite_output_dir", "true"],
        r"output_dir .*out' is a built dataset folder \(build_info\.json\); a stage never trains into another",
    ),
    (
        "retrain-finished-stage",
        "stage1",
        finished_copy,
        [],
        r"holds a finished stage1 output .*--overwrite_output_dir true",
    ),
    (
        "resume-finished-stage-other-arguments",
        "stage1",
        finished_copy,
        ["--resume_from_checkpoint", "last", "--learning_rate", "5e-4"],
        r"learning_rate: 0\.001 .* now 0\.0005",
    ),
    (
        "resume-leftover-checkpoints-other-arguments",
        "stage1",
        leftover_checkpoints,
        ["--resume_from_checkpoint", "last", "--learning_rate", "5e-4"],
        r"learning_rate: 0\.001 .* now 0\.0005",
    ),
    (
        "resume-checkpoints-of-another-stage",
        "init",
        leftover_checkpoints,
        ["--resume_from_checkpoint", "last"],
        r"cannot resume the run in .*out as init: it trains stage1",
    ),
    (
        "leftover-checkpoints-without-resume",
        "stage1",
        leftover_checkpoints,
        [],
        r"checkpoints of an unfinished run .*--resume_from_checkpoint last .*--overwrite_output_dir true",
    ),
]


@pytest.mark.parametrize(
    "stage, make_output, extra, message", [row[1:] for row in REFUSED_RUNS], ids=[row[0] for row in REFUSED_RUNS]
)
def test_bad_training_input_is_refused_before_any_step(world, finished, tmp_path, stage, make_output, extra, message):
    out = make_output(tmp_path, finished)
    before = snapshot(out)
    with pytest.raises(ValueError, match=message):
        run_stage(stage, stage_argv(world, stage, out, *extra))
    assert snapshot(out) == before  # nothing trained, written or deleted


def _link_to_base(world, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(world / "base", target_is_directory=True)
    return link


# (id, output_dir from the world folder, how it sits to an input, that input): always refused, even when overwriting
OUTPUT_DIRS_ON_INPUTS = [
    ("output-dir-is-the-dataset", lambda world, tmp_path: world / "ego-exoclip", "is", "ego-exoclip"),
    ("output-dir-inside-the-video-root", lambda world, tmp_path: world / "synth" / "runs", "lies inside", "synth"),
    ("output-dir-contains-the-starting-model", lambda world, tmp_path: world, "contains", "base"),
    ("output-dir-links-to-the-starting-model", _link_to_base, "is", "base"),
]


@pytest.mark.parametrize(
    "make_output, relation, input_name",
    [row[1:] for row in OUTPUT_DIRS_ON_INPUTS],
    ids=[row[0] for row in OUTPUT_DIRS_ON_INPUTS],
)
def test_an_output_dir_on_an_input_is_refused_and_the_input_kept(world, tmp_path, make_output, relation, input_name):
    out = make_output(world, tmp_path)
    before = snapshot(world)
    message = rf"output_dir {re.escape(str(out))} {relation} the input folder {re.escape(str(world / input_name))}: "
    with pytest.raises(ValueError, match=message + "writing there could destroy the input"):
        run_stage("stage1", stage_argv(world, "stage1", out, "--overwrite_output_dir", "true"))
    assert snapshot(world) == before


# (id, change to the tiny stage-1 yaml, error message pattern)
REFUSED_CONFIGS = [
    (
        "key-written-twice",
        lambda text: text + "learning_rate: 5.0e-4\n",
        r"--config .*tiny_stage1\.yaml: line \d+: key 'learning_rate' is written twice \(first on line \d+\)",
    ),
    (
        "not-yaml",
        lambda text: text + "learning_rate: [\n",
        r"--config .*tiny_stage1\.yaml: while parsing .*, line \d+, column \d+$",
    ),
]


@pytest.mark.parametrize(
    "change, message", [row[1:] for row in REFUSED_CONFIGS], ids=[row[0] for row in REFUSED_CONFIGS]
)
def test_a_bad_config_file_is_refused_naming_it(world, tmp_path, change, message):
    config = tmp_path / "tiny_stage1.yaml"
    config.write_text(change((CONFIGS / "tiny_stage1.yaml").read_text()))
    argv = stage_argv(world, "stage1", tmp_path / "out")
    argv[argv.index("--config") + 1] = str(config)
    with pytest.raises(ValueError, match=message):
        run_stage("stage1", argv)
    assert not (tmp_path / "out").exists()


def test_resuming_a_finished_stage_reports_it_finished_and_trains_nothing(world, finished, tmp_path, caplog):
    out = finished_copy(tmp_path, finished)
    before = snapshot(out)
    with caplog.at_level("INFO", logger="train.pipeline"):
        assert run_stage("stage1", stage_argv(world, "stage1", out, "--resume_from_checkpoint", "last")) is None
    assert snapshot(out) == before
    assert "already finished" in caplog.text and "global_step 2" in caplog.text


def test_resuming_a_finished_stage_with_push_to_hub_pushes_it_without_training(world, finished, tmp_path, monkeypatch):
    out = finished_copy(tmp_path, finished)
    commits = intercept_hub(monkeypatch)
    run_stage(
        "stage1",
        stage_argv(
            world,
            "stage1",
            out,
            "--resume_from_checkpoint",
            "last",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "org/tiny-stage1",
        ),
    )
    assert json.loads((out / STAGE_METADATA_NAME).read_text())["global_step"] == 2
    assert len(commits) == 1 and "model.safetensors" in commits[0]


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_resuming_a_run_killed_after_its_last_checkpoint_trains_no_extra_step(world, finished, tmp_path, stage):
    """Killed after checkpoint-2 (= max_steps) but before the stage output was saved: Trainer alone would train a
    third step; the stage saves checkpoint-2's weights (stage 3: LoRA adapter + non-LoRA trainables, merged) instead,
    identical to those of the run that was not killed."""
    from safetensors.torch import load_file

    if stage == "stage1":
        out = leftover_checkpoints(tmp_path, finished)
    else:
        out = tmp_path / "out"
        run_stage(stage, stage_argv(world, stage, out))
        (out / STAGE_METADATA_NAME).unlink()
    uninterrupted = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    run_stage(stage, stage_argv(world, stage, out, "--resume_from_checkpoint", "last"))
    metadata = json.loads((out / STAGE_METADATA_NAME).read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    assert metadata["global_step"] == state["global_step"] == 2
    assert checkpoint_names(out) == ["checkpoint-1", "checkpoint-2"]
    resumed = load_file(out / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys() and all((resumed[k] == uninterrupted[k]).all() for k in resumed)


def test_stage_records_the_arguments_it_does_not_use_as_unused(finished):
    metadata = json.loads((finished / STAGE_METADATA_NAME).read_text())
    unused = set(metadata["unused_arguments"])
    assert {
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_regex",
        "save_mode",
        "kl_weight",
        "ccl_weight",
        "mapping_lr",
        "lora_lr",
    } <= unused
    assert not unused & {"learning_rate", "vision_tower_lr", "connector_lr", "exo_sampling"}
    recorded = {name for group in metadata["arguments"].values() for name in group}
    assert not unused & recorded and "learning_rate" in recorded


def intercept_hub(monkeypatch):
    """Record the commits instead of sending them."""
    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kwargs: (
            commits.append(sorted(op.path_in_repo for op in operations)) or "committed"
        ),
    )
    return commits


def test_push_uploads_only_the_files_the_stage_wrote(world, finished, tmp_path, monkeypatch):
    """Decoys in the folder before training (`--overwrite_output_dir true`) and after it stay local."""
    out = with_decoys(tmp_path, finished)
    run_stage("stage1", stage_argv(world, "stage1", out, "--overwrite_output_dir", "true"))
    (out / "later-notes.txt").write_text("added after training\n")
    metadata = json.loads((out / STAGE_METADATA_NAME).read_text())
    assert metadata["global_step"] == 2 and all((out / name).exists() for name in DECOYS)

    commits = intercept_hub(monkeypatch)
    assert push_stage_output(str(out), "org/tiny-stage1") == "committed"
    assert len(commits) == 1
    pushed = set(commits[0])
    assert not pushed & {*DECOYS, "later-notes.txt", "training_args.bin"}
    assert not [path for path in pushed if path.startswith("checkpoint-")]
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "modeling_exo2ego.py",
        "README.md",
        STAGE_METADATA_NAME,
        "trainer_state.json",
    } <= pushed
    assert pushed == set(files_to_push(str(out)))


def test_overwriting_a_finished_stage_removes_its_old_outputs(world, finished, tmp_path):
    out = finished_copy(tmp_path, finished)
    stale = out / "adapter" / "adapter_model.safetensors"  # as left by an earlier save_mode adapter run
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    metadata = json.loads((out / STAGE_METADATA_NAME).read_text())
    metadata["files"] = [*metadata["files"], "adapter/adapter_model.safetensors"]
    (out / STAGE_METADATA_NAME).write_text(json.dumps(metadata))
    run_stage("stage1", stage_argv(world, "stage1", out, "--overwrite_output_dir", "true", "--max_steps", "1"))
    assert not stale.exists()
    assert json.loads((out / STAGE_METADATA_NAME).read_text())["global_step"] == 1
    assert checkpoint_names(out) == ["checkpoint-1"]


# ---- exo2ego tiny-model ---------------------------------------------------------------------------------------

# (id, output folder, extra arguments, error message pattern)
REFUSED_TINY_MODELS = [
    ("out-is-a-file", a_file, [], r"--out .*out' is a file"),
    ("out-is-a-finished-stage", finished_copy, [], r"holds a finished stage1 output .*--overwrite"),
    ("out-not-empty", with_decoys, [], r"--out .*out' is not empty .*--overwrite"),
    ("out-is-a-file-even-with-overwrite", a_file, ["--overwrite"], r"--out .*out' is a file"),
]


@pytest.mark.parametrize(
    "make_output, extra, message",
    [row[1:] for row in REFUSED_TINY_MODELS],
    ids=[row[0] for row in REFUSED_TINY_MODELS],
)
def test_tiny_model_refuses_to_overwrite(finished, tmp_path, capsys, make_output, extra, message):
    out = make_output(tmp_path, finished)
    before = snapshot(out)
    assert exo2ego_main(["tiny-model", "--out", str(out), *extra]) == 2
    assert capsys.readouterr().err.startswith("exo2ego tiny-model: error: ")
    assert snapshot(out) == before


def test_tiny_model_overwrite_replaces_the_whole_folder(finished, tmp_path):
    out = finished_copy(tmp_path, finished)
    assert exo2ego_main(["tiny-model", "--out", str(out), "--overwrite"]) == 0
    names = set(os.listdir(out))
    assert "model.safetensors" in names and "config.json" in names
    assert not names & {STAGE_METADATA_NAME, "trainer_state.json", "checkpoint-1", "checkpoint-2"}
    assert not [name for name in os.listdir(tmp_path) if name != "out"]  # no staging folder left


# ---- base checkpoint writers (train.build_base, train.convert_videollama2) ------------------------------------

# (id, module main, output folder, error message pattern); the sources do not exist: the check comes first
REFUSED_BASE_WRITERS = [
    ("build-base-out-is-a-file", "train.build_base", a_file, r"--out .*out' already exists \(a file, not a folder\)"),
    ("build-base-out-is-a-finished-stage", "train.build_base", finished_copy, r"--out .*out' already exists"),
    ("convert-out-is-a-file", "train.convert_videollama2", a_file, r"--out .*out' already exists \(a file"),
    ("convert-out-is-a-finished-stage", "train.convert_videollama2", finished_copy, r"--out .*out' already exists"),
]


@pytest.mark.parametrize(
    "module, make_output, message",
    [row[1:] for row in REFUSED_BASE_WRITERS],
    ids=[row[0] for row in REFUSED_BASE_WRITERS],
)
def test_base_writers_refuse_an_existing_out_before_loading(finished, tmp_path, capsys, module, make_output, message):
    import importlib

    out = make_output(tmp_path, finished)
    before = snapshot(out)
    sources = {
        "train.build_base": ["--vision", str(tmp_path / "no-clip"), "--text", str(tmp_path / "no-llm")],
        "train.convert_videollama2": ["--src", str(tmp_path / "no-videollama2")],
    }[module]
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([*sources, "--out", str(out)])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert snapshot(out) == before


def test_settings_an_ablation_switches_off_are_logged_as_unused_not_refused(caplog):
    """One yaml serves a stage and its ablations (`exo2ego ablate`): stage 3's LoRA settings under `no_lora` are
    recorded as unused with a warning; the same settings on a stage that never uses them stay refused."""
    from train.arguments import DataArguments, ModelArguments, StageArguments, check_stage_arguments
    from train.trainer import Exo2EgoTrainingArguments

    def check(stage, ablations=()):
        stage_args = StageArguments(ablations=list(ablations), lora_r=8, lora_dropout=0.0)
        return check_stage_arguments(
            stage,
            ModelArguments(model_name_or_path="m"),
            DataArguments(dataset_path="d"),
            stage_args,
            Exo2EgoTrainingArguments(output_dir="o"),
        )

    assert "lora_r" not in check("stage3")
    with caplog.at_level("WARNING", logger="train.arguments"):
        unused = check("stage3", ["no_lora"])
    assert {"lora_r", "lora_dropout", "save_mode"} <= set(unused)
    assert "lora_r=8 is unused: ablations ['no_lora']" in caplog.text
    with pytest.raises(ValueError, match=r"lora_r=8 is set, but stage1 does not use it"):
        check("stage1")


def test_a_stage_script_reports_bad_input_in_one_line(world, tmp_path):
    """What `accelerate launch train/stage1.py ...` users see: the error, not a traceback, and exit status 2."""
    command = [sys.executable, str(REPO / "train" / "stage1.py")]
    command += stage_argv(world, "stage1", tmp_path / "out", "--max_train_samples", "0")
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train/stage1.py: error: max_train_samples must be >= 1, got 0" in result.stderr
    assert not (tmp_path / "out").exists()
