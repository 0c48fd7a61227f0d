"""The GPU benchmarks on CPU at test size: FLOP formula against torch's FLOP counter, the memory counter, the
checkpointing set-up, and both scripts end to end (JSON fields and finite values; never timing)."""

import json
import math

import pytest
import torch

from benchmarks.flops import StepShape, clip_tower_flops, exo2ego_step_flops, peer_step_flops, peer_video_tokens
from benchmarks.gpu_setup import apply_peer_training
from train.model_at_scale import ModelSize, apply_stage, build_model, configure_checkpointing, synthetic_batch

CPU = torch.device("cpu")
SHAPE = StepShape(batch=2, frames=4, text_tokens=24)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops run fastest on one thread on a shared machine (no OpenMP spinning); restored for the other tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    bias,
    stride,
    padding,
    dilation,
    transposed,
    output_padding,
    groups,
    output_mask,
    out_shape=None,
    **kwargs,
):
    """torch's conv-backward FLOP formula ignores `groups` for the weight gradient (a depthwise conv's would count
    C times too much); both gradients cost what the forward costs: 2 * weight.numel() * positions."""
    positions = math.prod(x_shape if transposed else grad_out_shape) // (
        x_shape[1] if transposed else grad_out_shape[1]
    )
    forward = 2 * math.prod(w_shape) * positions
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def counted_step_flops(model, batch, loss_fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}
    ) as counter:
        loss_fn(model, batch).backward()
    return counter.get_total_flops()


def tiny_exo2ego(stage: str, attn: str = "eager", lora_r: int = 8):
    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    config = ModelSize("tiny").exo2ego_config(SHAPE.frames)
    torch.manual_seed(0)
    model = build_model(Exo2EgoForConditionalGeneration, config, CPU, torch.float32, attn)
    model, resolved = apply_stage(model, stage, lora_r, 2 * lora_r, 0.0)
    model.train()
    batch = synthetic_batch(
        config.text_config.vocab_size,
        config.video_token_id,
        2 * config.tokens_per_stream(SHAPE.frames),
        SHAPE.batch,
        SHAPE.frames,
        config.ego_vision_config.image_size,
        SHAPE.text_tokens,
        CPU,
        torch.float32,
        exo=stage == "stage2",
    )
    return model, config, resolved, batch


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_exo2ego_flop_formula_equals_torch_flop_counter(stage):
    """Forward + the backward autograd really runs (weight grads only for trainable weights, input grads only where a
    gradient flows) equals the formula exactly, counting what executes (unused CLIP layer, full attention squares)."""
    from benchmarks.gpu_train_step import stage2_loss, stage3_loss

    model, config, resolved, batch = tiny_exo2ego(stage)
    counted = counted_step_flops(model, batch, stage2_loss if stage == "stage2" else stage3_loss)
    formula = exo2ego_step_flops(
        config, resolved.trainable, resolved.losses, 8 if resolved.lora else 0, SHAPE, include_waste=True, causal=False
    )
    assert formula.total == counted
    useful = exo2ego_step_flops(config, resolved.trainable, resolved.losses, 8 if resolved.lora else 0, SHAPE)
    assert useful.total < counted  # causal attention and the unused tower layer are not model FLOPs


def test_peer_flop_formula_equals_torch_flop_counter():
    from transformers import LlavaNextVideoForConditionalGeneration

    from benchmarks.gpu_train_step import peer_loss

    config = ModelSize("tiny").peer_config()
    torch.manual_seed(0)
    model = apply_peer_training(
        build_model(LlavaNextVideoForConditionalGeneration, config, CPU, torch.float32, "eager"), 8, 16, 0.0
    )
    model.train()
    batch = synthetic_batch(
        config.text_config.vocab_size,
        config.video_token_index,
        peer_video_tokens(config, SHAPE.frames),
        SHAPE.batch,
        SHAPE.frames,
        config.vision_config.image_size,
        SHAPE.text_tokens,
        CPU,
        torch.float32,
    )
    counted = counted_step_flops(model, batch, peer_loss)
    assert peer_step_flops(config, 8, SHAPE, include_waste=True, causal=False).total == counted


def test_stage_roles_in_the_flop_breakdown():
    from train.stages import resolve_stage

    config = ModelSize("tiny").exo2ego_config(SHAPE.frames)
    stage2 = resolve_stage("stage2")
    flops = exo2ego_step_flops(config, stage2.trainable, stage2.losses, 0, SHAPE).components
    assert flops["exo_tower"].input_grad == flops["exo_tower"].weight_grad == 0  # frozen, pixels in: forward only
    assert flops["llm"].weight_grad == 0 < flops["llm"].input_grad  # frozen, but VTG flows back through it
    assert flops["connector"].weight_grad == 0 < flops["connector"].input_grad
    assert flops["G"].input_grad < flops["G"].weight_grad  # G(y): its first conv needs no input gradient
    stage3 = resolve_stage("stage3")
    flops = exo2ego_step_flops(config, stage3.trainable, stage3.losses, 8, SHAPE).components
    assert "exo_tower" not in flops and "G" not in flops
    assert flops["connector"].weight_grad > 0 and flops["llm_lora"].weight_grad > 0
    tower = clip_tower_flops(config.ego_vision_config, -2, 1, trainable=True)
    assert tower.weight_grad < tower.forward < tower.input_grad  # attention: no weights, backward twice its forward
    assert clip_tower_flops(config.ego_vision_config, -2, 1, trainable=False).input_grad == 0


def test_checkpointing_modes_and_input_grad_fix():
    model, config, _, batch = tiny_exo2ego("stage2", attn="sdpa")
    vision, text = config.ego_vision_config.num_hidden_layers, config.text_config.num_hidden_layers
    # ego tower + LLM; the frozen exo tower runs no backward
    assert configure_checkpointing(model, "full")["layers"] == vision + text
    assert configure_checkpointing(model, "llm")["layers"] == text
    assert configure_checkpointing(model, "full", every=2)["layers"] == -(-vision // 2) + -(-text // 2)
    assert configure_checkpointing(model, "full", hf_input_grads=True)["layers"] == 2 * vision + text
    summary = configure_checkpointing(model, "full", convnets=True)
    assert summary["convnet_blocks"] == 1 + 1 + 2 * 2  # connector s1, s2 (depth 1); F and G, 2 blocks each
    batch = {k: v for k, v in batch.items() if k != "labels"}
    exo = model(**batch, use_cache=False, output_mapping_features=True).exo_features
    assert not exo.requires_grad  # the frozen exo tower builds no graph
    configure_checkpointing(model, "full", hf_input_grads=True)
    exo = model(**batch, use_cache=False, output_mapping_features=True).exo_features
    assert exo.requires_grad  # transformers' hooks on every patch embedding: the exo tower would run a backward
    assert configure_checkpointing(model, "none")["layers"] == 0


def test_executed_flops_with_transformers_input_grad_hooks():
    """What the hooks make autograd run (the frozen exo tower's and G(y)'s input gradients) is what the formula
    adds."""
    from benchmarks.gpu_train_step import stage2_loss

    model, config, resolved, batch = tiny_exo2ego("stage2")
    configure_checkpointing(model, "full", hf_input_grads=True)
    for module in model.modules():  # keep the hooks, drop the recompute (not part of the formula)
        if getattr(module, "gradient_checkpointing", False):
            module.gradient_checkpointing = False
    counted = counted_step_flops(model, batch, stage2_loss)
    hooked = exo2ego_step_flops(
        config, resolved.trainable, resolved.losses, 0, SHAPE, include_waste=True, causal=False, hf_input_grads=True
    )
    clean = exo2ego_step_flops(config, resolved.trainable, resolved.losses, 0, SHAPE, include_waste=True, causal=False)
    assert hooked.total == counted > clean.total


def test_saved_activation_counter_on_a_known_graph():
    from train.memory_count import SavedActivationCounter

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    with SavedActivationCounter(model) as counter:
        out = model(x.requires_grad_())
        saved = sum(counter.live_bytes().values())
    # x (for the first weight grad), the ReLU output (for its own backward and the second weight grad); weights
    # excluded.
    assert saved == (4 * 16 + 4 * 32) * 4
    del out


def test_meta_memory_estimate_matches_a_real_forward():
    """The paper-scale estimate runs on meta tensors; at tiny size its activation count equals a real CPU forward's."""
    from benchmarks.gpu_memory import estimate
    from benchmarks.gpu_train_step import stage3_loss
    from train.memory_count import SavedActivationCounter

    estimated = estimate(
        "stage3",
        SHAPE.batch,
        SHAPE.frames,
        SHAPE.text_tokens,
        "full",
        checkpoint_convnets=True,
        scale="tiny",
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        dtype=torch.float32,
    )
    model, _, _, batch = tiny_exo2ego("stage3", attn="sdpa")
    configure_checkpointing(model, "full", convnets=True)
    with SavedActivationCounter(model) as counter:
        loss = stage3_loss(model, batch)
        real = sum(counter.live_bytes().values())
    del loss
    assert estimated["activations_total_gib"] * 2**30 == pytest.approx(real, rel=0.05)
    paper = estimated["static_gib"]
    assert paper["grads"] == paper["weights_trainable"] and paper["adamw_states"] == 2 * paper["grads"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_gpu_train_step_tiny_writes_a_complete_json(tmp_path):
    from benchmarks.gpu_train_step import WORKLOADS, main

    out = tmp_path / "train.json"
    assert main(["--tiny", "--threads", "1", "--warmup", "0", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scale"] == "tiny" and result["device_type"] == "cpu" and result["versions"]["torch"]
    assert _finite(result["peak_matmul_tflops"]) and result["peak_matmul_tflops"] > 0
    rows = {row["workload"]: row for row in result["results"]}
    assert set(rows) == set(WORKLOADS)
    for row in rows.values():
        assert row["status"] == "ok"
        for key in (
            "step_s",
            "samples_per_s",
            "model_tflops",
            "mfu",
            "last_loss",
            "saved_activations_gib",
            "model_tflop_per_step",
            "executed_tflop_per_step",
        ):
            assert _finite(row[key]) and row[key] > 0, (row["workload"], key)
        assert row["executed_tflop_per_step"] >= row["model_tflop_per_step"]
    assert rows["stage2"]["trainable_modules"] == ["ego_to_exo", "ego_vision_tower", "exo_to_ego"]
    assert rows["stage3"]["lora"] and rows["stage3"]["params_m"]["lora_m"] > 0
    assert _finite(rows["peer"]["mfu_peer_script_formula"])
    # Full logits add the head on every position to the executed work (and keep (B, L, V) logits for backward).
    assert rows["stage3_full_logits"]["executed_tflop_per_step"] > rows["stage3"]["executed_tflop_per_step"]
    assert rows["stage3_full_logits"]["saved_activations_gib"] > rows["stage3"]["saved_activations_gib"]
    assert {"stage3_mfu_over_peer[full]", "full_logits_step_time_over_labelled[full]"} <= set(result["ratios"])


def test_gpu_eval_tiny_writes_a_complete_json(tmp_path):
    from benchmarks.gpu_eval import main

    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "--tiny",
                "--threads",
                "1",
                "--questions",
                "1",
                "--warmup",
                "0",
                "--generate-tokens",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert set(result["scorers"]) == {
        "letter_logprob",
        "option_loglik (cached prefix)",
        "per-option re-encoding",
        "generate_parse (2 tokens)",
    }
    for row in result["scorers"].values():
        assert row["questions"] == 1 and _finite(row["questions_per_s"]) and row["questions_per_s"] > 0
    assert all(_finite(v) and v > 0 for v in result["time_to_first_token"].values())
    assert all(_finite(v) and v > 0 for v in result["ratios"].values())
    # The cached prefix scores the options as K full forwards would (fp32 on CPU).
    assert result["cached_vs_reencoded_max_abs_diff"] < 1e-4
    assert result["prompt_tokens"]["letters"] > 2 * 75  # two streams of visual tokens plus the text
