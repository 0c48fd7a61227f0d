"""Stage table, trainable/gradient sets, loss terms, gradient accumulation, LR groups and checkpoint staging.

In-process on the tiny model with decoded random frames (no video files needed here)."""

import copy
import math
import os

import numpy as np
import pytest
import torch

from train.arguments import StageArguments
from train.collator import Exo2EgoCollator
from train.model_setup import prepare_model
from train.stages import resolve_stage
from train.trainer import Exo2EgoTrainer, Exo2EgoTrainingArguments

# The tiny towers have 2 encoder layers and the model reads hidden_states[-2]: the last layer and the
# post-layernorm never reach the features, so no stage trains them.
UNREACHED_TOWER_PARTS = ("encoder.layers.1.", "post_layernorm.")
LLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Written from DESIGN.md §3 and the paper's Tables 7-8, independently of train/stages.py:
# (stage, ablations) -> (modules updated in place, LoRA on the LLM).
SPEC = {
    ("init", ()): ({"ego_vision_tower", "exo_vision_tower", "connector"}, False),
    ("stage1", ()): ({"exo_vision_tower", "connector"}, False),
    ("stage2", ()): ({"ego_vision_tower", "ego_to_exo", "exo_to_ego"}, False),
    ("stage2", ("no_g_ccl",)): ({"ego_vision_tower", "ego_to_exo"}, False),
    ("stage2", ("no_kl",)): ({"ego_vision_tower", "ego_to_exo", "exo_to_ego"}, False),
    ("stage2", ("exo_tower_trainable",)): (
        {"ego_vision_tower", "exo_vision_tower", "ego_to_exo", "exo_to_ego"},
        False,
    ),
    # Without the cycle loss only the KL reaches the trainable exo tower: its teacher target keeps the gradient.
    ("stage2", ("exo_tower_trainable", "no_g_ccl")): ({"ego_vision_tower", "exo_vision_tower", "ego_to_exo"}, False),
    ("stage3", ()): ({"ego_vision_tower", "ego_to_exo", "connector"}, True),
    ("stage3", ("no_lora",)): ({"ego_vision_tower", "ego_to_exo", "connector"}, False),
    ("stage3", ("ego_tower_frozen",)): ({"ego_to_exo", "connector"}, True),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared box the thread spin-waits dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    from exo2ego_base.tiny import build_tiny_model

    return build_tiny_model(seed=0)


@pytest.fixture(scope="module")
def samples():
    """Two decoded samples with targets of different lengths (so token-weighting matters)."""
    rng = np.random.default_rng(0)
    frames = lambda: rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)  # noqa: E731
    return [
        {
            "sample_id": "a",
            "prompt": "Describe the activity.",
            "target": "C picks up the red cube.",
            "ego_frames": frames(),
            "exo_frames": frames(),
            "failed_videos": 0,
        },
        {
            "sample_id": "b",
            "prompt": "What happened?",
            "target": "C puts the blue bowl on the table with both hands.",
            "ego_frames": frames(),
            "exo_frames": frames(),
            "failed_videos": 0,
        },
    ]


def training_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        warmup_steps=0,
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return Exo2EgoTrainingArguments(**values)


def make_trainer(tiny, samples, tmp_path, stage, ablations=(), stage_args=None, **args_overrides):
    base, processor = tiny
    args = training_args(tmp_path, **args_overrides)
    resolved = resolve_stage(stage, ablations, kl_weight=args.kl_weight, ccl_weight=args.ccl_weight)
    model = prepare_model(copy.deepcopy(base), resolved, stage_args or StageArguments(lora_r=2, lora_alpha=4))
    return Exo2EgoTrainer(
        model=model,
        args=args,
        train_dataset=samples,
        data_collator=Exo2EgoCollator(processor, resolved.branches),
        processing_class=processor,
        stage=resolved,
    )


def plain_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


def expected_names(model, modules, lora):
    names = set()
    for name, _ in model.named_parameters():
        for module in modules:
            prefix = f"model.{module}."
            if name.startswith(prefix) and not (
                module.endswith("vision_tower") and name[len(prefix) :].startswith(UNREACHED_TOWER_PARTS)
            ):
                names.add(name)
        if lora and name.startswith("model.language_model.layers.") and name.split(".")[-2] in LLM_LINEAR:
            names |= {name.replace(".weight", f".lora_{ab}.default.weight") for ab in "AB"}
    return names


@pytest.mark.parametrize("stage,ablations", list(SPEC), ids=[f"{s}-{'+'.join(a) or 'default'}" for s, a in SPEC])
def test_trainable_and_gradient_sets_match_the_spec(tiny, samples, tmp_path, stage, ablations):
    modules, lora = SPEC[(stage, ablations)]
    expected = expected_names(tiny[0], modules, lora)
    trainer = make_trainer(tiny, samples, tmp_path, stage, ablations)
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, trainer.data_collator(samples))
    loss.backward()
    requires_grad = {plain_name(n) for n, p in model.named_parameters() if p.requires_grad}
    received = {plain_name(n) for n, p in model.named_parameters() if p.grad is not None}
    assert requires_grad == expected
    assert received == expected
    if lora:  # LoRA wraps exactly the LLM's linear layers (2 layers x 7 projections)
        assert sum(".lora_A." in n for n in requires_grad) == 2 * len(LLM_LINEAR)


def test_mlp_mapping_ablation_rebuilds_f_and_g_as_identity(tiny, samples, tmp_path):
    from modeling_exo2ego.modeling_exo2ego import Exo2EgoMlpMapping

    trainer = make_trainer(tiny, samples, tmp_path, "stage2", stage_args=StageArguments(mapping_type="mlp"))
    model = trainer.model
    assert isinstance(model.model.ego_to_exo, Exo2EgoMlpMapping) and isinstance(
        model.model.exo_to_ego, Exo2EgoMlpMapping
    )
    features = torch.randn(2, model.config.ego_vision_config.hidden_size, 8, 8)
    assert torch.allclose(model.model.ego_to_exo(features), features)
    trainer.compute_loss(model.train(), trainer.data_collator(samples)).backward()
    assert all(p.grad is not None for p in model.model.exo_to_ego.parameters())
    with pytest.raises(ValueError, match="only change in stage2"):
        make_trainer(tiny, samples, tmp_path, "stage3", stage_args=StageArguments(mapping_type="mlp"))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: resolve_stage("stage2", train_modules=["vision_tower"]), "unknown module"),
        (lambda: resolve_stage("stage2", ablations=["no_lora"]), "does not apply to stage2"),
        (lambda: resolve_stage("stage2", ablations=["no_gan"]), "unknown ablation"),
        (lambda: resolve_stage("stage4"), "unknown stage"),
        (
            lambda: resolve_stage("stage2", ablations=["exo_tower_trainable", "no_g_ccl", "no_kl"]),
            "reached only by the KL",
        ),
        (lambda: resolve_stage("stage1", train_modules=["ego_to_exo"]), "cannot train"),
    ],
)
def test_bad_stage_settings_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def train_and_collect(tiny, samples, tmp_path, ablations=(), **overrides):
    trainer = make_trainer(tiny, samples, tmp_path, "stage2", ablations, **overrides)
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer.state.log_history


def test_stage2_logs_each_term_and_zero_weights_do_not_move_parameters(tiny, samples, tmp_path):
    initial = dict(tiny[0].named_parameters())
    full, history = train_and_collect(tiny, samples, tmp_path)
    step_logs = [entry for entry in history if "loss" in entry]
    assert len(step_logs) == 2
    for entry in step_logs:
        for term in ("vtg_loss", "kl_loss", "ccl_loss"):
            assert math.isfinite(entry[term]), entry

    no_kl_weight, _ = train_and_collect(tiny, samples, tmp_path, kl_weight=0.0)
    no_kl, _ = train_and_collect(tiny, samples, tmp_path, ablations=("no_kl",))
    assert all(torch.equal(no_kl_weight[n], no_kl[n]) for n in no_kl)  # KL with weight 0 contributes nothing
    assert not torch.equal(no_kl_weight["model.ego_to_exo.head.1.weight"], full["model.ego_to_exo.head.1.weight"])

    no_ccl_weight, history = train_and_collect(tiny, samples, tmp_path, ccl_weight=0.0)
    no_g, _ = train_and_collect(tiny, samples, tmp_path, ablations=("no_g_ccl",))
    assert all(torch.equal(no_ccl_weight[n], no_g[n]) for n in no_g)
    g_names = [n for n in full if n.startswith("model.exo_to_ego.")]
    assert all(torch.equal(no_ccl_weight[n], initial[n]) for n in g_names)  # G does not move without the cycle loss
    assert any(not torch.equal(full[n], initial[n]) for n in g_names)  # ...and does with it
    assert "ccl_loss" not in history[0]


def test_trainer_gives_the_kl_the_frames_of_each_clip(tiny, samples, tmp_path, monkeypatch):
    """The per-sample KL groups the (B*T, C, g, g) feature rows into clips: the trainer passes T of the batch."""
    import train.trainer

    calls, real = [], train.trainer.kl_alignment_loss

    def spy(exo_features, mapped_ego_features, **kwargs):
        calls.append((exo_features.shape[0], kwargs))
        return real(exo_features, mapped_ego_features, **kwargs)

    monkeypatch.setattr(train.trainer, "kl_alignment_loss", spy)
    trainer = make_trainer(tiny, samples, tmp_path, "stage2")
    batch = trainer.data_collator(samples)
    trainer.compute_loss(trainer.model.train(), batch)
    ((rows, kwargs),) = calls
    clips, frames = batch["pixel_values_videos"].shape[:2]
    assert (kwargs["mode"], kwargs["frames_per_clip"], rows) == ("gaussian", frames, clips * frames)
    assert (clips, frames) == (2, 4)


def test_gradient_accumulation_matches_one_large_batch(tiny, samples, tmp_path):
    """2 micro-batches of 1 = 1 batch of 2 with SGD (whose step is proportional to the gradient); the two samples
    have different target lengths, so per-micro-batch means would give a different step. The default KL is a mean of
    per-sample terms, so it is additive over micro-batches too (`gaussian_batch` is not)."""
    common = dict(optim="sgd", learning_rate=0.5, max_steps=1, max_grad_norm=0.0, weight_decay=0.0)
    one_batch, _ = train_and_collect(tiny, samples, tmp_path, per_device_train_batch_size=2, **common)
    accumulated, _ = train_and_collect(
        tiny, samples, tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2, **common
    )
    initial = dict(tiny[0].named_parameters())
    moved = [n for n in one_batch if not torch.equal(one_batch[n], initial[n])]
    assert moved
    for name in moved:
        torch.testing.assert_close(accumulated[name], one_batch[name], rtol=1e-4, atol=1e-6, msg=name)


def test_logged_vtg_is_the_token_mean_of_the_whole_batch(tiny, samples, tmp_path):
    """Logged terms are weighted means summed over micro-batches (and ranks) before dividing, so 2 micro-batches of
    1 log the VTG of 1 batch of 2 although the two targets differ in length (a mean of micro-batch means would not)."""
    common = dict(optim="sgd", learning_rate=0.5, max_steps=1, max_grad_norm=0.0, weight_decay=0.0)
    _, one_batch = train_and_collect(tiny, samples, tmp_path, per_device_train_batch_size=2, **common)
    _, accumulated = train_and_collect(
        tiny, samples, tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2, **common
    )
    assert accumulated[0]["vtg_loss"] == pytest.approx(one_batch[0]["vtg_loss"], rel=1e-5)


def test_learning_rate_groups_weight_decay_and_schedule(tiny, samples, tmp_path):
    trainer = make_trainer(
        tiny,
        samples,
        tmp_path,
        "stage3",
        vision_tower_lr=1e-4,
        mapping_lr=3e-4,
        lora_lr=5e-4,
        learning_rate=2e-5,
    )
    optimizer = trainer.create_optimizer()
    names = {id(p): plain_name(n) for n, p in trainer.model.named_parameters()}
    # No decay on biases and normalisation weights (LayerNorm, the connector's LayerNorm2d `bn`, RMSNorm).
    norm_params = {
        id(p) for m in trainer.model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)
    }
    by_group = {group["group_name"]: group for group in optimizer.param_groups}
    assert by_group["vision_tower/decay"]["lr"] == 1e-4 and by_group["vision_tower/decay"]["weight_decay"] == 0.02
    assert by_group["mapping/decay"]["lr"] == 3e-4 and by_group["lora/decay"]["lr"] == 5e-4
    assert by_group["connector/decay"]["lr"] == 2e-5  # no connector_lr: the base learning rate
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            assert (group["weight_decay"] == 0.0) == (name.endswith("bias") or id(parameter) in norm_params), name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        p.requires_grad for p in trainer.model.parameters()
    )
    defaults = Exo2EgoTrainingArguments(output_dir=str(tmp_path / "defaults"), use_cpu=True)
    assert defaults.lr_scheduler_type == "cosine" and defaults.weight_decay == 0.02
    assert (defaults.adam_beta1, defaults.adam_beta2) == (0.9, 0.999)


def test_interrupted_checkpoint_save_leaves_no_complete_looking_folder(tiny, samples, tmp_path, monkeypatch):
    from transformers.trainer_utils import get_last_checkpoint

    trainer = make_trainer(tiny, samples, tmp_path, "stage1", save_strategy="steps", save_steps=1, max_steps=3)
    original = Exo2EgoTrainer._save_rng_state

    def crash_on_second_save(self, output_dir):
        if self.state.global_step == 2:
            raise KeyboardInterrupt("killed while saving")
        original(self, output_dir)

    monkeypatch.setattr(Exo2EgoTrainer, "_save_rng_state", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    out = trainer.args.output_dir
    assert sorted(name for name in os.listdir(out) if name.startswith("checkpoint-")) == ["checkpoint-1"]
    assert get_last_checkpoint(out) == os.path.join(out, "checkpoint-1")
    assert os.path.isfile(os.path.join(out, "checkpoint-1", "trainer_state.json"))


def test_fsdp2_wrap_policy_uses_the_model_layers(tiny, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    model = tiny[0]
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)  # the policy reads model._no_split_modules
    assert model._no_split_modules == {"CLIPEncoderLayer", "CLIPVisionEmbeddings", "MistralDecoderLayer"}
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [type(module).__name__ for module in model.modules() if policy(module)]
    assert sorted(set(wrapped)) == ["CLIPEncoderLayer", "CLIPVisionEmbeddings", "MistralDecoderLayer"]
    assert wrapped.count("CLIPEncoderLayer") == 4 and wrapped.count("MistralDecoderLayer") == 2


@pytest.mark.parametrize(
    "stage,lr,warmup,epochs,global_batch",
    [
        ("init", 1e-3, 0.1, 5, 512),
        ("stage1", 1e-4, 0.03, 2, 256),
        ("stage2", 1e-4, 0.03, 2, 256),
        ("stage3", 2e-5, 0.03, 1, 64),
    ],
)
def test_paper_configs_hold_table_14(stage, lr, warmup, epochs, global_batch):
    from train.arguments import parse_arguments

    config = os.path.join(os.path.dirname(__file__), "..", "train", "configs", f"{stage}.yaml")
    # bf16/tf32 need a GPU: this CPU box only checks the values.
    model_args, data_args, stage_args, args = parse_arguments(
        ["--config", config, "--use_cpu", "true", "--tf32", "false"]
    )
    assert (args.learning_rate, args.warmup_steps, args.num_train_epochs) == (lr, warmup, epochs)
    # Init's batch elements hold init_mix = EXO:EGO samples (one per source); Table 14 counts samples.
    per_element = sum(map(int, data_args.init_mix.split(":"))) if data_args.exo_dataset_path else 1
    assert args.per_device_train_batch_size * per_element == 8 and args.global_batch_size * per_element == global_batch
    samples_per_step = args.gradient_accumulation_steps * args.per_device_train_batch_size * args.world_size
    assert samples_per_step * per_element == global_batch
    assert (args.weight_decay, args.lr_scheduler_type, args.adam_beta1, args.adam_beta2) == (
        0.02,
        "cosine",
        0.9,
        0.999,
    )
    assert args.bf16 and data_args.num_frames == 16
    if stage == "stage3":
        assert (stage_args.lora_r, stage_args.lora_alpha, stage_args.lora_dropout) == (128, 256, 0.1)


def test_starting_folder_must_be_a_finished_output_of_the_previous_stage(tmp_path):
    import json

    from train.resume import check_starting_point
    from train.stage_folder import STAGE_METADATA_NAME

    folder = tmp_path / "stage1-run"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")  # a run that never wrote its stage metadata
    with pytest.raises(ValueError, match="unfinished stage output"):
        check_starting_point(str(folder), "stage2")
    (folder / STAGE_METADATA_NAME).write_text(json.dumps({"stage": "stage1"}))
    assert check_starting_point(str(folder), "stage2") == "stage1"
    with pytest.raises(
        ValueError, match="stage3 starts from the output of stage2, but .* holds a 'stage1' checkpoint"
    ):
        check_starting_point(str(folder), "stage3")
    assert check_starting_point(str(folder), "stage3", allow_mismatch=True) == "stage1"
    with pytest.raises(ValueError, match="not a directory"):
        check_starting_point(str(tmp_path / "missing"), "stage1")
