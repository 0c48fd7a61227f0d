"""`exo2ego serve` against the real `openai` client: a tiny model saved here, synthetic-world videos, one server
started on a free loopback port for the whole module."""

import concurrent.futures
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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(openai client, examples, media root, the server) for a tiny model served from a saved folder."""
    root = tmp_path_factory.mktemp("serve")
    save_tiny_model(str(root / "model"), seed=0)
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
    ]
    with ServerProcess(args) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        yield client, examples, media, server


@pytest.fixture(scope="module")
def reference(served):
    """answer(video, question, start, end, max_tokens): what `model.generate` says greedily, in this process."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_exo2ego  # noqa: F401  (registers the Auto classes)

    folder = served[3].args[1]
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
    ],
)
def test_bad_request_gets_a_4xx_with_a_clear_message_and_the_server_keeps_serving(served, case):
    client, examples, media, _ = served
    messages, kwargs, status, message = _bad_requests(examples, media)[case]
    with pytest.raises(openai.APIStatusError) as raised:
        ask(client, messages, **kwargs)
    assert raised.value.status_code == status
    assert message in raised.value.body["message"]
    assert ask(client, video_message(examples[0].video, "Still there?"), max_tokens=2).choices[0].message.content


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty request body"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "messages: Field required"),
    ],
)
def test_empty_or_broken_body_gets_400(served, body, message):
    client, examples, _, server = served
    response = httpx.post(
        f"{server.base_url}/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert ask(client, video_message(examples[0].video, "Still there?"), max_tokens=2).choices[0].message.content
