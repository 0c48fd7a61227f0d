"""The server's parts without HTTP: which video URLs the media policy reads, and the engine's queue and batching."""

import http.server
import os
import re
import threading

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")

from exo2ego.serve.engine import GenerationEngine, GenerationJob, QueueFullError, SamplingParams  # noqa: E402
from exo2ego.serve.media import MediaError, MediaPolicy  # noqa: E402


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"inside")
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    return root


def test_local_files_under_the_root_only(media):
    policy = MediaPolicy(media)
    assert policy.local_path(f"file://{media}/clip.mp4") == (str(media / "clip.mp4"), False)
    assert policy.local_path(f"file://localhost{media}/clip.mp4")[0] == str(media / "clip.mp4")
    (media / "link.mp4").symlink_to(media.parent / "secret.mp4")  # a link out of the root is outside it
    for url in (f"file://{media.parent}/secret.mp4", f"file://{media}/../secret.mp4", f"file://{media}/link.mp4"):
        with pytest.raises(MediaError, match="outside --media-root") as raised:
            policy.local_path(url)
        assert raised.value.status_code == 403
    with pytest.raises(MediaError, match="not found") as raised:
        policy.local_path(f"file://{media}/missing.mp4")
    assert raised.value.status_code == 404
    for url, message in (
        (f"file://otherhost{media}/clip.mp4", "names host 'otherhost'"),
        ("clip.mp4", "unsupported video URL"),
        ("ftp://example.com/clip.mp4", "unsupported video URL"),
        ("http://127.0.0.1:9/clip.mp4", "--allow-remote-media"),
    ):
        with pytest.raises(MediaError, match=message):
            policy.local_path(url)
    with pytest.raises(NotADirectoryError, match="--media-root"):
        MediaPolicy(media / "clip.mp4")


def test_data_urls_up_to_their_limit_and_never_echoed(media):
    import base64

    policy = MediaPolicy(media, max_data_url_bytes=1000)
    content = bytes(range(256)) * 3
    url = "data:video/mp4;base64," + base64.b64encode(content).decode()
    path, temporary = policy.local_path(url + "#t=1,2")
    assert temporary and path.endswith(".mp4") and open(path, "rb").read() == content
    os.unlink(path)
    assert policy.data_url_content(url.replace("video/mp4", "image/png"), "image") == ("image/png", content)
    wrapped = url[:40] + "\n" + url[40:]  # MIME-style line breaks are fine
    assert policy.data_url_content(wrapped, "video")[1] == content
    big = "data:video/mp4;base64," + base64.b64encode(b"x" * 2000).decode()
    for bad, message, status in (
        (big, "about 0.0 MiB is larger than this server's --max-data-url-mb of 0.0009537 MiB", 413),
        ("data:image/png;base64,AAAA", "a data:image/png URL in a video part", 400),
        ("data:video/mp4,AAAA", "only base64 data: URLs", 400),
        ("data:video/mp4;base64,A!AA", "is not valid base64", 400),
        ("data:video/mp4;base64" + "A" * 100, "has no ','", 400),
    ):
        with pytest.raises(MediaError, match=re.escape(message)) as raised:
            policy.local_path(bad)
        assert raised.value.status_code == status
        assert "AAAAAAAAAAAAAAAAAAAA" not in str(raised.value) and "eHh4eHh4" not in str(raised.value)
    for name, message in ((f"{'x/' * 200}clip.mp4", "not found"), (f"{'x' * 500}.mp4", "File name too long")):
        with pytest.raises(MediaError, match=message) as raised:  # a name too long is a 400, not a server error
            MediaPolicy(media).local_path(f"file://{media}/{name}")
        assert len(str(raised.value)) < 200 and "..." in str(raised.value)
    with pytest.raises(MediaError, match="relative path 'clip.mp4'"):
        policy.file_path("clip.mp4")
    assert policy.file_path(str(media / "clip.mp4")) == str(media / "clip.mp4")


@pytest.fixture
def loopback_http(media):
    """A static file server on a free loopback port, serving the media root."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(media), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_media_is_fetched_only_when_allowed(media, loopback_http):
    path, temporary = MediaPolicy(media, allow_remote_media=True).local_path(f"{loopback_http}/clip.mp4")
    assert temporary and open(path, "rb").read() == b"inside"
    os.unlink(path)
    with pytest.raises(MediaError, match="larger than 3 bytes") as raised:
        MediaPolicy(media, allow_remote_media=True, max_remote_bytes=3).local_path(f"{loopback_http}/clip.mp4")
    assert raised.value.status_code == 413
    with pytest.raises(MediaError, match="cannot fetch"):
        MediaPolicy(media, allow_remote_media=True).local_path(f"{loopback_http}/missing.mp4")


def _job(processor, video, question, max_new_tokens, events):
    messages = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return GenerationJob(inputs, SamplingParams(max_new_tokens), lambda *event: events.append(event))


def test_engine_queue_is_bounded(tiny, sample_video):
    model, processor = tiny
    engine = GenerationEngine(model, processor, max_queue=2)  # not started: jobs stay queued
    for _ in range(2):
        engine.submit(_job(processor, sample_video, "What?", 2, []))
    with pytest.raises(QueueFullError, match="queue is full \\(2 requests waiting\\)"):
        engine.submit(_job(processor, sample_video, "What?", 2, []))
    assert engine.queue_depth == 2


def test_engine_batches_waiting_requests_with_the_answers_of_single_generate(tiny, sample_video):
    import torch

    model, processor = tiny
    engine = GenerationEngine(model, processor, max_batch_size=8)
    questions = ["What?", "What did I do with the red cube in my left hand?", "Which object did I pick up?"]
    limits = [6, 3, 9]  # each row stops at its own max_tokens
    events = [[] for _ in questions]
    for question, limit, sink in zip(questions, limits, events):
        engine.submit(_job(processor, sample_video, question, limit, sink))
    engine.start()  # the three were waiting: one batch
    engine.close()  # waits for the batch
    assert engine.batch_sizes == [3]
    for question, limit, sink in zip(questions, limits, events):
        job = _job(processor, sample_video, question, limit, [])
        with torch.inference_mode():
            output = model.generate(**job.inputs, max_new_tokens=limit, do_sample=False)
        tokens = output[0, job.prompt_tokens :]
        expected = processor.decode(tokens, skip_special_tokens=True)
        kind, reason, text, count = sink[-1]
        assert kind == "finish" and text == expected
        assert "".join(event[1] for event in sink if event[0] == "delta") == expected
        assert count == len(tokens) - int(tokens[-1] == processor.tokenizer.eos_token_id)
        assert reason == ("stop" if count < limit else "length")


class _BrokenProcessor:
    """The tiny processor, except that building a prompt fails as no request could make it fail."""

    def __init__(self, processor):
        self.num_frames, self.tokenizer = processor.num_frames, processor.tokenizer

    def apply_chat_template(self, *args, **kwargs):
        raise RuntimeError("a bug")


def _client(tiny, tmp_path, processor=None, **settings):
    from fastapi.testclient import TestClient

    from exo2ego.serve.server import ServerSettings, create_app

    model, real = tiny
    app = create_app(
        GenerationEngine(model, real),
        processor or real,
        MediaPolicy(tmp_path),
        ServerSettings(served_model_name="tiny", max_frames=16, context_length=2048, **settings),
    )
    return TestClient(app, raise_server_exceptions=False)


def test_without_an_api_key_the_loopback_server_needs_no_authorization(tiny, tmp_path):
    with _client(tiny, tmp_path) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    with _client(tiny, tmp_path, api_key="secret") as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200


def test_an_unexpected_failure_is_a_json_500(tiny, tmp_path):
    with _client(tiny, tmp_path, processor=_BrokenProcessor(tiny[1])) as client:
        response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "internal server error (RuntimeError); the server log has the details",
            "type": "server_error",
            "param": None,
            "code": 500,
        }


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "example.org"])
def test_serving_beyond_loopback_without_an_api_key_is_refused(host, monkeypatch, capsys):
    from exo2ego.cli import main

    monkeypatch.delenv("EXO2EGO_API_KEY", raising=False)
    assert main(["serve", "--model", "unused", "--host", host]) == 2  # before any model is loaded
    assert f"--host {host} is reachable from other machines" in capsys.readouterr().err


def test_loopback_hosts():
    from exo2ego.serve.cli import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.example.org"]))


@pytest.mark.parametrize("flag", ["--max-body-mb", "--max-data-url-mb"])
@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "abc"])
def test_max_body_mb_must_be_a_finite_size_above_zero(flag, text, capsys):
    from exo2ego.cli import main
    from exo2ego.serve.cli import ServeArguments

    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", "unused", flag, text])  # a usage error, before any model is loaded
    assert stopped.value.code == 2 and flag in capsys.readouterr().err
    assert ServeArguments(max_body_mb=0.5, max_data_url_mb=0.5).max_body_mb == 0.5
