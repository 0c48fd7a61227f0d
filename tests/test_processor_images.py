"""Images in the processor (issue 31 item 2): an image is a video of its one frame repeated `num_frames` times, read
by the model through its video path; `<image>` placeholders expand like ego videos, in reading order with them."""

import numpy as np
import pytest
import torch
from conftest import write_test_video
from PIL import Image

IMAGE = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
FRAMES = np.random.default_rng(2).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)


def still_video(image: np.ndarray, num_frames: int) -> np.ndarray:
    return np.repeat(image[None], num_frames, axis=0)


@pytest.mark.parametrize("layout", ["array", "channels first", "PIL", "float", "tensor", "path"])
def test_an_image_is_the_video_of_its_frame_repeated(tiny, tmp_path, layout):
    _, processor = tiny
    image = {
        "array": IMAGE,
        "channels first": IMAGE.transpose(2, 0, 1),
        "PIL": Image.fromarray(IMAGE),
        "float": IMAGE / 255.0,
        "tensor": torch.from_numpy(IMAGE),
    }.get(layout)
    if layout == "path":
        image = tmp_path / "image.png"
        Image.fromarray(IMAGE).save(image)
    from_image = processor(text=["<image>\nWhat is shown?"], images=[image])
    from_video = processor(text=["<video>\nWhat is shown?"], videos=[still_video(IMAGE, processor.num_frames)])
    assert set(from_image) == {"input_ids", "attention_mask", "pixel_values_videos"}
    assert torch.equal(from_image["input_ids"], from_video["input_ids"])
    assert torch.equal(from_image["pixel_values_videos"], from_video["pixel_values_videos"])
    assert from_image["pixel_values_videos"].shape == (1, processor.num_frames, 3, 32, 32)


def test_the_model_reads_an_image_as_the_still_video(tiny):
    model, processor = tiny
    image_batch = processor(text=["<image>\nWhat is shown?"], images=Image.fromarray(IMAGE))
    video_batch = processor(text=["<video>\nWhat is shown?"], videos=[still_video(IMAGE, processor.num_frames)])
    with torch.no_grad():
        assert torch.equal(model(**image_batch).logits, model(**video_batch).logits)
    generated = model.generate(**image_batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, model.generate(**video_batch, max_new_tokens=3, do_sample=False))


def test_images_and_videos_fill_pixel_values_videos_in_reading_order(tiny):
    model, processor = tiny
    first, second = IMAGE, IMAGE[::-1].copy()
    texts = ["<image> before <video> after <image>", "<video> only a video"]
    batch = processor(
        text=texts,
        images=[[first, second], []],
        videos=[FRAMES, FRAMES[::-1].copy()],
        padding=True,
        return_text_replacement_offsets=True,
    )
    pixels = batch["pixel_values_videos"]
    assert pixels.shape[0] == 4  # image, video, image of text 0, then the video of text 1
    single = {
        "first": processor(text="<image>", images=first)["pixel_values_videos"][0],
        "video": processor(text="<video>", videos=[FRAMES])["pixel_values_videos"][0],
        "second": processor(text="<image>", images=second)["pixel_values_videos"][0],
        "video 2": processor(text="<video>", videos=[FRAMES[::-1].copy()])["pixel_values_videos"][0],
    }
    for index, name in enumerate(single):
        assert torch.equal(pixels[index], single[name]), name
    assert [entry["type"] for entry in batch["text_replacement_offsets"][0]] == ["image", "video", "image"]
    per_visual = processor.num_video_tokens()
    assert (batch["input_ids"] == processor.video_token_id).sum(1).tolist() == [3 * per_visual, per_visual]
    with torch.no_grad():
        assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_flat_and_nested_images_and_text_only_rows(tiny):
    _, processor = tiny
    texts = ["no picture here", "<image> one", "<image><image> two"]
    images = [IMAGE, IMAGE, IMAGE[::-1].copy()]
    flat = processor(text=texts, images=images, padding=True)
    nested = processor(text=texts, images=[[], images[:1], images[1:]], padding=True)
    assert torch.equal(flat["input_ids"], nested["input_ids"])
    assert torch.equal(flat["pixel_values_videos"], nested["pixel_values_videos"])
    assert flat["pixel_values_videos"].shape[0] == 3
    plain = processor(text=texts[:1])
    assert torch.equal(flat["input_ids"][0, -plain["input_ids"].shape[1] :], plain["input_ids"][0])


def test_images_follow_the_call_frame_count_and_images_kwargs(tiny):
    _, processor = tiny
    eight = processor(text="<image>", images=IMAGE, num_frames=8)
    assert eight["pixel_values_videos"].shape[1] == 8
    assert (eight["input_ids"] == processor.video_token_id).sum() == processor.num_video_tokens(8)
    plain = processor(text="<image>", images=IMAGE)["pixel_values_videos"]
    unnormalised = processor(text="<image>", images=IMAGE, images_kwargs={"do_normalize": False})
    assert not torch.equal(unnormalised["pixel_values_videos"], plain)
    assert unnormalised["pixel_values_videos"].min() >= 0  # rescaled to [0, 1], not normalised
    # images_kwargs reach images only; the video in the same call keeps the defaults
    mixed = processor(text="<image><video>", images=IMAGE, videos=[FRAMES], images_kwargs={"do_normalize": False})
    assert torch.equal(mixed["pixel_values_videos"][0], unnormalised["pixel_values_videos"][0])
    assert torch.equal(
        mixed["pixel_values_videos"][1], processor(text="<video>", videos=[FRAMES])["pixel_values_videos"][0]
    )


def test_do_sample_frames_false_keeps_every_decoded_frame(tiny, tmp_path):
    _, processor = tiny
    batch = processor(text="<image><video>", images=IMAGE, videos=[FRAMES], do_sample_frames=False)
    assert batch["pixel_values_videos"].shape[:2] == (2, len(FRAMES))  # the image repeats to the videos' count
    assert (batch["input_ids"] == processor.video_token_id).sum() == 2 * processor.num_video_tokens(len(FRAMES))
    with pytest.raises(ValueError, match="one frame count"):
        processor(text=["<video>", "<video>"], videos=[FRAMES, FRAMES[:4]], do_sample_frames=False)
    video = write_test_video(tmp_path / "clip.mp4", num_frames=16)
    with pytest.raises(ValueError, match="do_sample_frames=False takes decoded frames"):
        processor(text="<video>", videos=[video], do_sample_frames=False)


def test_chat_messages_with_images(tiny, tmp_path):
    _, processor = tiny
    path = tmp_path / "image.png"
    Image.fromarray(IMAGE).save(path)
    messages = [
        {"role": "user", "content": [{"type": "image", "path": str(path)}, {"type": "text", "text": "What is it?"}]}
    ]
    assert processor.apply_chat_template(messages).startswith("<s>[INST] <image>\nWhat is it? [/INST]")
    out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text="<s>[INST] <image>\nWhat is it? [/INST]", images=IMAGE, add_special_tokens=False)
    assert torch.equal(out["input_ids"], direct["input_ids"])
    assert torch.equal(out["pixel_values_videos"], direct["pixel_values_videos"])


REFUSED = [
    ("more images than placeholders", {"text": "<image>", "images": [IMAGE, IMAGE]}, r"2 images for 1 <image>"),
    ("a placeholder without its image", {"text": "<image> and <image>", "images": [IMAGE]}, r"1 images for 2"),
    ("an <image> with no images", {"text": "<image>"}, r"contains <image> but no image was given"),
    ("nested lists per text", {"text": ["<image>", "x"], "images": [[IMAGE]]}, r"1 lists of images for 2 texts"),
    ("nested list for the wrong text", {"text": ["<image>", "x"], "images": [[], [IMAGE]]}, r"text 0 has 1 <image>"),
    ("with exo videos", {"text": "<image><video>", "images": IMAGE, "exo_videos": [FRAMES]}, r"exo_videos"),
    ("a missing image file", {"text": "<image>", "images": "/no/such/image.png"}, r"images\[0\]\[0\]: cannot load"),
    ("a 2-D array", {"text": "<image>", "images": [IMAGE[..., 0]]}, r"images\[0\]\[0\]: an image is"),
    ("an images_kwargs key not applied", {"text": "<image>", "images": IMAGE, "do_pad": True}, r"do_pad is not"),
]


@pytest.mark.parametrize("row, kwargs, pattern", REFUSED, ids=[row[0] for row in REFUSED])
def test_bad_image_input_is_refused_with_a_clear_error(tiny, row, kwargs, pattern):
    _, processor = tiny
    with pytest.raises(ValueError, match=pattern):
        processor(**kwargs)
