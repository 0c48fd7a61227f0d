"""`exo2ego serve` against the request shapes evaluation clients send (issue 29): image frames as `image_url` parts
(lmms-eval's `openai_compatible`, VLMEvalKit), `data:` video URLs, media fragments (`#t=start,end`), vLLM's
`media_io_kwargs` / `mm_processor_kwargs`, transformers' `{"type": "video"}` parts and `input_video`; every refused
shape answers a 4xx naming the part, is logged and counted in `/metrics`.

One server for the module, built by `exo2ego serve`'s own `build_app` from its command-line flags and served by
uvicorn on a free loopback port in a thread of this process, so that the test sees the exact processor outputs the
engine received (`app.state.engine`): the pixels the model got.
"""

import argparse
import base64
import io
import logging
import re
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the server needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="the tests talk to the server with the openai client (.[dev])")
httpx = pytest.importorskip("httpx")

from conftest import write_test_video  # noqa: E402
from PIL import Image  # noqa: E402

from exo2ego.serve.process import free_loopback_port  # noqa: E402
from exo2ego.tiny import save_tiny_model  # noqa: E402

MODEL_NAME = "tiny-exo2ego"
MAX_TOKENS = 2
FPS = 8
VIDEO_FRAMES = 32  # 4 s at 8 fps; frame i is coloured by its index (conftest.write_test_video)
FRAME_SIZE = (48, 64)
MAX_DATA_URL_MB = 0.1


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, its media, its processor and the processor outputs its engine received (one per request)."""
    from exo2ego.serve.cli import HostedModelArguments, ServeArguments, add_parser, build_app
    from exo2ego_base.command_line import dataclass_from_args

    root = tmp_path_factory.mktemp("serve-media")
    save_tiny_model(str(root / "model"), seed=0)
    media = root / "media"
    media.mkdir()
    video = write_test_video(media / "count.mp4", num_frames=VIDEO_FRAMES, fps=FPS, size=FRAME_SIZE)
    for index in range(8):
        Image.fromarray(coloured(index)).save(media / f"frame{index}.png")
    Image.fromarray(coloured(3)).save(root / "outside.png")

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "serve",
            "--model",
            str(root / "model"),
            "--served-model-name",
            MODEL_NAME,
            "--media-root",
            str(media),
            "--max-data-url-mb",
            str(MAX_DATA_URL_MB),
            "--max-tokens-limit",
            "16",
            "--batch-wait-ms",
            "0",
        ]
    )
    app, _, _ = build_app(*(dataclass_from_args(cls, args) for cls in (HostedModelArguments, ServeArguments)))
    engine = app.state.engine
    received = []
    submit = engine.submit

    def recording_submit(job):  # the seam: what the engine gets is what `generate` gets
        received.append(job.inputs)
        submit(job)

    engine.submit = recording_submit
    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        yield SimpleNamespace(
            client=client,
            url=url,
            media=media,
            root=root,
            video=video,
            processor=app.state.processor,
            received=received,
        )
    finally:
        server.should_exit = True
        thread.join(60)


# ------------------------------------------------------------------------------------------------------ helpers
def coloured(index: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A flat frame coloured as `write_test_video` colours its frame `index`."""
    frame = np.zeros((*size, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1] = 8 * (index % 32), 8 * (index // 32)
    return frame


def image_bytes(frame: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=image_format)
    return buffer.getvalue()


def data_url(payload: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(payload).decode()}"


def frame_url(index: int, image_format: str = "PNG", size: tuple[int, int] = FRAME_SIZE) -> str:
    return data_url(image_bytes(coloured(index, size), image_format), f"image/{image_format.lower()}")


def image_part(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def video_part(url: str, **window) -> dict:
    return {"type": "video_url", "video_url": {"url": url, **window}}


def text(question: str = "What did I do?") -> dict:
    return {"type": "text", "text": question}


def user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


def ask(served, messages, **kwargs):
    kwargs = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    return served.client.chat.completions.create(messages=messages, **kwargs)


def frame_indices(pixel_values, processor) -> list[int]:
    """Which `write_test_video` frame each of a request's frames is, read from the centre pixel the model got."""
    mean = np.asarray(processor.image_processor.image_mean)
    std = np.asarray(processor.image_processor.image_std)
    pixels = pixel_values[0].float().numpy()  # (T, 3, S, S)
    centre = pixels[:, :, pixels.shape[2] // 2, pixels.shape[3] // 2]
    rgb = (centre * std + mean) * 255
    return [round(red / 8) + 32 * round(green / 8) for red, green, _ in rgb]


def processor_pixels(processor, video, num_frames: int | None = None):
    """What the processor makes of `video` itself, in this process."""
    kwargs = {} if num_frames is None else {"num_frames": num_frames}
    return processor(text=["<video>"], videos=[video], return_tensors="pt", **kwargs)["pixel_values_videos"]


def the_pixels(served, messages, **kwargs):
    """Ask, then return the pixel values the engine received for that one request."""
    served.received.clear()
    completion = ask(served, messages, **kwargs)
    assert completion.choices[0].message.content is not None
    assert len(served.received) == 1
    return served.received[0]["pixel_values_videos"]


def file_url(path) -> str:
    return f"file://{path}"


# ------------------------------------------------------------------------------------------------ accepted shapes
def test_image_url_frames_are_one_video_sampled_as_the_processor_samples_decoded_frames(served):
    # lmms-eval's openai_compatible: the text first, then one PNG data URL per frame
    pixels = the_pixels(served, user(text(), *(image_part(frame_url(index)) for index in range(8))))
    assert frame_indices(pixels, served.processor) == [1, 3, 5, 7]  # midpoints of 4 equal segments of 8 frames
    frames = [Image.fromarray(coloured(index)) for index in range(8)]
    assert np.array_equal(pixels, processor_pixels(served.processor, frames))


def test_jpeg_frames_with_detail_as_vlmevalkit_sends_them_and_more_frames_per_request(served):
    parts = [image_part(frame_url(index, "JPEG"), detail="low") for index in range(8)]
    pixels = the_pixels(served, user(*parts, text()), extra_body={"mm_processor_kwargs": {"num_frames": 8}})
    assert frame_indices(pixels, served.processor) == list(range(8))


def test_a_single_image_is_a_one_frame_video(served):
    pixels = the_pixels(served, user(image_part(frame_url(5)), text("What is this?")))
    assert frame_indices(pixels, served.processor) == [5, 5, 5, 5]  # the processor repeats short videos


def test_file_image_urls_under_the_media_root_and_transformers_image_parts(served):
    media = served.media
    pixels = the_pixels(
        served, user(*(image_part(file_url(media / f"frame{index}.png")) for index in range(4)), text())
    )
    assert frame_indices(pixels, served.processor) == [0, 1, 2, 3]
    parts = [
        {"type": "image", "url": frame_url(0)},
        {"type": "image", "path": str(media / "frame2.png")},
        {"type": "image", "image": file_url(media / "frame4.png")},
        {"type": "image", "base64": base64.b64encode(image_bytes(coloured(6))).decode()},
    ]
    assert frame_indices(the_pixels(served, user(*parts, text())), served.processor) == [0, 2, 4, 6]


def test_a_data_video_url_is_read_as_the_file_is(served):
    payload = open(served.video, "rb").read()
    assert len(payload) < MAX_DATA_URL_MB * 2**20
    inline = the_pixels(served, user(video_part(data_url(payload, "video/mp4")), text()))
    from_file = the_pixels(served, user(video_part(file_url(served.video)), text()))
    assert np.array_equal(inline, from_file)
    assert frame_indices(inline, served.processor) == [4, 12, 20, 28]  # midpoints of the whole 4 s


@pytest.mark.parametrize(
    "fragment, expected, window",
    [
        ("#t=1,2", [9, 11, 13, 15], (1.0, 2.0)),
        ("#t=2", [18, 22, 26, 30], (2.0, None)),
        ("#t=,1", [1, 3, 5, 7], (None, 1.0)),
        ("#t=npt:0:01,0:02", [9, 11, 13, 15], (1.0, 2.0)),
        ("#t=1.5,2.5&xywh=0,0,10,10", [13, 15, 17, 19], (1.5, 2.5)),
    ],
)
def test_a_media_fragment_selects_the_window(served, fragment, expected, window):
    payload = open(served.video, "rb").read()
    start_sec, end_sec = window
    reference = processor_pixels(served.processor, {"path": served.video, "start_sec": start_sec, "end_sec": end_sec})
    for url in (file_url(served.video) + fragment, data_url(payload, "video/mp4") + fragment):
        pixels = the_pixels(served, user(video_part(url), text()))
        assert frame_indices(pixels, served.processor) == expected
        assert np.array_equal(pixels, reference)
    if fragment == "#t=1,2":  # the whole video, asked the same way, is other pixels
        whole = the_pixels(served, user(video_part(file_url(served.video)), text()))
        assert frame_indices(whole, served.processor) == [4, 12, 20, 28]


def test_vllm_frame_count_options(served):
    video = user(video_part(file_url(served.video)), text())
    pixels = the_pixels(served, video, extra_body={"media_io_kwargs": {"video": {"num_frames": 8}}})
    assert frame_indices(pixels, served.processor) == list(range(2, 32, 4))
    pixels = the_pixels(served, video, extra_body={"mm_processor_kwargs": {"num_frames": 2}})
    assert frame_indices(pixels, served.processor) == [8, 24]
    agreeing = {
        "num_frames": 2,
        "mm_processor_kwargs": {"num_frames": 2},
        "media_io_kwargs": {"video": {"num_frames": 2}},
    }
    assert frame_indices(the_pixels(served, video, extra_body=agreeing), served.processor) == [8, 24]


def test_transformers_video_parts_and_input_video(served):
    video, payload = served.video, open(served.video, "rb").read()
    window = [9, 11, 13, 15]
    whole = [4, 12, 20, 28]
    cases = [
        ({"type": "video", "path": video}, whole),
        ({"type": "video", "path": video, "start_sec": 1.0, "end_sec": 2.0}, window),
        ({"type": "video", "url": file_url(video) + "#t=1,2"}, window),
        ({"type": "video", "video": data_url(payload, "video/mp4")}, whole),
        ({"type": "video", "video": [frame_url(index) for index in range(8)]}, [1, 3, 5, 7]),
        ({"type": "input_video", "video_url": file_url(video) + "#t=1,2"}, window),
        ({"type": "input_video", "video_url": {"url": file_url(video), "start_sec": 1.0, "end_sec": 2.0}}, window),
        ({"type": "video_url", "video_url": file_url(video)}, whole),
    ]
    for part, expected in cases:
        assert frame_indices(the_pixels(served, user(part, text())), served.processor) == expected, part


# ------------------------------------------------------------------------------------------------ refused shapes
def _refused(served) -> dict:
    video = served.video
    big = data_url(np.random.default_rng(0).bytes(int(0.2 * 2**20)), "video/mp4")
    not_base64 = "data:image/png;base64," + "%%%%" * 40
    return {
        "an audio part": (
            user({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, text()),
            {},
            400,
            r"messages\.0\.content\.0: a content part type 'input_audio' is not accepted; this server takes 'text', "
            r"'image_url', 'video_url', 'input_video', 'video' and 'image'",
        ),
        "an uploaded file id": (
            user({"type": "input_video", "file_id": "file-123"}, text()),
            {},
            400,
            r"messages\.0\.content\.0: .*file_id.*video_url",
        ),
        "a video part without its file": (
            user({"type": "video"}, text()),
            {},
            400,
            r"messages\.0\.content\.0: a 'video' part needs exactly one of 'path', 'url' or 'video', got none",
        ),
        "an empty list of frames": (
            user({"type": "video", "video": []}, text()),
            {},
            400,
            r"messages\.0\.content\.0: a 'video' part's list of frames is empty",
        ),
        "a window on a list of frames": (
            user({"type": "video", "video": [frame_url(0)], "start_sec": 1.0}, text()),
            {},
            400,
            r"messages\.0\.content\.0: start_sec and end_sec window a video file, not a 'video' list of frames",
        ),
        "a relative path": (
            user({"type": "video", "path": "count.mp4"}, text()),
            {},
            400,
            r"messages\.0\.content\.0 \(video\): relative path 'count\.mp4'.*absolute",
        ),
        "an empty path": (
            user(text(), {"type": "image", "path": ""}),
            {},
            400,
            r"messages\.0\.content\.1 \(image\): relative path ''",
        ),
        "a video in an image part": (
            user(text(), image_part(data_url(b"\0" * 64, "video/mp4"))),
            {},
            400,
            r"messages\.0\.content\.1 \(image_url\): a data:video/mp4 URL in an image part",
        ),
        "an image in a video part": (
            user(video_part(frame_url(1)), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(video_url\): a data:image/png URL in a video part; send images as image_url",
        ),
        "a data URL that is not base64": (
            user(image_part("data:image/png,rawbytes"), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(image_url\): .*only base64 data: URLs",
        ),
        "broken base64": (
            user(image_part(not_base64), text()),
            {},
            400,
            r"content\.0 \(image_url\): .*not valid base64",
        ),
        "not an image": (
            user(text(), image_part(frame_url(0)), image_part(data_url(b"hello", "image/png"))),
            {},
            400,
            r"messages\.0\.content\.2 \(image_url\): cannot read the image",
        ),
        "a truncated image": (
            user(image_part(frame_url(0)), image_part(data_url(image_bytes(coloured(1))[:60]))),
            {"extra_body": {"num_frames": 2}},
            400,
            r"messages\.0\.content\.1 \(image_url\): cannot read the image: ",
        ),
        "frames of two sizes": (
            user(image_part(frame_url(0)), image_part(frame_url(1)), image_part(frame_url(2, size=(32, 32)))),
            {},
            400,
            r"messages\.0\.content\.2 \(image_url\): a frame of 32x32 pixels, but messages\.0\.content\.0 is 64x48",
        ),
        "images in two messages": (
            [
                {"role": "user", "content": [image_part(frame_url(0)), text()]},
                {"role": "assistant", "content": "A cube."},
                {"role": "user", "content": [image_part(frame_url(1)), text()]},
            ],
            {},
            400,
            r"2 videos in one request \(messages\.0\.content\.0 \(image_url\), messages\.2\.content\.0 "
            r"\(image_url\)\); Exo2Ego answers about one video per conversation",
        ),
        "images and a video": (
            user(image_part(frame_url(0)), video_part(file_url(video)), text()),
            {},
            400,
            r"2 videos in one request .*one video per conversation",
        ),
        "a file name too long": (
            user(video_part(file_url(served.media / ("x" * 300 + ".mp4"))), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(video_url\): cannot read video 'file:///.{50,}\.\.\.': File name too long",
        ),
        "an image outside the media root": (
            user(image_part(file_url(served.root / "outside.png")), text()),
            {},
            403,
            r"messages\.0\.content\.0 \(image_url\): .*outside --media-root",
        ),
        "a remote image": (
            user(image_part("https://example.com/frame.png"), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(image_url\): .*--allow-remote-media",
        ),
        "a data URL over --max-data-url-mb": (
            user(video_part(big), text()),
            {},
            413,
            r"messages\.0\.content\.0 \(video_url\): a data: URL of about 0\.2 MiB is larger than this server's "
            r"--max-data-url-mb of 0\.1 MiB",
        ),
        "a fragment and start_sec that disagree": (
            user(video_part(file_url(video) + "#t=1,2", start_sec=0.5), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(video_url\): start_sec 0\.5 and the URL's #t= start 1\.0 disagree",
        ),
        "a fragment that is no time": (
            user(video_part(file_url(video) + "#t=abc"), text()),
            {},
            400,
            r"messages\.0\.content\.0 \(video_url\): media fragment 't=abc'",
        ),
        "a fragment that ends before it starts": (
            user(video_part(file_url(video) + "#t=3,1"), text()),
            {},
            400,
            r"media fragment 't=3,1' ends before it starts",
        ),
        "a fragment after the video": (
            user(video_part(file_url(video) + "#t=50,60"), text()),
            {},
            400,
            r"outside the video",
        ),
        "num_frames options that disagree": (
            user(video_part(file_url(video)), text()),
            {"extra_body": {"num_frames": 4, "mm_processor_kwargs": {"num_frames": 8}}},
            400,
            r"num_frames 4 and mm_processor_kwargs\.num_frames 8 disagree",
        ),
        "media_io_kwargs and mm_processor_kwargs that disagree": (
            user(video_part(file_url(video)), text()),
            {
                "extra_body": {
                    "media_io_kwargs": {"video": {"num_frames": 2}},
                    "mm_processor_kwargs": {"num_frames": 8},
                }
            },
            400,
            r"media_io_kwargs\.video\.num_frames 2 and mm_processor_kwargs\.num_frames 8 disagree",
        ),
        "a media option this server has not": (
            user(video_part(file_url(video)), text()),
            {"extra_body": {"media_io_kwargs": {"video": {"fps": 2}}}},
            400,
            r"media_io_kwargs\.video: 'fps' is not supported; this server takes only num_frames",
        ),
        "a processor option this server has not": (
            user(video_part(file_url(video)), text()),
            {"extra_body": {"mm_processor_kwargs": {"max_pixels": 100}}},
            400,
            r"mm_processor_kwargs: 'max_pixels' is not supported; this server takes only num_frames",
        ),
        "too many frames through mm_processor_kwargs": (
            user(video_part(file_url(video)), text()),
            {"extra_body": {"mm_processor_kwargs": {"num_frames": 64}}},
            400,
            r"num_frames 64 is more than this server allows \(--max-frames 16\)",
        ),
    }


REFUSED = [
    "an audio part",
    "an uploaded file id",
    "a video part without its file",
    "an empty list of frames",
    "a window on a list of frames",
    "a relative path",
    "an empty path",
    "a video in an image part",
    "an image in a video part",
    "a data URL that is not base64",
    "broken base64",
    "not an image",
    "a truncated image",
    "frames of two sizes",
    "images in two messages",
    "images and a video",
    "a file name too long",
    "an image outside the media root",
    "a remote image",
    "a data URL over --max-data-url-mb",
    "a fragment and start_sec that disagree",
    "a fragment that is no time",
    "a fragment that ends before it starts",
    "a fragment after the video",
    "num_frames options that disagree",
    "media_io_kwargs and mm_processor_kwargs that disagree",
    "a media option this server has not",
    "a processor option this server has not",
    "too many frames through mm_processor_kwargs",
]


def _data_payloads(messages) -> list[str]:
    """The base64 payloads of every data: URL in `messages`."""
    return re.findall(r"base64,([A-Za-z0-9+/=%]+)", repr(messages))


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_shape_gets_a_4xx_naming_the_part_without_echoing_the_payload(served, case, caplog):
    messages, kwargs, status, message = _refused(served)[case]
    with caplog.at_level(logging.WARNING, logger="exo2ego.serve"):
        with pytest.raises(openai.APIStatusError) as raised:
            ask(served, messages, **kwargs)
    body = raised.value.body["message"]
    assert raised.value.status_code == status, body
    assert re.search(message, body), body
    assert len(body) < 700, body
    for payload in _data_payloads(messages):
        assert payload[:40] not in body
    # one log line: status, path, reason, and no payload
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("exo2ego.serve")]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert f"refused {status}" in lines[0] and "/v1/chat/completions" in lines[0], lines
    assert re.search(message, lines[0]), lines
    for payload in _data_payloads(messages):
        assert payload[:40] not in lines[0]
    assert ask(served, user(video_part(file_url(served.video)), text("Still there?"))).choices[0].message.content


def test_a_single_image_where_the_processor_refuses_short_videos_is_a_400_naming_the_part(served):
    processor = served.processor
    processor.short_video = "error"
    try:
        with pytest.raises(openai.BadRequestError) as raised:
            ask(served, user(text(), image_part(frame_url(5))))
        assert re.search(
            r"messages\.0\.content\.1 \(image_url\): 1 frame, but the model takes 4 \(num_frames\)",
            raised.value.body["message"],
        ), raised.value.body["message"]
        ask(served, user(*(image_part(frame_url(index)) for index in range(4)), text()))  # enough frames: fine
    finally:
        processor.short_video = "repeat"


def _metrics(served) -> dict[str, float]:
    response = httpx.get(f"{served.url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_accepted_and_refused_requests_by_status(served):
    chat = 'exo2ego_requests_total{path="/v1/chat/completions",code="%d",outcome="%s"}'
    before = _metrics(served)
    ask(served, user(video_part(file_url(served.video)), text()))
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            ask(served, user({"type": "input_audio"}, text()))
    with pytest.raises(openai.APIStatusError):
        ask(served, user(video_part(data_url(b"\0" * int(0.2 * 2**20), "video/mp4")), text()))
    after = _metrics(served)
    for key, added in ((chat % (200, "accepted"), 1), (chat % (400, "refused"), 2), (chat % (413, "refused"), 1)):
        assert after.get(key, 0) - before.get(key, 0) == added, (key, before, after)
    assert after["exo2ego_queue_depth"] == 0
    assert after["exo2ego_batches_total"] >= 1


# ------------------------------------------------------------------------------------------- media fragments alone
@pytest.mark.parametrize(
    "url, window",
    [
        ("file:///v.mp4", (None, None)),
        ("file:///v.mp4#t=10,20", (10.0, 20.0)),
        ("file:///v.mp4#t=10", (10.0, None)),
        ("file:///v.mp4#t=,20", (None, 20.0)),
        ("file:///v.mp4#t=npt:10.5,20", (10.5, 20.0)),
        ("file:///v.mp4#t=1:02:03.5,1:03:00", (3723.5, 3780.0)),
        ("file:///v.mp4#t=02:03,02:04", (123.0, 124.0)),
        ("file:///v.mp4#xywh=1,2,3,4&t=5,6", (5.0, 6.0)),
        ("file:///v.mp4#t=5%2C6", (5.0, 6.0)),
        ("data:video/mp4;base64,AAAA#t=1,2", (1.0, 2.0)),
    ],
)
def test_media_fragment_windows(url, window):
    from exo2ego.serve.media import media_fragment_window

    assert media_fragment_window(url) == window


@pytest.mark.parametrize("fragment", ["t=abc", "t=5,2", "t=5,5", "t=smpte:0:0:1,0:0:2", "t=1:60,2", "t=-1,2", "t="])
def test_bad_media_fragments(fragment):
    from exo2ego.serve.media import MediaError, media_fragment_window

    with pytest.raises(MediaError, match="media fragment"):
        media_fragment_window(f"file:///v.mp4#{fragment}")
