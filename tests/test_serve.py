"""`exo2ego serve` against the real `openai` client: a tiny model saved here, synthetic-world videos, one server
started on a free loopback port for the whole module."""

import concurrent.futures
import re
import shutil

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the server needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="the tests talk to the server with the openai client (.[dev])")
httpx = pytest.importorskip("httpx")

from exo2ego.examples import write_synthetic_examples  # noqa: E402
from exo2ego.serve.process import ServerProcess  # noqa: E402
from exo2ego.tiny import save_tiny_model  # noqa: E402

MODEL_NAME = "tiny-exo2ego"
MAX_TOKENS = 12
API_KEY = "test-key"
AUTHORIZED = {"authorization": f"Bearer {API_KEY}"}
JSON = {**AUTHORIZED, "content-type": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(openai client, examples, media root, the server) for a tiny model served from a saved folder."""
    root = tmp_path_factory.mktemp("serve")
    # Seed 4: a random tiny model whose greedy answers differ between the requests of the concurrency test, which
    # tells the requests apart by their answers (with seed 0 every request gets the same answer).
    save_tiny_model(str(root / "model"), seed=4)
    media = root / "media"
    examples = write_synthetic_examples(media, count=2)
    shutil.copy(examples[0].video, root / "outside.mp4")
    args = [
        "--model",
        str(root / "model"),
        "--served-model-name",
        MODEL_NAME,
        "--media-root",
        str(media),
        "--max-tokens-limit",
        "64",
        "--api-key",
        API_KEY,
    ]
    with ServerProcess(args) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)
        yield client, examples, media, server


@pytest.fixture(scope="module")
def reference(served):
    """answer(video, question, start, end, max_tokens): what `model.generate` says greedily, in this process."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_exo2ego  # noqa: F401  (registers the Auto classes)

    folder = served[3].args[served[3].args.index("--model") + 1]
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)

    def answer(video, question, start_sec=None, end_sec=None, max_tokens=MAX_TOKENS):
        item = {"type": "video", "path": video}
        item.update(window(start_sec, end_sec))
        messages = [{"role": "user", "content": [item, {"type": "text", "text": question}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    return answer


def window(start_sec, end_sec) -> dict:
    return {key: value for key, value in (("start_sec", start_sec), ("end_sec", end_sec)) if value is not None}


def video_message(video, question, start_sec=None, end_sec=None):
    video_url = {"url": f"file://{video}"}
    video_url.update(window(start_sec, end_sec))
    return [
        {
            "role": "user",
            "content": [{"type": "video_url", "video_url": video_url}, {"type": "text", "text": question}],
        }
    ]


def ask(client, messages, **kwargs):
    kwargs = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    return client.chat.completions.create(messages=messages, **kwargs)


def test_models_lists_the_served_model(served):
    client = served[0]
    assert [model.id for model in client.models.list()] == [MODEL_NAME]


def test_video_question_is_answered_as_model_generate_answers_it(served, reference):
    client, examples = served[0], served[1]
    example = examples[0]
    completion = ask(client, video_message(example.video, example.question, example.start_sec, example.end_sec))
    choice = completion.choices[0]
    expected = reference(example.video, example.question, example.start_sec, example.end_sec)
    assert expected  # a random tiny model still says something
    assert choice.message.content == expected
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= MAX_TOKENS
    # the window matters: the whole video is another input
    whole = ask(client, video_message(example.video, example.question))
    assert whole.choices[0].message.content == reference(example.video, example.question)


def test_streaming_yields_the_same_text(served, reference):
    client, examples = served[0], served[1]
    example = examples[1]
    messages = video_message(example.video, example.question, example.start_sec, example.end_sec)
    stream = ask(client, messages, stream=True, stream_options={"include_usage": True})
    deltas, finish_reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            deltas.append(choice.delta.content or "")
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    expected = reference(example.video, example.question, example.start_sec, example.end_sec)
    assert "".join(deltas) == expected == ask(client, messages).choices[0].message.content
    assert sum(bool(delta) for delta in deltas) > 1  # streamed in pieces, not in one chunk
    assert len(finish_reasons) == 1 and usage is not None and usage.completion_tokens <= MAX_TOKENS


def test_eight_concurrent_clients_are_all_answered(served, reference):
    client, examples, _, server = served
    # eight different requests: two videos, whole or windowed, two questions
    requests = [
        (example.video, question, window)
        for example in examples
        for question in (example.question, "What did I do with the cube?")
        for window in ((None, None), (example.start_sec, example.end_sec))
    ]
    batches_before = server.health()["batches"]

    def one(request):
        video, question, (start, end) = request
        return ask(client, video_message(video, question, start, end)).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(one, requests))
    assert answers == [reference(video, question, start, end) for video, question, (start, end) in requests]
    assert len(set(answers)) > 1  # the requests were told apart
    health = server.health()
    assert health["batches"] > batches_before and health["queue_depth"] == 0


def test_sampling_and_greedy_requests_together(served, reference):
    client, examples = served[0], served[1]
    example = examples[0]
    messages = video_message(example.video, example.question)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sampled = [pool.submit(ask, client, messages, temperature=1.5, top_p=0.9, max_tokens=8) for _ in range(3)]
        greedy = pool.submit(ask, client, messages)
        completions = [future.result() for future in sampled]
    assert greedy.result().choices[0].message.content == reference(example.video, example.question)
    for completion in completions:
        assert 0 < completion.usage.completion_tokens <= 8
        assert completion.choices[0].finish_reason in ("stop", "length")


def _bad_requests(examples, media):
    good = examples[0]
    return {
        "missing video file": (video_message(media / "no_such.mp4", "What?"), {}, 404, "video file not found"),
        "path outside the media root": (
            video_message(media.parent / "outside.mp4", "What?"),
            {},
            403,
            "outside --media-root",
        ),
        "dot-dot escape": (video_message(f"{media}/../outside.mp4", "What?"), {}, 403, "outside --media-root"),
        "remote URL": (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                        {"type": "text", "text": "What?"},
                    ],
                }
            ],
            {},
            400,
            "--allow-remote-media",
        ),
        "malformed message": (
            [{"role": "user", "content": [{"type": "video_url", "url": str(good.video)}]}],
            {},
            400,
            "messages.0.content.0",
        ),
        "unknown role": ([{"role": "robot", "content": "hi"}], {}, 400, "messages.0.role"),
        "too many frames": (
            video_message(good.video, "What?"),
            {"extra_body": {"num_frames": 64}},
            400,
            "--max-frames 16",
        ),
        "two videos": (
            [
                {
                    "role": "user",
                    "content": video_message(good.video, "a")[0]["content"]
                    + video_message(good.video, "b")[0]["content"],
                }
            ],
            {},
            400,
            "one video per conversation",
        ),
        "window after the video": (video_message(good.video, "What?", 50.0, 60.0), {}, 400, "outside the video"),
        "too many tokens": (video_message(good.video, "What?"), {"max_tokens": 65}, 400, "limit of 64"),
        "unknown model": (video_message(good.video, "What?"), {"model": "gpt-4o"}, 404, "not served here"),
        "prompt longer than the context": (
            [{"role": "user", "content": "word " * 3000}],
            {},
            400,
            r"the prompt is \d+ tokens and max_tokens is 12: \d+ tokens do not fit the model's context of 2048",
        ),
        "logprobs asked for": (video_message(good.video, "What?"), {"logprobs": True}, 400, "logprobs: .*no log-prob"),
        "top_logprobs asked for": (video_message(good.video, "What?"), {"top_logprobs": 3}, 400, "top_logprobs: "),
        "JSON response format": (
            video_message(good.video, "What?"),
            {"response_format": {"type": "json_object"}},
            400,
            "response_format.type: .*'json_object' is not supported",
        ),
        "wrong API key": (
            video_message(good.video, "What?"),
            {"extra_headers": {"Authorization": "Bearer no"}},
            401,
            "API key",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing video file",
        "path outside the media root",
        "dot-dot escape",
        "remote URL",
        "malformed message",
        "unknown role",
        "too many frames",
        "two videos",
        "window after the video",
        "too many tokens",
        "unknown model",
        "prompt longer than the context",
        "logprobs asked for",
        "top_logprobs asked for",
        "JSON response format",
        "wrong API key",
    ],
)
def test_bad_request_gets_a_4xx_with_a_clear_message_and_the_server_keeps_serving(served, case):
    client, examples, media, _ = served
    messages, kwargs, status, message = _bad_requests(examples, media)[case]
    with pytest.raises(openai.APIStatusError) as raised:
        ask(client, messages, **kwargs)
    assert raised.value.status_code == status
    assert re.search(message, raised.value.body["message"]), raised.value.body["message"]
    assert ask(client, video_message(examples[0].video, "Still there?"), max_tokens=2).choices[0].message.content


def _streamed(size: int, chunk: int = 2**20):
    """`size` bytes of blanks, one chunk at a time (never the whole body in memory)."""
    for start in range(0, size, chunk):
        yield b" " * min(chunk, size - start)


HUNDRED_MB = 100 * 2**20

# (row id, body, extra headers, status, message)
RAW_BODY_ROWS = [
    ("empty", b"", {}, 400, "empty request body"),
    ("not JSON", b"{not json", {}, 400, "not JSON"),
    ("a list", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("no messages", b"{}", {}, 400, "messages: Field required"),
    ("100,000 levels of nesting", b"[" * 100_000 + b"]" * 100_000, {}, 400, "more than 64 levels deep"),
    ("65 levels of nesting", b'{"a": ' * 65 + b"1" + b"}" * 65, {}, 400, "more than 64 levels deep"),
    ("text/plain", b"{}", {"content-type": "text/plain"}, 415, "Content-Type must be application/json"),
    ("form", b"a=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "must be application/json"),
    ("no content type", b"{}", {"content-type": ""}, 415, "must be application/json, got ''"),
    (
        "100 MB with Content-Length",
        lambda: _streamed(HUNDRED_MB),
        {"content-length": str(HUNDRED_MB)},
        413,
        "request body of 104857600 bytes is larger than this server's limit of 16777216 bytes",
    ),
    ("100 MB chunked", lambda: _streamed(HUNDRED_MB), {}, 413, "more than 16777216 bytes"),
    ("no API key", b"{}", {"authorization": ""}, 401, "missing or wrong API key"),
]


@pytest.mark.parametrize(
    "body, headers, status, message", [row[1:] for row in RAW_BODY_ROWS], ids=[row[0] for row in RAW_BODY_ROWS]
)
def test_bad_body_gets_a_json_error(served, body, headers, status, message):
    client, examples, _, server = served
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        content=body() if callable(body) else body,
        headers={**JSON, **headers},
        timeout=60,
    )
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert ask(client, video_message(examples[0].video, "Still there?"), max_tokens=2).choices[0].message.content


def test_a_prompt_of_20000_words_is_refused_before_memory_is_taken(served):
    psutil = pytest.importorskip("psutil")
    client, _, _, server = served
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    with pytest.raises(openai.BadRequestError, match="do not fit the model's context of 2048"):
        ask(client, [{"role": "user", "content": "word " * 20_000}])
    assert process.memory_info().rss - before < 2 * 2**30


def test_fields_clients_send_by_default_are_accepted(served):
    client, examples = served[0], served[1]
    messages = video_message(examples[0].video, "What?")
    completion = ask(
        client, messages, max_tokens=2, logprobs=False, top_logprobs=0, response_format={"type": "text"}, seed=1
    )
    assert completion.choices[0].message.content


def test_errors_outside_the_chat_endpoint_are_json_too(served):
    server = served[3]
    assert httpx.get(f"{server.base_url}/models", timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200  # open for health checks
    for response in (
        httpx.get(f"{server.base_url}/no-such-path", headers=AUTHORIZED, timeout=30),
        httpx.get(f"{server.base_url}/chat/completions", headers=AUTHORIZED, timeout=30),
    ):
        assert response.status_code in (404, 405)
        assert response.json()["error"]["code"] == response.status_code
