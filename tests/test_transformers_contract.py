"""Exo2Ego keeps transformers' model/processor contract (issue 12): the way users call every transformers VLM."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_test_video

from exo2ego.tiny import save_tiny_model
from exo2ego_base.tiny import build_tiny_model

QUESTION = "<video>\nWhat did I pick up?"


def frames(seed: int = 0, count: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 40, 56, 3), dtype=np.uint8)


def labelled(processor, texts=(QUESTION + " the red cube", QUESTION + " a cup")):
    batch = processor(text=list(texts), videos=[frames(0), frames(1)], num_frames=4, padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] == processor.video_token_id, -100)
    return batch


def test_outputs_put_loss_and_logits_first_and_a_training_step_runs_through_outputs_0():
    model, processor = build_tiny_model(seed=3)
    batch = labelled(processor)
    with torch.no_grad():
        out = model(**batch)
        assert torch.equal(out[0], out.loss) and torch.equal(out[1], out.logits)
        assert torch.equal(model(**{k: v for k, v in batch.items() if k != "labels"})[0], out.logits)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(**batch)[0]
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert model(**batch)[0] < loss


def test_return_dict_false_returns_tuples(tiny):
    model, processor = tiny
    batch = processor(text=[QUESTION], videos=[frames()], num_frames=4)
    with torch.no_grad():
        as_dict = model(**batch)
        as_tuple = model(**batch, return_dict=False)
        base_tuple = model.model(**batch, return_dict=False)
        features = model.get_video_features(batch["pixel_values_videos"], return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.logits)
    assert isinstance(base_tuple, tuple) and base_tuple[0].shape == (*batch["input_ids"].shape, 64)
    assert isinstance(features, tuple)


def test_default_config_is_the_paper_model():
    from transformers import AutoConfig

    from modeling_exo2ego import Exo2EgoConfig

    for config in (Exo2EgoConfig(), AutoConfig.for_model("exo2ego")):
        vision, text = config.ego_vision_config, config.text_config
        assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (
            336,
            14,
            1024,
            24,
        )
        assert (text.model_type, text.hidden_size, text.num_hidden_layers) == ("mistral", 4096, 32)
        assert config.video_token_id < text.vocab_size
        assert config.num_frames == 16 and config.tokens_per_stream() == 1521


def test_inputs_embeds_with_a_video_finds_the_placeholders_by_embedding(tiny):
    model, processor = tiny
    batch = processor(text=[QUESTION, "<video>\nWhere?"], videos=[frames(0), frames(1)], num_frames=4, padding=True)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    with torch.no_grad():
        by_ids = model(**batch).logits
        by_embeds = model(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            pixel_values_videos=batch["pixel_values_videos"],
        ).logits
    assert torch.allclose(by_ids, by_embeds, atol=1e-5)
    with pytest.raises(ValueError, match="placeholder tokens per sample"):
        model(inputs_embeds=embeds[:, 10:], pixel_values_videos=batch["pixel_values_videos"])


def test_packed_row_with_position_ids_holds_several_videos(tiny):
    model, processor = tiny
    texts = [QUESTION, "<video>\nWhere is the red cube now?"]
    singles = [processor(text=[text], videos=[frames(index)], num_frames=4) for index, text in enumerate(texts)]
    with torch.no_grad():
        separate = torch.cat([model(**single).logits[0] for single in singles])
        packed = model(
            input_ids=torch.cat([single["input_ids"][0] for single in singles])[None],
            position_ids=torch.cat([torch.arange(single["input_ids"].shape[1]) for single in singles])[None],
            pixel_values_videos=torch.cat([single["pixel_values_videos"] for single in singles]),
            use_cache=False,  # padding-free attention is derived from position_ids without a cache, as in transformers
        ).logits[0]
    assert torch.allclose(packed, separate, atol=1e-5)


def test_assisted_decoding_with_a_video_matches_greedy_decoding(tiny):
    model, processor = tiny
    draft, _ = build_tiny_model(seed=5, attn_implementation="eager")
    batch = processor(text=[QUESTION], videos=[frames()], num_frames=4)
    greedy = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assisted = model.generate(**batch, max_new_tokens=8, do_sample=False, assistant_model=draft)
    assert torch.equal(assisted, greedy)
    # The placeholders without pixels still raise outside the draft's role.
    with pytest.raises(ValueError, match="no video pixels"):
        model.generate(input_ids=batch["input_ids"], max_new_tokens=2)


def test_get_video_features_returns_an_output_with_pooler_output(tiny):
    model, processor = tiny
    batch = processor(
        text=[QUESTION] * 2, videos=[frames(0), frames(1)], exo_videos=[frames(2), frames(3)], num_frames=4
    )
    ego, exo = batch["pixel_values_videos"], batch["exo_pixel_values_videos"]
    per_stream = processor.num_video_tokens(4, "exo")
    with torch.no_grad():
        plain = model.get_video_features(ego)
        exo_only = model.get_video_features(exo_pixel_values_videos=exo)
        paired = model.get_video_features(ego, exo, output_mapping_features=True, output_hidden_states=True)
    assert plain.pooler_output.shape == (2, 2 * per_stream, 64) and exo_only.pooler_output.shape == (2, per_stream, 64)
    assert plain.last_hidden_state.shape == (2, 4 * 8 * 8, 32)
    assert plain.hidden_states is None and plain.ego_features is None and plain.exo_cycle is None
    assert torch.allclose(paired.pooler_output, plain.pooler_output, atol=1e-6)
    assert len(paired.hidden_states) == model.config.ego_vision_config.num_hidden_layers + 1
    for name in ("ego_features", "exo_features", "ego_to_exo", "exo_to_ego", "ego_cycle", "exo_cycle"):
        assert getattr(paired, name).shape == (8, 32, 8, 8)


def test_static_cache_generation_and_compile_flag(tiny):
    model, processor = tiny
    assert model._can_compile_fullgraph
    batch = processor(text=[QUESTION], videos=[frames()], num_frames=4)
    dynamic = model.generate(**batch, max_new_tokens=5, do_sample=False)
    static = model.generate(**batch, max_new_tokens=5, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)


def test_a_decoding_step_compiles_as_one_graph(tiny):
    """What `_can_compile_fullgraph` promises: a static-cache decoding step (no pixels) traces without graph breaks."""
    import copy

    from transformers import StaticCache

    model, processor = tiny
    batch = processor(text=[QUESTION], videos=[frames()], num_frames=4)
    length = batch["input_ids"].shape[1]
    cache = StaticCache(config=model.config, max_cache_len=length + 2)
    with torch.no_grad():
        next_token = model(**batch, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        step = {
            "input_ids": next_token,
            "attention_mask": torch.ones(1, length + 1, dtype=torch.long),
            "position_ids": torch.tensor([[length]]),
            "use_cache": True,
        }
        eager = model(**step, cache=copy.deepcopy(cache)).logits
        compiled = torch.compile(model.forward, fullgraph=True, backend="eager")(**step, cache=cache).logits
    assert torch.allclose(compiled, eager, atol=1e-6)


def test_tensor_parallel_plan_covers_the_llm_and_the_tied_head(tiny):
    model, _ = tiny
    plan = model.tp_plan
    assert plan["lm_head"] == "colwise_gather_output"
    assert plan["model.language_model.layers.*.self_attn.q_proj"] == "colwise"
    assert plan["model.language_model.layers.*.mlp.down_proj"] == "rowwise"


def test_processor_kwargs_follow_processing_kwargs_with_call_time_overrides(tiny, tmp_path):
    _, processor = tiny
    video = write_test_video(tmp_path / "short.mp4", num_frames=40)
    structured = processor(text=[QUESTION], videos=[video], videos_kwargs={"num_frames": 8})
    flat = processor(text=[QUESTION], videos=[video], num_frames=8)
    assert structured["pixel_values_videos"].shape[1] == 8
    assert torch.equal(structured["input_ids"], flat["input_ids"])
    assert (structured["input_ids"] == processor.video_token_id).sum() == processor.num_video_tokens(8)
    window = {"path": video, "start_sec": 1.0, "end_sec": 1.25}  # two distinct frames
    processor(text=[QUESTION], videos=[window], num_frames=4)  # "repeat", the processor default
    with pytest.raises(ValueError, match="distinct frames"):
        processor(text=[QUESTION], videos=[window], num_frames=4, videos_kwargs={"short_video": "error"})
    as_numpy = processor(text=[QUESTION], videos=[frames()], num_frames=4, text_kwargs={"return_tensors": "np"})
    assert isinstance(as_numpy["input_ids"], np.ndarray)
    typed = processor(text=[QUESTION], videos=[frames()], num_frames=4, return_mm_token_type_ids=True)
    assert torch.equal(typed["mm_token_type_ids"] == 2, typed["input_ids"] == processor.video_token_id)


def test_chat_template_marks_assistant_tokens_and_returns_like_transformers(tiny, tmp_path):
    _, processor = tiny
    video = write_test_video(tmp_path / "chat.mp4", num_frames=40)
    user = {
        "role": "user",
        "content": [
            {"type": "video", "path": video, "start_sec": 0.5, "end_sec": 4.5},
            {"type": "text", "text": "What did I do?"},
        ],
    }
    answer = {"role": "assistant", "content": [{"type": "text", "text": "I picked up the red cube"}]}
    assert "{% generation %}" in processor.chat_template.replace("{%- generation -%}", "{% generation %}")
    out = processor.apply_chat_template(
        [user, answer], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = torch.as_tensor(out["assistant_masks"]).bool()
    # The answer's first token carries the space the template writes after [/INST] (" I", as Mistral's "▁I").
    assert processor.decode(out["input_ids"][mask]) == " I picked up the red cube</s>"
    assert out["pixel_values_videos"].shape[1] == processor.num_frames
    ids = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=True)
    assert isinstance(ids, torch.Tensor) and ids.shape[0] == 1
    assert processor.apply_chat_template([user]).startswith("<s>[INST] <video>\nWhat did I do?")


def test_readme_using_the_model_snippet_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Using the model", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    save_tiny_model(str(tmp_path / "exo2ego"))
    write_test_video(tmp_path / "kitchen.mp4", num_frames=200)  # 25 s, the snippet asks for 12-20 s
    monkeypatch.chdir(tmp_path)
    snippet = snippet.replace('"org/exo2ego"', '"./exo2ego"')  # the only edit: a local tiny model for the Hub id
    exec(compile(snippet, "README.md", "exec"), {})  # noqa: S102 - running the README is the test
