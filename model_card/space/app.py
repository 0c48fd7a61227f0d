"""Exo2Ego video chat: upload or pick a video, optionally trim the window, ask, and watch the answer stream.

The same file is the Hub Space's `app.py` (it imports only gradio, torch and transformers; the model brings its
own code with `trust_remote_code=True`) and the app behind `exo2ego app --model DIR_OR_HUB_ID`. As a Space it
reads the model id from `EXO2EGO_MODEL` or `space.json`, and its examples from `examples/examples.json`, both
written by `exo2ego app --write-space DIR --model HUB_ID`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the app or the Space

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor, TextIteratorStreamer  # noqa: E402

HERE = Path(__file__).resolve().parent
TITLE = "Exo2Ego: ask about an egocentric video"
# System fonts: the default theme would fetch web fonts, which a closed network or a privacy-minded user refuses.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


class VideoChat:
    """Answers one question about one video window with `model.generate`, streaming the text.

    Args:
        model: an Exo2Ego generating model (eval mode).
        processor: its processor.
        max_new_tokens: the default answer length limit.
    """

    def __init__(self, model, processor, max_new_tokens: int = 128):
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()  # one generate at a time: the model is shared by every visitor

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs) -> VideoChat:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
        return cls(model, processor, **kwargs)

    def conversation(self, video: str, question: str, start_sec: float | None, end_sec: float | None) -> list[dict]:
        item = {"type": "video", "path": video}
        if start_sec:
            item["start_sec"] = float(start_sec)
        if end_sec:
            item["end_sec"] = float(end_sec)
        return [{"role": "user", "content": [item, {"type": "text", "text": question}]}]

    def answer(
        self,
        video: str | None,
        question: str,
        start_sec: float | None = None,
        end_sec: float | None = None,
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        """Yield the answer so far after each new piece (greedy decoding)."""
        if not video:
            raise gr.Error("Upload a video or pick an example first.")
        if not question or not question.strip():
            raise gr.Error("Type a question about the video.")
        if start_sec and end_sec and not end_sec > start_sec:
            raise gr.Error(f"The window's end ({end_sec} s) must come after its start ({start_sec} s).")
        try:
            inputs = self.processor.apply_chat_template(
                self.conversation(video, question.strip(), start_sec, end_sec),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )
        except (ValueError, OSError) as error:
            raise gr.Error(f"Cannot read this video: {error}") from error
        inputs = inputs.to(self.model.device)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            **inputs, max_new_tokens=int(max_new_tokens or self.max_new_tokens), do_sample=False, streamer=streamer
        )
        failures: list[Exception] = []
        with self._lock:
            worker = threading.Thread(target=self._generate, args=(kwargs, failures), daemon=True)
            worker.start()
            text = ""
            for piece in streamer:
                text += piece
                yield text
            worker.join()
        if failures:
            raise gr.Error(f"Generation failed: {failures[0]}")
        yield text

    def _generate(self, kwargs: dict, failures: list[Exception]) -> None:
        try:
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except Exception as error:  # shown to the visitor; the streamer must still end or the page waits forever
            failures.append(error)
            kwargs["streamer"].end()


def build_demo(chat: VideoChat, examples: list[dict] | None = None) -> gr.Blocks:
    """The Blocks app. `examples`: dicts with `video`, `question` and optionally `start_sec`, `end_sec`."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nExo2Ego answers questions about first-person video. Upload a video (or pick an "
            "example), optionally trim it to a window, and ask."
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="video")
                with gr.Row():
                    start = gr.Number(label="Window start (s, optional)", minimum=0, elem_id="start")
                    end = gr.Number(label="Window end (s, optional)", minimum=0, elem_id="end")
                question = gr.Textbox(label="Question", placeholder="What did I do with the cup?", elem_id="question")
                max_tokens = gr.Slider(1, 512, value=chat.max_new_tokens, step=1, label="Max new tokens")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id="answer")
        if examples:
            gr.Examples(
                examples=[[e["video"], e["question"], e.get("start_sec"), e.get("end_sec")] for e in examples],
                inputs=[video, question, start, end],
                label="Examples from the synthetic Ego-Exo world",
                elem_id="examples",
            )
        inputs = [video, question, start, end, max_tokens]
        ask.click(chat.answer, inputs=inputs, outputs=answer)
        question.submit(chat.answer, inputs=inputs, outputs=answer)
    return demo


def load_examples(folder: str | Path) -> list[dict]:
    """`folder/examples.json` (video paths relative to `folder`), or [] when there is none."""
    folder = Path(folder)
    index = folder / "examples.json"
    if not index.is_file():
        return []
    examples = json.loads(index.read_text(encoding="utf-8"))
    return [{**example, "video": str(folder / example["video"])} for example in examples]


def launch(demo: gr.Blocks, allowed_paths: list[str] | None = None, **kwargs):
    """Launch with the app's theme, server-side rendering off (it needs Node.js) and a bounded queue."""
    return demo.queue(max_size=32).launch(theme=THEME, ssr_mode=False, allowed_paths=allowed_paths, **kwargs)


if __name__ == "__main__":  # the Hub Space
    settings_file = HERE / "space.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    model_id = os.environ.get("EXO2EGO_MODEL") or settings.get("model")
    if not model_id:
        raise SystemExit("set EXO2EGO_MODEL to the model's Hub id (or write space.json: exo2ego app --write-space)")
    launch(
        build_demo(VideoChat.from_pretrained(model_id), load_examples(HERE / "examples")),
        allowed_paths=[str(HERE / "examples")],
    )
