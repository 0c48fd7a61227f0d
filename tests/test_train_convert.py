"""VideoLLaMA2 -> Exo2Ego conversion on a tiny checkpoint written with VideoLLaMA2's key names."""

import datetime
import json

import pytest
import torch
from safetensors.torch import save_file

from train.convert_videollama2 import (
    convert,
    convert_state_dict,
    map_key,
    read_checkpoint,
    vision_config_from_weights,
)

VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=4
)
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)
CONNECTOR_DEPTH = 2


def timm_connector_keys(depth: int) -> list[str]:
    """VideoLLaMA2's STCConnector parameter names (timm RegStage blocks `b1..bN`, Sequential sampler and readout)."""
    block = [
        "conv1.conv.weight",
        "conv1.bn.weight",
        "conv1.bn.bias",
        "conv2.conv.weight",
        "conv2.bn.weight",
        "conv2.bn.bias",
        "se.fc1.weight",
        "se.fc1.bias",
        "se.fc2.weight",
        "se.fc2.bias",
        "conv3.conv.weight",
        "conv3.bn.weight",
        "conv3.bn.bias",
    ]
    keys = []
    for stage in ("s1", "s2"):
        for index in range(1, depth + 1):
            keys += [f"model.mm_projector.{stage}.b{index}.{name}" for name in block]
    keys += [f"model.mm_projector.s1.b1.downsample.{name}" for name in ("conv.weight", "bn.weight", "bn.bias")]
    keys += ["model.mm_projector.sampler.0.weight", "model.mm_projector.sampler.0.bias"]
    keys += [f"model.mm_projector.readout.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    return keys


@pytest.fixture(scope="module")
def videollama2_folder(tmp_path_factory):
    """A tiny VideoLLaMA2-layout folder: config.json, tokenizer, and weights in two safetensors shards."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, MistralConfig, MistralForCausalLM

    from exo2ego_base.tiny import build_tiny_model, build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("videollama2")
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**VISION))
    llm = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), **TEXT))
    reference, _ = build_tiny_model(connector_depth=CONNECTOR_DEPTH)  # only for the connector's tensor shapes
    shapes = {name: p.shape for name, p in reference.named_parameters()}
    state = {f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()}
    state.update(
        {k: v for k, v in llm.state_dict().items()}
    )  # model.embed_tokens / model.layers / model.norm / lm_head
    for key in timm_connector_keys(CONNECTOR_DEPTH):
        state[key] = torch.randn(shapes[map_key(key)[0]])
    keys = sorted(state)
    save_file({k: state[k].contiguous() for k in keys[: len(keys) // 2]}, folder / "model-00001-of-00002.safetensors")
    save_file({k: state[k].contiguous() for k in keys[len(keys) // 2 :]}, folder / "model-00002-of-00002.safetensors")
    config = {
        **TEXT,
        "vocab_size": len(tokenizer),
        "model_type": "videollama2_mistral",
        "architectures": ["Videollama2MistralForCausalLM"],
        "mm_projector_type": "stc_connector",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": VISION["hidden_size"],
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "tune_mm_mlp_adapter": False,
        "num_frames": 4,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return folder, state


def test_key_mapping_of_each_videollama2_part():
    assert map_key("model.vision_tower.vision_tower.vision_model.encoder.layers.3.self_attn.q_proj.weight") == (
        "model.ego_vision_tower.encoder.layers.3.self_attn.q_proj.weight",
        "model.exo_vision_tower.encoder.layers.3.self_attn.q_proj.weight",
    )
    assert map_key("model.mm_projector.sampler.0.weight") == ("model.connector.sampler.weight",)
    assert map_key("model.mm_projector.s2.b4.se.fc1.bias") == ("model.connector.s2.b4.se.fc1.bias",)
    assert map_key("model.mm_projector.readout.2.weight") == ("model.connector.readout.2.weight",)
    assert map_key("model.layers.31.mlp.down_proj.weight") == ("model.language_model.layers.31.mlp.down_proj.weight",)
    assert map_key("model.embed_tokens.weight") == ("model.language_model.embed_tokens.weight",)
    assert map_key("lm_head.weight") == ("lm_head.weight",)
    assert map_key("model.vision_tower.vision_tower.vision_model.embeddings.position_ids") == ()
    with pytest.raises(ValueError, match="no Exo2Ego counterpart"):
        convert_state_dict({"model.some_new_module.weight": torch.zeros(1)})


def test_vision_config_is_read_off_the_weights(videollama2_folder):
    _, state = videollama2_folder
    inferred = vision_config_from_weights(state)
    assert {
        k: inferred[k] for k in ("hidden_size", "patch_size", "image_size", "num_hidden_layers", "intermediate_size")
    } == {k: VISION[k] for k in ("hidden_size", "patch_size", "image_size", "num_hidden_layers", "intermediate_size")}


def test_converted_checkpoint_holds_every_source_tensor(videollama2_folder, tmp_path):
    from transformers import AutoModel, AutoProcessor

    folder, state = videollama2_folder
    out = tmp_path / "exo2ego-base"
    convert(str(folder), str(out), vision_config=VISION, dtype="float32", mapping_ngf=8, mapping_n_blocks=2)
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    params = dict(model.named_parameters())
    for key, tensor in state.items():
        for target in map_key(key):
            assert torch.equal(params[target], tensor), f"{key} -> {target}"
    # Every connector parameter came from the checkpoint, both towers are the source CLIP.
    connector = {name for name in params if name.startswith("model.connector.")}
    assert connector == {t for key in state for t in map_key(key) if t.startswith("model.connector.")}
    assert model.config.connector_depth == CONNECTOR_DEPTH and model.config.connector_type == "stc"
    assert processor.video_token_id == model.config.video_token_id
    # F and G are new and start as the identity.
    features = torch.randn(2, VISION["hidden_size"], 8, 8)
    assert torch.allclose(model.model.ego_to_exo(features), features)
    metadata = json.loads((out / "exo2ego_stage.json").read_text())
    assert metadata["stage"] == "base"


def test_bin_weights_are_read_with_weights_only(videollama2_folder, tmp_path):
    folder, state = videollama2_folder
    subset = {k: v for k, v in list(state.items())[:3]}
    torch.save(subset, tmp_path / "pytorch_model.bin")
    loaded = read_checkpoint(str(tmp_path))
    assert loaded.keys() == subset.keys() and all(torch.equal(loaded[k], subset[k]) for k in subset)
    torch.save(
        {"not_a_tensor": datetime.date(2020, 1, 1)}, tmp_path / "pytorch_model.bin"
    )  # a global outside the allowlist
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        read_checkpoint(str(tmp_path))


def test_base_checkpoint_from_clip_and_llm_starts_the_init_stage(tmp_path):
    from transformers import AutoModel, CLIPVisionConfig, CLIPVisionModel, MistralConfig, MistralForCausalLM

    from exo2ego_base.tiny import build_tiny_tokenizer
    from train.build_base import build_base
    from train.resume import check_starting_point

    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**VISION))
    clip.save_pretrained(tmp_path / "clip")
    tokenizer = build_tiny_tokenizer()
    MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), **TEXT)).save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    out = tmp_path / "base"
    build_base(
        str(tmp_path / "clip"),
        str(tmp_path / "llm"),
        str(out),
        dtype="float32",
        num_frames=4,
        connector_depth=1,
        mapping_ngf=8,
        mapping_n_blocks=2,
    )
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    for tower in (model.model.ego_vision_tower, model.model.exo_vision_tower):
        assert all(torch.equal(p, clip.state_dict()[n]) for n, p in tower.state_dict().items())
    assert check_starting_point(str(out), "init") == "base"
    with pytest.raises(ValueError, match="stage1 starts from the output of init"):
        check_starting_point(str(out), "stage1")
    with pytest.raises(FileExistsError):
        build_base(str(tmp_path / "clip"), str(tmp_path / "llm"), str(out), dtype="float32")


def test_script_flags_reach_the_builders(monkeypatch, tmp_path, capsys):
    """`train/build_base.py` and `train/convert_videollama2.py` take their flags (dash or underscore form) with the
    same defaults as before, and refuse an unknown flag as argparse does."""
    import train.build_base as build_base_script
    import train.convert_videollama2 as convert_script

    calls = []
    monkeypatch.setattr(build_base_script, "build_base", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(convert_script, "convert", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(convert_script, "load_vision_config", lambda path: {"from": path})
    out = str(tmp_path / "out")
    base = ["--vision", "clip", "--text", "llm", "--out", out]
    assert build_base_script.main(base) == 0
    assert build_base_script.main([*base, "--num_frames", "8", "--connector", "stc_v35", "--dtype", "float32"]) == 0
    assert build_base_script.main([*base, "--num-frames", "4"]) == 0
    assert convert_script.main(["--src", "vl2", "--out", out]) == 0
    assert convert_script.main(["--src", "vl2", "--out", out, "--vision-config", "c", "--num-frames", "8"]) == 0
    assert convert_script.main(["--src", "vl2", "--out", out, "--vision_config", "c", "--dtype", "float16"]) == 0
    assert calls == [
        (("clip", "llm", out, "bfloat16"), {"num_frames": 16, "connector_type": "stc"}),
        (("clip", "llm", out, "float32"), {"num_frames": 8, "connector_type": "stc_v35"}),
        (("clip", "llm", out, "bfloat16"), {"num_frames": 4, "connector_type": "stc"}),
        (("vl2", out, None, None, "bfloat16"), {}),
        (("vl2", out, {"from": "c"}, 8, "bfloat16"), {}),
        (("vl2", out, {"from": "c"}, None, "float16"), {}),
    ]
    for script, argv in ((build_base_script, base), (convert_script, ["--src", "vl2", "--out", out])):
        with pytest.raises(SystemExit) as stopped:
            script.main([*argv, "--bogus"])
        assert stopped.value.code == 2
        assert "error: unrecognized arguments: --bogus" in capsys.readouterr().err
