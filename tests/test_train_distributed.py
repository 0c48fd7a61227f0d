"""FSDP2 through `accelerate launch --config_file train/accelerate/fsdp2.yaml` on 2 CPU processes (gloo), against one
process with the same global batch (4 = 2 processes x 2 vs 1 x 4): the same losses step by step and the same final
weights; sharded checkpoints that resume after SIGKILL; a consolidated output that loads in a fresh process; bad
accelerate configs refused before the model loads.

The shipped yaml runs as it is, with two launcher overrides: `--num_processes 2` (this machine) and
`--mixed_precision no` (bf16 autocast would make the one-process comparison meaningless; it is the one setting where
the CPU run differs). The comparisons train with SGD, where a step is proportional to the gradient: AdamW divides by
sqrt(v) and so turns a reduction-order difference of 1e-9 in a near-zero gradient into a learning-rate-sized step.
Tolerances: losses and gradient norms relative 1e-5, weights absolute 1e-6 (measured: 1e-7 and 1e-8).
"""

import json
import os
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
FSDP2_YAML = REPO / "train" / "accelerate" / "fsdp2.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-6
# 8 rows, 4 per step: steps 3 and 4 run in the second epoch (a new shuffle and exo-camera draw).
COMPARISON = ["--max_train_samples", "8", "--optim", "sgd", "--allow_stage_mismatch", "true"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic Ego-Exo world (3 takes), its Ego-ExoClip build, and a tiny base checkpoint every stage starts from
    (`--allow_stage_mismatch`)."""
    from datasets_scripts.ego_exoclip.export import build_ego_exoclip
    from datasets_scripts.ego_exoclip.plan import EgoExoClipOptions
    from datasets_scripts.synthetic.world import WorldConfig, generate_world
    from exo2ego.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("world")
    generate_world(root / "synth", WorldConfig(num_takes=3, actions_per_take=3, height=64, downscaled_height=32))
    build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root / "synth"), variant="448"), str(root / "ego-exoclip"))
    save_tiny_model(str(root / "base"))
    return root


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_arguments(world, stage, out, *extra):
    data = "synth/egoit" if stage == "stage3" else "ego-exoclip"
    return [
        str(REPO / "train" / f"{stage}.py"),
        "--config",
        str(CONFIGS / f"tiny_{stage}.yaml"),
        "--model_name_or_path",
        str(world / "base"),
        "--output_dir",
        str(out),
        "--dataset_path",
        str(world / data),
        "--video_root",
        str(world / "synth"),
        *extra,
    ]


def fsdp2_command(world, stage, out, *extra):
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(FSDP2_YAML),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    return launcher + stage_arguments(world, stage, out, *extra)


def one_process_command(world, stage, out, *extra):
    return [sys.executable, *stage_arguments(world, stage, out, *extra, "--per_device_train_batch_size", "4")]


def run(command, timeout=600):
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def step_logs(folder):
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


def assert_same_training(fsdp, single, steps):
    fsdp_logs, single_logs = step_logs(fsdp), step_logs(single)
    assert len(fsdp_logs) == len(single_logs) == steps
    for step, (sharded, reference) in enumerate(zip(fsdp_logs, single_logs), start=1):
        terms = [key for key in reference if key == "loss" or key == "grad_norm" or key.endswith("_loss")]
        assert sorted(terms) == sorted(key for key in sharded if key in terms)
        for key in terms:
            assert sharded[key] == pytest.approx(reference[key], rel=LOSS_RTOL), f"step {step}: {key}"
    fsdp_weights, single_weights = load_file(fsdp / "model.safetensors"), load_file(single / "model.safetensors")
    assert fsdp_weights.keys() == single_weights.keys()
    for name, value in single_weights.items():
        torch.testing.assert_close(fsdp_weights[name], value, rtol=0, atol=WEIGHT_ATOL, msg=name)


def assert_fsdp2_ran(folder, wrapped_root):
    distributed = json.loads((folder / STAGE_METADATA_NAME).read_text())["distributed"]
    assert distributed["distributed_type"] == "FSDP" and distributed["num_processes"] == 2
    assert distributed["backend"] == "gloo" and distributed["mixed_precision"] == "no"
    fsdp = distributed["fsdp"]
    assert fsdp["version"] == 2 and fsdp["reshard_after_forward"] is True
    assert fsdp["state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["auto_wrap_policy"] == "transformer_auto_wrap_policy" and fsdp["cpu_offload"] is False
    # Both towers' layers and the LLM's layers are their own shard units; the rest (connector, F, G) is the root's.
    units = fsdp["sharded_units"]
    assert units["CLIPEncoderLayer"] >= 2 and units["MistralDecoderLayer"] == 2 and units[wrapped_root] == 1
    # The consolidated folder carries the model's remote code, not torch's FSDP sources.
    names = set(os.listdir(folder))
    assert {"model.safetensors", "modeling_exo2ego.py", "config.json"} <= names
    assert not [name for name in names if name.startswith("_fsdp")]


def assert_sharded_checkpoint(checkpoint):
    names = set(os.listdir(checkpoint))
    assert {"pytorch_model_fsdp_0", "optimizer_0", "rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= names
    assert "model.safetensors" not in names  # weights only as the per-rank shards of torch.distributed.checkpoint


LOAD_AND_GENERATE = """
import sys
import numpy as np
from transformers import AutoModel, AutoProcessor
folder, adapter = sys.argv[1], sys.argv[2:]
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
if adapter:
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, adapter[0])
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
batch = processor(text=["<video>\\nWhat did I do?"], videos=[np.zeros((4, 32, 32, 3), np.uint8)])
out = model.generate(**batch, max_new_tokens=2, do_sample=False)
print(type(model).__name__, out.shape[1] - batch["input_ids"].shape[1])
"""


def assert_loads_and_generates(folder, *adapter, expected="Exo2EgoForConditionalGeneration"):
    result = run([sys.executable, "-c", LOAD_AND_GENERATE, str(folder), *map(str, adapter)], timeout=120)
    assert result.stdout.split()[-2:] == [expected, "2"]


def test_fsdp2_stage2_matches_one_process_and_saves_a_loadable_folder(world, tmp_path):
    """The default-suite variant: stage 2 (VTG + KL + CCL, frozen and trainable parameters in one shard group)."""
    steps = ["--max_steps", "3", "--save_steps", "2"]
    run(fsdp2_command(world, "stage2", tmp_path / "fsdp", *COMPARISON, *steps))
    run(one_process_command(world, "stage2", tmp_path / "single", *COMPARISON, *steps))
    assert_same_training(tmp_path / "fsdp", tmp_path / "single", 3)
    assert_fsdp2_ran(tmp_path / "fsdp", "Exo2EgoForConditionalGeneration")
    assert_sharded_checkpoint(tmp_path / "fsdp" / "checkpoint-2")
    assert_loads_and_generates(tmp_path / "fsdp")


@pytest.mark.slow
@pytest.mark.parametrize("stage, extra", [("init", ()), ("stage3", ()), ("stage3", ("--save_mode", "adapter"))])
def test_fsdp2_matches_one_process(world, tmp_path, stage, extra):
    """init (two forwards per step), stage 3 with LoRA saved merged and as an adapter."""
    steps = ["--max_steps", "4", "--save_steps", "2", *extra]
    run(fsdp2_command(world, stage, tmp_path / "fsdp", *COMPARISON, *steps))
    run(one_process_command(world, stage, tmp_path / "single", *COMPARISON, *steps))
    assert_same_training(tmp_path / "fsdp", tmp_path / "single", 4)
    root = "PeftModelForCausalLM" if stage == "stage3" else "Exo2EgoForConditionalGeneration"
    assert_fsdp2_ran(tmp_path / "fsdp", root)
    assert_sharded_checkpoint(tmp_path / "fsdp" / "checkpoint-4")
    if "adapter" in extra:
        adapter = tmp_path / "fsdp" / "adapter"
        fsdp_adapter, single_adapter = (
            load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("fsdp", "single")
        )
        assert fsdp_adapter.keys() == single_adapter.keys() and fsdp_adapter
        for name, value in single_adapter.items():
            torch.testing.assert_close(fsdp_adapter[name], value, rtol=0, atol=WEIGHT_ATOL, msg=name)
        assert_loads_and_generates(tmp_path / "fsdp", adapter, expected="PeftModelForCausalLM")
    else:
        assert_loads_and_generates(tmp_path / "fsdp")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_killed_fsdp2_run_resumes_to_the_uninterrupted_weights(world, tmp_path, stage):
    """SIGKILL of the launcher while it trains, then `--resume_from_checkpoint last` from the sharded checkpoint."""
    steps = [
        "--max_steps",
        "8",
        "--save_steps",
        "2",
        "--save_total_limit",
        "2",
        "--logging_steps",
        "2",
        "--max_train_samples",
        "8",
        "--allow_stage_mismatch",
        "true",
    ]
    reference = tmp_path / "reference"
    run(fsdp2_command(world, stage, reference, *steps))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        fsdp2_command(world, stage, interrupted, *steps),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 400
    while not (interrupted / "checkpoint-4").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks
    process.wait()
    assert not (interrupted / STAGE_METADATA_NAME).exists(), "the run finished before it could be killed"
    checkpoints = sorted(name for name in os.listdir(interrupted) if name.startswith("checkpoint-"))
    assert checkpoints
    for name in checkpoints:
        assert_sharded_checkpoint(interrupted / name)
        # the adapter is in the shards; the in-place trained ego tower, F, connector and lm_head next to them
        assert (interrupted / name / "non_lora_trainables.safetensors").exists() == (stage == "stage3")

    run(fsdp2_command(world, stage, interrupted, *steps, "--resume_from_checkpoint", "last"))
    expected, resumed = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=WEIGHT_ATOL, msg=name)
    resumed_losses = [entry["loss"] for entry in step_logs(interrupted)][-2:]
    assert resumed_losses == pytest.approx([entry["loss"] for entry in step_logs(reference)][-2:], rel=LOSS_RTOL)


# ---- bad accelerate configs --------------------------------------------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any refusal must come before the model loads."""
    import train.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad configuration was refused")

    monkeypatch.setattr(train.pipeline, "load_model", refuse)


@pytest.mark.parametrize(
    "stage, environment, message",
    [
        ("stage2", {"FSDP_VERSION": "1"}, "fsdp_version: 1 .* FSDP2 only"),
        ("stage2", {"FSDP_BACKWARD_PREFETCH": "BACKWARD_PRE"}, "fsdp_backward_prefetch: BACKWARD_PRE .* FSDP1"),
        (
            "stage2",
            {"FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"},
            "fsdp_sharding_strategy: SHARD_GRAD_OP .* fsdp_reshard_after_forward",
        ),
        ("stage2", {"FSDP_USE_ORIG_PARAMS": "false"}, "fsdp_use_orig_params: false"),
        ("stage3", {"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: true .* not supported with LoRA"),
        (
            "stage2 --activation_checkpointing true",
            {"FSDP_ACTIVATION_CHECKPOINTING": "true"},
            "fsdp_activation_checkpointing: true .* activation_checkpointing: true",
        ),
    ],
)
def test_unusable_fsdp_config_is_refused_naming_the_key(
    world, tmp_path, monkeypatch, no_model_loading, stage, environment, message
):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets from an FSDP config
    monkeypatch.setenv("FSDP_VERSION", "2")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    stage, *extra = stage.split()
    arguments = stage_arguments(world, stage, tmp_path / "out", "--allow_stage_mismatch", "true", *extra)[1:]
    with pytest.raises(ValueError, match=message):
        run_stage(stage, arguments)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two processes starting up (~30 s on 2 shared cores); `Exo2EgoTrainingArguments` raises it
def test_world_size_that_does_not_divide_the_global_batch_is_refused(world, tmp_path):
    """2 processes x 2 per device cannot make a global batch of 6; refused before the model loads."""
    command = fsdp2_command(
        world, "stage2", tmp_path / "out", "--global_batch_size", "6", "--allow_stage_mismatch", "true"
    )
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert "global_batch_size=6 is not a multiple of per_device_train_batch_size (2) x processes (2)" in result.stderr
    assert "Loading weights" not in result.stderr
    assert not (tmp_path / "out").exists()


# ---- configs that cannot run here (DeepSpeed needs GPUs) ---------------------------------------------------------


@pytest.mark.parametrize("name, zero_stage", [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_deepspeed_configs_parse_into_the_plugin_the_stages_need(name, zero_stage):
    """What can be checked without DeepSpeed: accelerate parses the yaml into the DeepSpeed plugin it would build,
    with bf16 and no offload, and ZeRO-3 gathers a 16-bit model on save (the consolidated final folder needs it)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(REPO / "train" / "accelerate" / name))
    assert config.distributed_type == DistributedType.DEEPSPEED and config.mixed_precision == "bf16"
    settings = config.deepspeed_config
    plugin = DeepSpeedPlugin(
        zero_stage=settings["zero_stage"],
        zero3_init_flag=settings["zero3_init_flag"],
        zero3_save_16bit_model=settings.get("zero3_save_16bit_model", False),
        offload_optimizer_device=settings["offload_optimizer_device"],
        offload_param_device=settings["offload_param_device"],
    )
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == zero_stage
    assert zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "none"
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"  # Trainer sets it from global_batch_size
    if zero_stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp2_wrap_classes_are_the_paper_scale_layers():
    """The FSDP yamls wrap by `_no_split_modules`; at paper scale those are both towers' CLIP layers and Mistral's
    decoder layers, every name present in the model (accelerate refuses an absent one)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from modeling_exo2ego import Exo2EgoForConditionalGeneration
    from train.model_at_scale import ModelSize, build_model

    for name in ("fsdp2.yaml", "multi_node_fsdp2.yaml"):
        fsdp = load_config_from_file(str(REPO / "train" / "accelerate" / name)).fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp
        assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    model = build_model(
        Exo2EgoForConditionalGeneration,
        ModelSize("paper").exo2ego_config(16),
        torch.device("meta"),
        torch.bfloat16,
        "sdpa",
    )
    present = {type(module).__name__: 0 for module in model.modules()}
    for module in model.modules():
        present[type(module).__name__] += 1
    assert set(model._no_split_modules) == {"CLIPEncoderLayer", "CLIPVisionEmbeddings", "MistralDecoderLayer"}
    assert present["MistralDecoderLayer"] == 32 and present["CLIPEncoderLayer"] >= 2 * 23
