"""Exo2Ego model and processor: forward modes, token counts, gradients, generation, errors, weight loading."""

import numpy as np
import pytest
import torch
from torch import nn

from exo2ego_base.tiny import build_tiny_model
from modeling_exo2ego import Exo2EgoForConditionalGeneration, num_connector_tokens
from modeling_exo2ego.modeling_exo2ego import FanInInit
from train.losses import kl_alignment_loss

QUESTION = "<video>\nWhat did I pick up?"


def video_batch(batch: int = 2, frames: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (frames + 3, 40, 56, 3), dtype=np.uint8) for _ in range(batch)]


def test_token_counts_match_for_every_connector_frame_count_and_mode():
    for connector in ("stc", "stc_v35"):
        model, processor = build_tiny_model(connector_type=connector)
        for frames in (2, 4, 6):
            videos = video_batch(frames=frames)
            per_stream = num_connector_tokens(frames, 8, connector)
            for mode, kwargs in (("ego", {"videos": videos}), ("exo", {"exo_videos": videos})):
                batch = processor(text=[QUESTION] * 2, num_frames=frames, **kwargs)
                expected = processor.num_video_tokens(frames, mode)
                assert expected == (2 if mode == "ego" else 1) * per_stream
                assert (batch["input_ids"] == processor.video_token_id).sum(1).tolist() == [expected, expected]
                with torch.no_grad():
                    model(**batch)  # raises if the model inserts another count


def test_placeholder_mismatch_raises_clear_error(tiny):
    model, processor = tiny
    batch = processor(text=[QUESTION], videos=video_batch(1), num_frames=4)
    batch["input_ids"] = batch["input_ids"][:, 5:]  # drop some placeholders
    with pytest.raises(ValueError, match="placeholder tokens per sample"):
        model(**batch)
    # Exo-only text (N placeholders) with ego pixels (2N tokens) is the same mismatch.
    exo_text = processor(text=[QUESTION], exo_videos=video_batch(1), num_frames=4)
    with pytest.raises(ValueError, match="do not match"):
        model(input_ids=exo_text["input_ids"], pixel_values_videos=exo_text["exo_pixel_values_videos"])


def modules_with_grad(model) -> set[str]:
    names = set()
    for name, param in model.named_parameters():
        if param.grad is not None and param.grad.abs().sum() > 0:
            names.add(".".join(name.split(".")[:2]) if name.startswith("model.") else name.split(".")[0])
    return names


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("ego", {"model.ego_vision_tower", "model.ego_to_exo", "model.connector", "model.language_model", "lm_head"}),
        ("exo", {"model.exo_vision_tower", "model.connector", "model.language_model", "lm_head"}),
        (
            "paired",
            {
                "model.ego_vision_tower",
                "model.exo_vision_tower",
                "model.ego_to_exo",
                "model.exo_to_ego",
                "model.connector",
                "model.language_model",
                "lm_head",
            },
        ),
    ],
)
def test_gradients_reach_exactly_the_modules_a_mode_uses(mode, expected):
    model, processor = build_tiny_model(seed=1)
    model.train()
    videos = video_batch(2)
    # The residual mappings start as the identity with a zero last layer: perturb it so gradients flow through.
    with torch.no_grad():
        for mapping in (model.model.ego_to_exo, model.model.exo_to_ego):
            mapping.head[-1].weight.normal_(std=0.02)
    kwargs = {"exo_videos": videos} if mode == "exo" else {"videos": videos}
    if mode == "paired":
        kwargs["exo_videos"] = video_batch(2, seed=1)
    batch = processor(text=["<video>\nWhat did I do? I picked up the cup"] * 2, num_frames=4, **kwargs)
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == processor.video_token_id, -100)
    out = model(**batch, labels=labels, output_mapping_features=mode == "paired")
    loss = out.loss
    if mode == "paired":
        loss = (
            loss
            + kl_alignment_loss(out.exo_features, out.ego_to_exo)
            + torch.nn.functional.l1_loss(out.exo_cycle, out.exo_features)
        )
        loss = loss + torch.nn.functional.l1_loss(out.ego_cycle, out.ego_features)
    else:
        assert out.exo_features is None and out.ego_to_exo is None  # nothing computed unless asked
    loss.backward()
    assert modules_with_grad(model) == expected


def test_ego_inference_does_not_run_the_exo_tower(tiny, monkeypatch):
    model, processor = tiny
    calls = []
    monkeypatch.setattr(model.model.exo_vision_tower, "forward", lambda *a, **k: calls.append(1))
    batch = processor(text=[QUESTION], videos=video_batch(1), exo_videos=video_batch(1, seed=3), num_frames=4)
    with torch.no_grad():
        model(**batch)
    assert calls == []


def test_generation_with_cache_matches_generation_without(tiny):
    model, processor = tiny
    for kwargs in ({"videos": video_batch(2)}, {"exo_videos": video_batch(2)}):
        batch = processor(text=[QUESTION, "<video>\nWhere is the red cube now?"], num_frames=4, padding=True, **kwargs)
        cached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
        assert cached.shape[1] == batch["input_ids"].shape[1] + 6
        assert torch.equal(cached, uncached)


def test_bad_inputs_raise_clear_errors(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        processor(text=[QUESTION], videos=[str(tmp_path / "missing.mp4")])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 20)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        processor(text=[QUESTION], videos=[str(corrupt)])
    with pytest.raises(ValueError, match="2 videos for 1 texts"):
        processor(text=[QUESTION], videos=video_batch(2))
    with pytest.raises(ValueError, match="contains <video> but no video"):
        processor(text=[QUESTION])
    with pytest.raises(ValueError, match="0 <video> placeholders"):
        processor(text=["What did I pick up?"], videos=video_batch(1))
    with pytest.raises(ValueError, match=r"must be \(frames, height, width, 3\)"):
        processor(text=[QUESTION], videos=[np.zeros((4, 8, 8), dtype=np.uint8)])
    batch = processor(text=[QUESTION], videos=video_batch(1), num_frames=4)
    with pytest.raises(ValueError, match="must be 32x32"):
        model(input_ids=batch["input_ids"], pixel_values_videos=torch.zeros(1, 4, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(batch, frames, 3, height, width\)"):
        model(input_ids=batch["input_ids"], pixel_values_videos=torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match="no video pixels"):
        model(input_ids=batch["input_ids"])
    paired = processor(text=[QUESTION] * 2, videos=video_batch(2), num_frames=4)
    with pytest.raises(ValueError, match="same \\(batch, frames\\)"):
        model(**paired, exo_pixel_values_videos=paired["pixel_values_videos"][:1], output_mapping_features=True)
    with pytest.raises(ValueError, match="fewer|distinct|requested"):
        strict = type(processor)(
            processor.image_processor, processor.tokenizer, num_frames=4, grid_size=8, short_video="error"
        )
        strict(text=[QUESTION], videos=[np.zeros((2, 8, 8, 3), dtype=np.uint8)])


def test_kl_modes_are_zero_for_identical_features_and_positive_otherwise():
    features = torch.randn(6, 16, 8, 8)
    for mode in ("token_softmax", "gaussian", "pooled"):
        assert kl_alignment_loss(features, features, mode=mode).item() == pytest.approx(0.0, abs=1e-5)
        assert kl_alignment_loss(features, 2 * features + 1, mode=mode).item() > 1e-3
    with pytest.raises(ValueError, match="kl_mode"):
        kl_alignment_loss(features, features, mode="cosine")


def test_mappings_start_as_identity(tiny):
    model, _ = tiny
    features = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.model.ego_to_exo(features), features)
        assert torch.allclose(model.model.exo_to_ego(features), features)
    mlp_model, _ = build_tiny_model(mapping_type="mlp")
    with torch.no_grad():
        assert torch.allclose(mlp_model.model.ego_to_exo(features), features)


def test_connector_and_mapping_layers_start_with_he_init():
    """Every conv/linear layer of the connector and both mappings is a He-init layer: zero bias and weights of std
    sqrt(2 / fan_in) (transformers' generic init would give 0.02)."""
    model, _ = build_tiny_model(seed=0, mapping_residual=False)  # no zero-init last layers: every layer is drawn
    parts = (model.model.connector, model.model.ego_to_exo, model.model.exo_to_ego)
    layers = [module for part in parts for module in part.modules() if hasattr(module, "weight")]
    layers = [module for module in layers if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d))]
    assert layers and all(isinstance(layer, FanInInit) for layer in layers)
    standardized = []
    for layer in layers:
        weight = layer.weight.detach()
        he_std = (2 / weight[0].numel()) ** 0.5  # fan_in = weight[0].numel() for linear, conv and transposed conv
        if weight.numel() >= 1000:
            assert weight.std().item() == pytest.approx(he_std, rel=0.15), layer
        standardized.append(weight.flatten() / he_std)
        assert layer.bias is None or not layer.bias.any()
    assert torch.cat(standardized).std().item() == pytest.approx(1.0, rel=0.03)


def test_from_pretrained_keeps_every_saved_weight(tmp_path):
    """Loading re-initialises nothing: weights moved away from their init (zero heads and biases included) load back
    exactly."""
    model, _ = build_tiny_model(seed=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    saved = model.state_dict()
    loaded = Exo2EgoForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    assert loaded.keys() == saved.keys()
    assert [name for name, tensor in loaded.items() if not torch.equal(tensor, saved[name])] == []


def test_ego_only_release_drops_exo_branch_and_generates(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "full")
    release = Exo2EgoForConditionalGeneration.from_pretrained(
        tmp_path / "full", include_exo_branch=False, attn_implementation="eager"
    )
    names = {name for name, _ in release.named_parameters()}
    assert not any(name.startswith(("model.exo_vision_tower", "model.exo_to_ego")) for name in names)
    release.save_pretrained(tmp_path / "release")
    reloaded = Exo2EgoForConditionalGeneration.from_pretrained(tmp_path / "release", attn_implementation="eager")
    batch = processor(text=[QUESTION], videos=video_batch(1), num_frames=4)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-6)
    assert reloaded.generate(**batch, max_new_tokens=3, do_sample=False).shape[1] == batch["input_ids"].shape[1] + 3
    with pytest.raises(ValueError, match="ego-only release"):
        reloaded(**processor(text=[QUESTION], exo_videos=video_batch(1), num_frames=4))


def test_attn_implementation_passes_through(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    for implementation in ("eager", "sdpa"):
        loaded = Exo2EgoForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=implementation)
        assert loaded.config.text_config._attn_implementation == implementation
        assert loaded.config.ego_vision_config._attn_implementation == implementation
    with pytest.raises((ImportError, ValueError)):
        Exo2EgoForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_build_from_clip_and_causal_lm_checkpoints(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=4,
        )
    )
    llm = MistralForCausalLM(
        MistralConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    llm.save_pretrained(tmp_path / "llm")
    model = Exo2EgoForConditionalGeneration.from_vision_text_pretrained(
        str(tmp_path / "clip"),
        str(tmp_path / "llm"),
        video_token_id=100,
        num_frames=4,
        connector_depth=1,
        mapping_ngf=8,
        mapping_n_blocks=2,
    )
    clip_state, ego_state, exo_state = (
        clip.state_dict(),
        model.model.ego_vision_tower.state_dict(),
        model.model.exo_vision_tower.state_dict(),
    )
    assert all(
        torch.equal(clip_state[key], ego_state[key]) and torch.equal(clip_state[key], exo_state[key])
        for key in clip_state
    )
    llm_state = llm.model.state_dict()
    assert all(
        torch.equal(value, model.model.language_model.state_dict()[key][: value.shape[0]])
        for key, value in llm_state.items()
    )
    assert torch.equal(model.lm_head.weight[:100], llm.lm_head.weight)
    assert model.get_input_embeddings().num_embeddings == 101  # grown to hold the new <video> id


def test_training_loss_skips_logits_and_equals_the_full_logits_loss(tiny):
    model, processor = tiny
    batch = processor(
        text=[QUESTION + " the red cube", "<video>\nWhere?"], videos=video_batch(2), num_frames=4, padding=True
    )
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == processor.video_token_id, -100)
    labels[:, :-4] = -100
    with torch.no_grad():
        full = model(**batch, labels=labels, skip_logits=False)
        fast = model(**batch, labels=labels, skip_logits=True)
    assert fast.logits is None and full.logits is not None
    assert torch.allclose(fast.loss, full.loss, atol=1e-6)
    model.train()
    try:
        assert model(**batch, labels=labels).logits is None  # the training default
    finally:
        model.eval()


def test_activation_checkpointing_covers_connector_and_mappings_without_changing_gradients():
    from modeling_exo2ego.modeling_exo2ego import RegNetBottleneck, ResnetBlock

    def loss_and_grads(checkpointing: bool):
        model, processor = build_tiny_model(seed=2)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            blocks = [m for m in model.modules() if isinstance(m, (RegNetBottleneck, ResnetBlock))]
            assert blocks and all(block.gradient_checkpointing for block in blocks)
        batch = processor(text=[QUESTION + " the cup"] * 2, videos=video_batch(2), num_frames=4)
        labels = batch["input_ids"].masked_fill(batch["input_ids"] == processor.video_token_id, -100)
        model(**batch, labels=labels).loss.backward()
        return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}

    plain, checkpointed = loss_and_grads(False), loss_and_grads(True)
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-6) for name in plain)


def test_input_require_grads_hooks_only_the_llm_embeddings(tiny):
    model, processor = tiny
    model.enable_input_require_grads()
    try:
        assert len(model._require_grads_hooks) == 1
        captured = {}
        hook = model.model.exo_vision_tower.embeddings.register_forward_hook(
            lambda m, i, o: captured.setdefault("exo", o)
        )
        with torch.enable_grad():
            model.requires_grad_(False)
            model(**processor(text=[QUESTION], exo_videos=video_batch(1), num_frames=4))
        hook.remove()
        assert not captured["exo"].requires_grad  # a frozen tower stays out of the backward
    finally:
        model.requires_grad_(True)
        model.disable_input_require_grads()


def test_random_connector_passes_the_video_through():
    """At init the video-dependent part of a visual token must not be dwarfed by a constant (bias) part; with
    transformers' generic 0.02 init it was ~30x smaller at the tiny width and training learned to ignore the video."""
    model, _ = build_tiny_model(seed=0)
    torch.manual_seed(1)
    first, second = torch.randn(2, 2, 4, 3, 32, 32).unbind(0)
    with torch.no_grad():
        tokens_first = model.model.get_video_features(first).pooler_output
        tokens_second = model.model.get_video_features(second).pooler_output
    video_dependent = (tokens_first - tokens_second).std()
    assert video_dependent > 0.5 * tokens_first.std()
