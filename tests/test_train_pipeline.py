"""End to end from the command line on the synthetic world: the stage chain, bad input, 2-process data parallel,
SIGKILL + resume, and the Hub push (commit intercepted)."""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.pipeline import run_stage
from train.stage_folder import STAGE_METADATA_NAME

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "train" / "configs"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
CHECKPOINT_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
WEIGHT_FILES = {"stage3": ("adapter_model.safetensors", "non_lora_trainables.safetensors")}  # PEFT checkpoints


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic Ego-Exo world (3 takes), its Ego-ExoClip build, and a tiny base checkpoint."""
    from datasets_scripts.ego_exoclip.export import build_ego_exoclip
    from datasets_scripts.ego_exoclip.plan import EgoExoClipOptions
    from datasets_scripts.synthetic.world import WorldConfig, generate_world
    from exo2ego.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("world")
    generate_world(root / "synth", WorldConfig(num_takes=3, actions_per_take=3, height=64, downscaled_height=32))
    build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root / "synth"), variant="448"), str(root / "ego-exoclip"))
    save_tiny_model(str(root / "base"))
    return root


def data_args(world, stage):
    if stage == "stage3":
        return ["--dataset_path", str(world / "synth" / "egoit"), "--video_root", str(world / "synth")]
    return ["--dataset_path", str(world / "ego-exoclip"), "--video_root", str(world / "synth")]


def stage_command(world, stage, start, out, *extra, launcher=(sys.executable,)):
    return [
        *launcher,
        str(REPO / "train" / f"{stage}.py"),
        "--config",
        str(CONFIGS / f"tiny_{stage}.yaml"),
        "--model_name_or_path",
        str(start),
        "--output_dir",
        str(out),
        *data_args(world, stage),
        *extra,
    ]


def run(command, timeout=300):
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def chain(world):
    """init -> stage1 (under `accelerate launch`) -> stage2 -> stage3 (LoRA merged), each from the previous output."""
    outputs, start = {}, world / "base"
    for stage in ("init", "stage1", "stage2", "stage3"):
        launcher = (
            (sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1")
            if stage == "stage1"
            else (sys.executable,)
        )
        run(stage_command(world, stage, start, world / stage, launcher=launcher))
        outputs[stage] = start = world / stage
    return outputs


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def changed_modules(before, after):
    """Top-level Exo2Ego modules with at least one changed tensor."""
    return {
        name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
        for name in before
        if not torch.equal(before[name], after[name])
    }


def test_stage_chain_runs_and_each_stage_trains_its_modules(world, chain):
    expected_changes = {
        # the LLM stays frozen, as in the paper (the demo pretrains the tiny one on the world's text beforehand)
        "init": {"ego_vision_tower", "exo_vision_tower", "connector"},
        "stage1": {"exo_vision_tower", "connector"},
        "stage2": {"ego_vision_tower", "ego_to_exo", "exo_to_ego"},
        # the LLM changed by the merged LoRA; tiny_stage3.yaml also trains the tiny LLM's lm_head
        "stage3": {"ego_vision_tower", "ego_to_exo", "connector", "language_model", "lm_head"},
    }
    previous = world / "base"
    for stage, folder in chain.items():
        metadata = json.loads((folder / STAGE_METADATA_NAME).read_text())
        assert metadata["stage"] == stage and metadata["global_step"] == 3
        assert metadata["started_from"]["stage"] == (
            "base" if stage == "init" else json.loads((previous / STAGE_METADATA_NAME).read_text())["stage"]
        )
        assert changed_modules(weights(previous), weights(folder)) == expected_changes[stage]
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        steps = [entry for entry in history if "loss" in entry]
        assert len(steps) == 3
        terms = {"init": ("vtg_exo_loss", "vtg_ego_loss"), "stage2": ("vtg_loss", "kl_loss", "ccl_loss")}.get(
            stage, ("vtg_loss",)
        )
        assert all(math.isfinite(entry[term]) for entry in steps for term in terms)
        assert not any(
            name.startswith("checkpoint-") and not (folder / name / "trainer_state.json").exists()
            for name in os.listdir(folder)
        )
        previous = folder
    lora_targets = [n for n in weights(chain["stage3"]) if "lora_" in n]
    assert lora_targets == []  # merged: plain weights only


def test_bad_input_fails_before_any_step(world, chain, tmp_path):
    base = ["--config", str(CONFIGS / "tiny_stage2.yaml"), "--use_cpu", "true"]
    out = tmp_path / "out"

    yaml_with_unknown_module = tmp_path / "bad.yaml"
    yaml_with_unknown_module.write_text((CONFIGS / "tiny_stage2.yaml").read_text() + "train_modules: [vision_tower]\n")
    with pytest.raises(ValueError, match=r"unknown module\(s\) \['vision_tower'\]"):
        run_stage(
            "stage2",
            [
                "--config",
                str(yaml_with_unknown_module),
                "--model_name_or_path",
                str(chain["stage1"]),
                "--output_dir",
                str(out),
                *data_args(world, "stage2"),
            ],
        )
    with pytest.raises(
        ValueError, match="stage2 starts from the output of stage1, but .*init.* holds a 'init' checkpoint"
    ):
        run_stage(
            "stage2",
            [*base, "--model_name_or_path", str(chain["init"]), "--output_dir", str(out), *data_args(world, "stage2")],
        )

    import pyarrow.parquet as pq

    broken = tmp_path / "ego-exoclip"  # the export folder with its clips table lacking a column
    shutil.copytree(world / "ego-exoclip", broken)
    for parquet in broken.glob("**/clips/*.parquet"):
        pq.write_table(pq.read_table(parquet).drop_columns(["exo_cams"]), parquet)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['exo_cams'\]"):
        run_stage(
            "stage2",
            [
                *base,
                "--model_name_or_path",
                str(chain["stage1"]),
                "--output_dir",
                str(out),
                "--dataset_path",
                str(broken),
                "--video_root",
                str(world / "synth"),
            ],
        )
    assert not out.exists() or not any(out.iterdir())  # nothing was trained or written


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DDP_SCRIPT = """
import os, sys
from safetensors.torch import save_file
import train.pipeline as pipeline

save_stage_output = pipeline.save_stage_output


def dump_then_save(trainer, *args, **kwargs):  # each rank's trained parameters, before stage 3 merges LoRA on rank 0
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    save_file(state, os.path.join(sys.argv[1], f"rank{trainer.args.process_index}.safetensors"),
              metadata={"world_size": str(trainer.args.world_size),
                        "distributed": str(trainer.accelerator.distributed_type)})
    return save_stage_output(trainer, *args, **kwargs)


pipeline.save_stage_output = dump_then_save
pipeline.run_stage(sys.argv[2], sys.argv[3:])
"""
PREVIOUS = {"init": "base", "stage1": "init", "stage2": "stage1", "stage3": "stage2"}
TRAINED_PREFIX = {"init": "model.exo_vision_tower.", "stage2": "model.ego_to_exo.", "stage3": "model.connector."}


@pytest.mark.parametrize(
    "stage", ["stage2", pytest.param("init", marks=pytest.mark.slow), pytest.param("stage3", marks=pytest.mark.slow)]
)
def test_two_process_cpu_data_parallel_keeps_ranks_identical(world, chain, tmp_path, stage):
    """`torchrun` with `use_cpu=True`: gloo DDP (init runs two forwards per step, stage 3 wraps LoRA)."""
    from safetensors import safe_open

    start = world / "base" if stage == "init" else chain[PREVIOUS[stage]]
    script = tmp_path / "ddp_stage.py"
    script.write_text(DDP_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(script),
        str(tmp_path),
        stage,
        *stage_command(world, stage, start, tmp_path / "out", "--use_cpu", "true", "--max_steps", "2")[2:],
    ]
    run(command)
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1)]
    with safe_open(tmp_path / "rank0.safetensors", "pt") as handle:
        assert handle.metadata() == {"world_size": "2", "distributed": "DistributedType.MULTI_CPU"}
    distributed = json.loads((tmp_path / "out" / STAGE_METADATA_NAME).read_text())["distributed"]
    ran = (distributed["distributed_type"], distributed["num_processes"], distributed["backend"])
    assert ran == ("MULTI_CPU", 2, "gloo")
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0])
    before = weights(start)
    trained = [name.removeprefix("base_model.model.") for name in ranks[0]]
    assert any(
        not torch.equal(ranks[0][full], before[name])
        for full, name in zip(ranks[0], trained)
        if name.startswith(TRAINED_PREFIX[stage]) and name in before
    )


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_a_decoding_worker_trains_the_same_weights(world, chain, tmp_path, stage):
    """The tiny configs decode in one DataLoader worker (stage 3: a persistent one, over 3 epochs here, keeping its
    decoded cache); the batches, and so the weights, equal those decoded in the training process."""
    steps = ["--max_steps", "6", "--max_train_samples", "4", "--save_strategy", "no"]
    start = chain[PREVIOUS[stage]]
    run(stage_command(world, stage, start, tmp_path / "worker", *steps))
    no_worker = ["--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false"]
    run(stage_command(world, stage, start, tmp_path / "main", *steps, *no_worker))
    expected, with_worker = weights(tmp_path / "main"), weights(tmp_path / "worker")
    assert all(torch.equal(expected[name], with_worker[name]) for name in expected)
    assert (
        json.loads((tmp_path / "worker" / "exo2ego_run.json").read_text())["arguments"]["training"][
            "dataloader_num_workers"
        ]
        == 1
    )


@pytest.mark.parametrize("stage", ["stage1", pytest.param("stage3", marks=pytest.mark.slow)])
def test_killed_run_resumes_to_the_same_weights(world, chain, tmp_path, stage):
    """Stage 3 also restores LoRA and the in-place trained non-LoRA parameters from the checkpoint."""
    steps = ["--max_steps", "12", "--save_steps", "2", "--save_total_limit", "3", "--logging_steps", "4"]
    start = chain[PREVIOUS[stage]]
    reference = tmp_path / "reference"
    run(stage_command(world, stage, start, reference, *steps))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        stage_command(world, stage, start, interrupted, *steps),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (interrupted / "checkpoint-4").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / STAGE_METADATA_NAME).exists(), "the run finished before it could be killed"
    checkpoints = [name for name in os.listdir(interrupted) if name.startswith("checkpoint-")]
    expected_files = CHECKPOINT_FILES + WEIGHT_FILES.get(stage, ("model.safetensors",))
    assert checkpoints and all((interrupted / name / f).exists() for name in checkpoints for f in expected_files)

    run(stage_command(world, stage, start, interrupted, *steps, "--resume_from_checkpoint", "last"))
    expected, resumed = weights(reference), weights(interrupted)
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_push_is_one_commit_that_loads_in_a_fresh_process(chain, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from train.hub import push_stage_output

    folder = tmp_path / "stage3"
    shutil.copytree(chain["stage3"], folder)
    commits, pushed = [], tmp_path / "pushed"

    def fake_create_commit(self, repo_id, operations, commit_message, **kwargs):
        commits.append((repo_id, sorted(op.path_in_repo for op in operations), commit_message))
        for op in operations:
            target = pushed / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(op.path_or_fileobj, target)
        return "committed"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(HfApi, "create_commit", fake_create_commit)
    assert push_stage_output(str(folder), "org/exo2ego-tiny") == "committed"
    assert len(commits) == 1
    repo_id, files, message = commits[0]
    assert repo_id == "org/exo2ego-tiny" and "stage3" in message
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "modeling_exo2ego.py",
        "configuration_exo2ego.py",
        "processing_exo2ego.py",
        "video_io_exo2ego.py",
        "processor_config.json",
        "tokenizer.json",
        STAGE_METADATA_NAME,
    } <= set(files)
    assert not [f for f in files if f.startswith("checkpoint-") or f.endswith((".bin", ".pt", ".pth"))]
    card = (pushed / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: video-text-to-text" in card and "stage3" in card

    load = (
        "import numpy as np, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"model = AutoModel.from_pretrained({str(pushed)!r}, trust_remote_code=True)\n"
        f"processor = AutoProcessor.from_pretrained({str(pushed)!r}, trust_remote_code=True)\n"
        "frames = np.zeros((4, 32, 32, 3), np.uint8)\n"
        "batch = processor(text=['<video>\\nWhat did I do?'], videos=[frames])\n"
        "out = model.generate(**batch, max_new_tokens=2, do_sample=False)\n"
        "print(type(model).__name__, out.shape[1] - batch['input_ids'].shape[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", load], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["Exo2EgoForConditionalGeneration", "2"]


def test_train_rows_draws_a_seeded_subset_that_spans_the_table():
    """`max_train_samples` keeps the first rows; with `subset_seed` the same number drawn at random, the same draw for
    the same seed, so a 10% subset of EgoIT spreads over its takes instead of the first few."""
    from datasets import Dataset

    from train.arguments import DataArguments
    from train.dataset_setup import train_rows

    table = Dataset.from_dict({"take": [row // 10 for row in range(100)]})  # 10 takes of 10 rows each
    assert train_rows(table, DataArguments(dataset_path="x")) is table
    first = train_rows(table, DataArguments(dataset_path="x", max_train_samples=10))
    assert set(first["take"]) == {0}
    drawn = train_rows(table, DataArguments(dataset_path="x", max_train_samples=10, subset_seed=0))
    assert len(drawn) == 10 and len(set(drawn["take"])) > 3
    assert (
        drawn["take"]
        == train_rows(table, DataArguments(dataset_path="x", max_train_samples=10, subset_seed=0))["take"]
    )
    other = train_rows(table, DataArguments(dataset_path="x", max_train_samples=10, subset_seed=1))
    assert other["take"] != drawn["take"]
