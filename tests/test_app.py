"""The Gradio app in a real headless browser (Debian's Chromium driven by Playwright), and the Space folder.

The browser tests start `exo2ego app` on a free loopback port with a tiny model saved here, pick an example video
from the synthetic world (or upload one), ask, and read the streamed answer from the page; it must be what
`model.generate` answers greedily. A screenshot of the answered page is saved under test-artifacts/ (or
$EXO2EGO_TEST_ARTIFACTS).
"""

import os
import shutil
from pathlib import Path

import pytest

from exo2ego.examples import write_synthetic_examples
from exo2ego.tiny import save_tiny_model

CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox, no GPU, and none of Chromium's calls home (they are refused here).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAX_NEW_TOKENS = 12
ARTIFACTS = Path(os.environ.get("EXO2EGO_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def test_write_space_makes_a_gradio_space_folder(tmp_path):
    from huggingface_hub import metadata_load

    from exo2ego.app import write_space

    space = write_space(tmp_path / "space", "org/exo2ego", count=1)
    assert metadata_load(space / "README.md")["sdk"] == "gradio"
    assert metadata_load(space / "README.md")["models"] == ["org/exo2ego"]
    assert (space / "app.py").read_text() == (Path(__file__).parent.parent / "model_card/space/app.py").read_text()
    assert "transformers" in (space / "requirements.txt").read_text()
    pytest.importorskip("gradio", reason="the app needs the app extra: pip install -e '.[app]'")
    from model_card.space.app import load_examples

    examples = load_examples(space / "examples")
    assert len(examples) == 1 and Path(examples[0]["video"]).is_file() and examples[0]["question"].endswith("?")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    pytest.importorskip("gradio", reason="the app needs the app extra: pip install -e '.[app]'")
    pytest.importorskip("playwright", reason="the browser test drives Chromium with Playwright (.[dev])")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no {CHROMIUM}: install Debian's browser with `apt-get install -y chromium` (.ci/run does)")
    from exo2ego.serve.process import ServerProcess

    root = tmp_path_factory.mktemp("app")
    save_tiny_model(str(root / "model"), seed=0)
    args = ["--model", str(root / "model"), "--max-new-tokens", str(MAX_NEW_TOKENS), "--examples", "2"]
    with ServerProcess(args, command="app", ready_path="/") as server:
        yield server, root


@pytest.fixture(scope="module")
def reference(app_server):
    """answer(video, question, start, end): what `model.generate` says greedily, in this process."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_exo2ego  # noqa: F401  (registers the Auto classes)

    folder = app_server[1] / "model"
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)

    def answer(video, question, start_sec=None, end_sec=None):
        item = {"type": "video", "path": str(video)}
        item.update({key: value for key, value in (("start_sec", start_sec), ("end_sec", end_sec)) if value})
        messages = [{"role": "user", "content": [item, {"type": "text", "text": question}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    return answer


@pytest.fixture
def page(app_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        # Everything the page loads must come from the app itself (no web fonts, CDNs or analytics).
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        page.goto(app_server[0].url)
        page.wait_for_selector("#ask", timeout=60_000)
        yield page
        browser.close()


def read_answer(page, expected: str) -> str:
    """Wait until the streamed answer on the page equals `expected` (or time out), and return what it shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "expected => document.querySelector('#answer textarea').value === expected", arg=expected, timeout=60_000
        )
    except PlaywrightTimeout:
        pass  # the assertion below shows what the page says instead
    return page.input_value("#answer textarea")


def test_pick_an_example_ask_and_read_the_answer(app_server, reference, page, tmp_path):
    # The app renders its examples from the synthetic world with the same seed: the same videos and questions.
    example = write_synthetic_examples(tmp_path, count=2)[0]
    page.locator("#examples tr.tr-body").first.click()
    page.wait_for_function("document.querySelector('#question textarea').value.length > 0")
    assert page.input_value("#question textarea") == example.question
    assert float(page.input_value("#start input")) == pytest.approx(example.start_sec)
    page.wait_for_selector("#video video")
    page.click("#ask")
    expected = reference(example.video, example.question, example.start_sec, example.end_sec)
    assert expected
    answer = read_answer(page, expected)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_example_answered.png"), full_page=True)
    assert answer == expected
    local = (app_server[0].url, "data:", "blob:")
    assert len(page.requested) > 3 and [url for url in page.requested if not url.startswith(local)] == []


def test_upload_trim_and_ask(app_server, reference, page, tmp_path):
    video = shutil.copy(write_synthetic_examples(tmp_path, count=2)[1].video, tmp_path / "my_clip.mp4")
    page.set_input_files("#video input[type=file]", str(video))
    page.wait_for_selector("#video video", timeout=30_000)
    page.fill("#start input", "1")
    page.fill("#end input", "2.5")
    page.fill("#question textarea", "What did I do with the cube?")
    page.click("#ask")
    answer = read_answer(page, expected := reference(video, "What did I do with the cube?", 1.0, 2.5))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_upload_answered.png"), full_page=True)
    assert answer == expected
