"""Call-time video defaults (issue 31 item 2): `num_frames` / `short_video` are no `__init__` arguments; the class
defaults are `Exo2EgoProcessorKwargs._defaults`, a checkpoint's are its frame processor's attributes, and a call's
kwargs override both. Processors saved before the change (tests/fixtures/processor_v0, written by the processor of
commit 17daa5a (processing_exo2ego.py of 14b9b39) with `build_tiny_model()` and `save_pretrained`, the
remote-code copies left out) still load and agree."""

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_test_video

from exo2ego_base.tiny import build_processor
from modeling_exo2ego import Exo2EgoProcessor
from modeling_exo2ego.processing_exo2ego import Exo2EgoProcessorKwargs

SAVED_V0 = Path(__file__).parent / "fixtures" / "processor_v0"
QUESTION = "<video>\nWhat did I pick up?"
FRAMES = np.random.default_rng(0).integers(0, 256, (9, 30, 40, 3), dtype=np.uint8)


def test_video_defaults_are_processing_kwargs_not_init_arguments():
    assert Exo2EgoProcessorKwargs._defaults["videos_kwargs"] == {"num_frames": 16, "short_video": "repeat"}
    assert not {"num_frames", "short_video"} & set(inspect.signature(Exo2EgoProcessor.__init__).parameters)


def test_a_processor_saved_before_the_change_loads_and_gives_the_same_inputs(tiny, tmp_path):
    saved = json.loads((SAVED_V0 / "processor_config.json").read_text())
    assert (saved["num_frames"], saved["short_video"]) == (4, "repeat")  # the old layout: top-level keys
    assert "num_frames" not in saved["image_processor"]
    loaded = Exo2EgoProcessor.from_pretrained(SAVED_V0)
    # Today's processor for the same model, around the tokenizer the fixture was saved with (the tiny one has changed).
    fresh = build_processor(tiny[0].config, loaded.tokenizer)
    assert (loaded.num_frames, loaded.short_video) == (fresh.num_frames, fresh.short_video) == (4, "repeat")
    assert loaded.image_processor.num_frames == 4  # the new place
    video = write_test_video(tmp_path / "clip.mp4", num_frames=40)
    for videos in ([FRAMES], [(video, 0.5, 4.5)]):
        old, new = (processor(text=[QUESTION], videos=videos) for processor in (loaded, fresh))
        assert torch.equal(old["input_ids"], new["input_ids"])
        assert torch.equal(old["pixel_values_videos"], new["pixel_values_videos"])
    # Saved again, the defaults sit in the frame processor's config and load back.
    loaded.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "processor_config.json").read_text())
    assert "num_frames" not in resaved and resaved["image_processor"]["num_frames"] == 4
    assert Exo2EgoProcessor.from_pretrained(tmp_path / "resaved").num_frames == 4


def test_a_saved_short_video_and_from_pretrained_keywords_become_the_defaults(tmp_path):
    folder = tmp_path / "strict"
    shutil.copytree(SAVED_V0, folder)
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**config, "short_video": "error"}))
    strict = Exo2EgoProcessor.from_pretrained(folder)
    assert (strict.num_frames, strict.short_video) == (4, "error")
    with pytest.raises(ValueError, match="short_video='error'"):
        strict(text=[QUESTION], videos=[FRAMES[:2]])
    assert strict(text=[QUESTION], videos=[FRAMES[:2]], short_video="repeat")["pixel_values_videos"].shape[1] == 4
    eight = Exo2EgoProcessor.from_pretrained(SAVED_V0, num_frames=8)
    assert eight.num_frames == 8 and eight(text=[QUESTION], videos=[FRAMES])["pixel_values_videos"].shape[1] == 8
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        Exo2EgoProcessor.from_pretrained(SAVED_V0, num_frames=0)


def test_call_kwargs_override_the_checkpoint_which_overrides_the_class(tiny):
    _, processor = tiny
    plain = Exo2EgoProcessor(processor.image_processor.__class__(), processor.tokenizer, grid_size=8)
    assert (plain.num_frames, plain.short_video) == (16, "repeat")  # the class defaults
    assert plain(text=[QUESTION], videos=[FRAMES])["pixel_values_videos"].shape[1] == 16
    assert processor.num_frames == 4  # the tiny checkpoint's
    for kwargs in ({"num_frames": 2}, {"videos_kwargs": {"num_frames": 2}}):
        assert processor(text=[QUESTION], videos=[FRAMES], **kwargs)["pixel_values_videos"].shape[1] == 2
    assert processor(text=[QUESTION], videos=[FRAMES], num_frames=None)["pixel_values_videos"].shape[1] == 4


def test_the_legacy_keywords_and_setters_leave_a_shared_frame_processor_alone(tiny):
    _, processor = tiny
    shared = processor.image_processor
    strict = Exo2EgoProcessor(shared, processor.tokenizer, num_frames=3, short_video="error", grid_size=8)
    assert (strict.num_frames, strict.short_video) == (3, "error")
    assert strict.image_processor is not shared and (processor.num_frames, processor.short_video) == (4, "repeat")
    same = Exo2EgoProcessor(shared, processor.tokenizer, num_frames=4, grid_size=8)
    assert same.image_processor is shared  # nothing to change, nothing copied
    strict.num_frames = 5
    assert strict.image_processor.num_frames == 5 and processor.num_frames == 4
    with pytest.raises(ValueError, match="short_video must be one of"):
        strict.short_video = "sometimes"
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        Exo2EgoProcessor(shared, processor.tokenizer, num_frames=0)
