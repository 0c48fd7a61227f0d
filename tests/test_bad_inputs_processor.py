"""Bad processor inputs (issue 14, "Processor/eval/training"): one row each; each gets a clear error naming the
argument, or is handled as documented. The next bad input is one more row."""

import json

import numpy as np
import pytest
from conftest import write_test_video

from modeling_exo2ego import read_video_frames

QUESTION = "<video>\nWhat did I pick up?"
FRAMES = np.random.default_rng(0).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)

# (row id, call keyword arguments, expected exception, message pattern)
REFUSED = [
    ("num_frames zero", {"num_frames": 0}, ValueError, r"num_frames must be a positive integer.*got 0"),
    ("num_frames negative", {"num_frames": -3}, ValueError, r"num_frames must be a positive integer.*got -3"),
    ("num_frames fractional", {"num_frames": 2.5}, ValueError, r"num_frames must be a positive integer.*got 2.5"),
    ("num_frames zero in videos_kwargs", {"videos_kwargs": {"num_frames": 0}}, ValueError, r"num_frames.*got 0"),
    ("unknown keyword", {"num_frame": 4}, TypeError, r"unexpected keyword.*num_frame"),
    ("unknown videos_kwargs key", {"videos_kwargs": {"num_frame": 4}}, TypeError, r"num_frame"),
    ("short_video unknown mode", {"short_video": "sometimes"}, ValueError, r"short_video must be one of"),
    ("fps sampling", {"fps": 2}, ValueError, r"fps is not supported"),
    ("image without its placeholder", {"images": FRAMES[0]}, ValueError, r"1 images for 0 <image> placeholders"),
    ("audio", {"audio": np.zeros(16000, np.float32)}, ValueError, r"takes no audio"),
    (
        "float frames in 0-255",
        {"videos": [FRAMES.astype(np.float32)]},
        ValueError,
        r"videos\[0\]: float frames must hold values in \[0, 1\]",
    ),
    ("int64 frames above 255", {"videos": [FRAMES.astype(np.int64) * 2]}, ValueError, r"videos\[0\]: integer frames"),
    ("float frames with NaN", {"videos": [np.full((4, 8, 8, 3), np.nan)]}, ValueError, r"videos\[0\]: float frames"),
    ("frames of strings", {"videos": [np.full((4, 8, 8, 3), "x")]}, ValueError, r"videos\[0\]: frames of dtype"),
    ("too few decoded frames, strict", {"num_frames": 8, "short_video": "error"}, ValueError, r"6 frames but 8"),
]


@pytest.mark.parametrize("row, kwargs, error, pattern", REFUSED, ids=[row[0] for row in REFUSED])
def test_bad_processor_input_is_refused_with_a_clear_error(tiny, row, kwargs, error, pattern):
    _, processor = tiny
    kwargs = {"videos": [FRAMES], **kwargs}
    with pytest.raises(error, match=pattern):
        processor(text=[QUESTION], **kwargs)


# (row id, frames, frames that must give the same pixels)
CONVERTED = [
    ("int64 frames in 0-255", FRAMES.astype(np.int64), FRAMES),
    ("float frames in 0-1", FRAMES.astype(np.float64) / 255, FRAMES),
    ("(T, C, H, W) frames", FRAMES.transpose(0, 3, 1, 2), FRAMES),
    ("list of (3, H, W) frames", list(FRAMES.transpose(0, 3, 1, 2)), FRAMES),
]


@pytest.mark.parametrize("row, frames, reference", CONVERTED, ids=[row[0] for row in CONVERTED])
def test_other_frame_layouts_and_dtypes_follow_the_documented_convention(tiny, row, frames, reference):
    _, processor = tiny
    got = processor(text=[QUESTION], videos=[frames], num_frames=4)["pixel_values_videos"]
    expected = processor(text=[QUESTION], videos=[reference], num_frames=4)["pixel_values_videos"]
    assert np.allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_exo_video_shorter_than_the_ego_window_follows_short_video(tiny, tmp_path):
    """The exo view is read at the ego view's timestamps; times after its last frame used to repeat that frame
    silently even with short_video='error'."""
    _, processor = tiny
    ego = write_test_video(tmp_path / "ego.mp4", num_frames=40)  # 5 s at 8 fps
    exo = write_test_video(tmp_path / "exo.mp4", num_frames=26)  # ends at 3.125 s
    window = {"path": ego, "start_sec": 0.0, "end_sec": 4.0}  # frames at 0.5, 1.5, 2.5, 3.5 s
    with pytest.raises(ValueError, match=r"exo\.mp4: its last frame is at 3\.125s.*short_video='error'"):
        processor(text=[QUESTION], videos=[window], exo_videos=[exo], num_frames=4, short_video="error")
    batch = processor(text=[QUESTION], videos=[window], exo_videos=[exo], num_frames=4)  # "repeat", the default
    assert batch["exo_pixel_values_videos"].shape[1] == 4


def _chat(video_item: dict) -> list[dict]:
    return [{"role": "user", "content": [video_item, {"type": "text", "text": "What did I pick up?"}]}]


# (row id, call(processor, video path), message pattern): video windows that once decoded the whole video or said
# "outside the video"; each raises a ValueError naming the input.
WINDOW_REFUSED = [
    (
        "window keys misspelled",
        lambda processor, path: processor(text=[QUESTION], videos=[{"path": path, "start": 0.5, "end": 1.0}]),
        r"videos\[0\]: unknown video key\(s\) \['end', 'start'\]; a video dict takes \['path', 'video', "
        r"'start_sec', 'end_sec', 'type'\]",
    ),
    (
        "window keys misspelled in a chat message",
        lambda processor, path: processor.apply_chat_template(
            _chat({"type": "video", "path": path, "start": 0.5, "end": 1.0}), tokenize=True, return_dict=True
        ),
        r"unknown key\(s\) \['end', 'start'\] in a video item of a chat message",
    ),
    (
        "exo window keys misspelled",
        lambda processor, path: processor(text=[QUESTION], exo_videos=[{"video": path, "end_second": 1.0}]),
        r"exo_videos\[0\]: unknown video key\(s\) \['end_second'\]",
    ),
    (
        "video dict of another type",
        lambda processor, path: processor(text=[QUESTION], videos=[{"type": "image", "path": path}]),
        r"videos\[0\]: a video dict's 'type' must be 'video', got 'image'",
    ),
    (
        "start NaN",
        lambda processor, path: processor(
            text=[QUESTION], videos=[{"path": path, "start_sec": float("nan"), "end_sec": 1.0}]
        ),
        r"videos\[0\]: start_sec must be a finite number of seconds, got nan",
    ),
    (
        "end NaN in a tuple",
        lambda processor, path: processor(text=[QUESTION], videos=[(path, 0.0, float("nan"))]),
        r"videos\[0\]: end_sec must be a finite number of seconds, got nan",
    ),
    (
        "end NaN in a chat message",
        lambda processor, path: processor.apply_chat_template(
            _chat({"type": "video", "path": path, "start_sec": 0.0, "end_sec": float("nan")}),
            tokenize=True,
            return_dict=True,
        ),
        r"end_sec must be a finite number of seconds, got nan",
    ),
    (
        "start as a string",
        lambda processor, path: processor(text=[QUESTION], videos=[{"path": path, "start_sec": "1", "end_sec": 2}]),
        r"videos\[0\]: start_sec must be a number of seconds or None, got '1'",
    ),
    (
        "zero-length window",
        lambda processor, path: processor(text=[QUESTION], videos=[{"path": path, "start_sec": 1.0, "end_sec": 1.0}]),
        r"videos\[0\]: the window \[1\.0, 1\.0\] is zero-length; end_sec must be after start_sec",
    ),
    (
        "zero-length window read directly",
        lambda processor, path: read_video_frames(path, 4, start_sec=1.0, end_sec=1.0),
        r"sample\.mp4: the window \[1\.0, 1\.0\] is zero-length",
    ),
    (
        "window ending before it starts",
        lambda processor, path: processor(text=[QUESTION], videos=[(path, 2.0, 1.0)]),
        r"videos\[0\]: the window \[2\.0, 1\.0\] ends before it starts",
    ),
]


@pytest.mark.parametrize("call, pattern", [row[1:] for row in WINDOW_REFUSED], ids=[row[0] for row in WINDOW_REFUSED])
def test_bad_video_window_is_refused_with_a_clear_error(tiny, sample_video, call, pattern):
    _, processor = tiny
    with pytest.raises(ValueError, match=pattern):
        call(processor, sample_video)


def _edit_config(**changes):
    def edit(folder):
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _load_config(folder):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def _load_processor(folder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


# (row id, edit of a saved model folder, loader, message pattern): saved files that loaded and failed later, or never.
SAVED_REFUSED = [
    ("config num_frames 0", _edit_config(num_frames=0), _load_config, r"num_frames must be an integer >= 1, got 0"),
    (
        "config video_token_id outside the tokenizer",
        _edit_config(video_token_id=99999),
        _load_processor,
        r"config\.json sets video_token_id 99999, but the tokenizer's '<video>' is id \d+ \(id 99999 is not in the "
        r"tokenizer's vocabulary of \d+\); set video_token_id to \d+",
    ),
    (
        "config video_token_id of another token",
        _edit_config(video_token_id=1),
        _load_processor,
        r"config\.json sets video_token_id 1, but the tokenizer's '<video>' is id \d+ "
        r"\(id 1 is '.+' in the tokenizer\)",
    ),
]


@pytest.mark.parametrize(
    "edit, load, pattern", [row[1:] for row in SAVED_REFUSED], ids=[row[0] for row in SAVED_REFUSED]
)
def test_bad_saved_config_is_refused_at_load(tiny, tmp_path, edit, load, pattern):
    import modeling_exo2ego  # noqa: F401  (registers the Auto classes)

    model, processor = tiny
    model.config.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    load(tmp_path)  # as saved, it loads
    edit(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        load(tmp_path)
