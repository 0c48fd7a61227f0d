"""`exo2ego app`: the Gradio video chat of `model_card/space/app.py`, locally or written out as a Hub Space.

    exo2ego app --model DIR_OR_HUB_ID [--host 127.0.0.1 --port 7860]     # serve the app
    exo2ego app --model HUB_ID --write-space DIR                          # a folder to push as a Gradio Space

Examples are rendered from the synthetic Ego-Exo world (held-out takes and their EgoBench questions).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from exo2ego.examples import write_synthetic_examples
from exo2ego.serve.cli import HostedModelArguments
from exo2ego_base.command_line import add_command
from exo2ego_base.provenance import write_json_atomic

logger = logging.getLogger(__name__)

SPACE_README = """---
title: Exo2Ego
emoji: 🎥
colorFrom: indigo
colorTo: green
sdk: gradio
app_file: app.py
pinned: false
license: apache-2.0
models:
- {model}
---

# Exo2Ego video chat

Ask [{model}](https://huggingface.co/{model}) about a first-person video: upload one or pick an example from the
synthetic Ego-Exo world, optionally trim the window, and ask. Written by `exo2ego app --write-space`.
"""


def write_examples(folder: str | Path, count: int = 3) -> list[dict]:
    """Render `count` synthetic examples into `folder` with `examples.json` (video paths relative to it)."""
    folder = Path(folder)
    examples = [asdict(example) for example in write_synthetic_examples(folder, count=count)]
    for example in examples:
        example["video"] = Path(example["video"]).name
    write_json_atomic(folder / "examples.json", examples)
    return examples


def write_space(out: str | Path, model_id: str, count: int = 3) -> Path:
    """A Gradio Space folder: app.py, requirements.txt, README.md (Space metadata), space.json, examples/."""
    space_source = resources.files("model_card.space")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        (out / name).write_bytes(space_source.joinpath(name).read_bytes())
    (out / "README.md").write_text(SPACE_README.format(model=model_id), encoding="utf-8")
    write_json_atomic(out / "space.json", {"model": model_id})
    write_examples(out / "examples", count)
    return out


@dataclass
class AppArguments:
    """What `exo2ego app` takes besides the model and host: the port, the answer length, the examples offered, or
    a folder to write the app to as a Hub Space instead of serving it."""

    port: int = field(default=7860, metadata={"help": "port to listen on"})
    max_new_tokens: int = field(default=128, metadata={"help": "default answer length limit"})
    examples: int = field(default=3, metadata={"help": "synthetic example videos to offer"})
    write_space: str | None = field(
        default=None, metadata={"help": "write a Gradio Space folder for --model and exit", "metavar": "DIR"}
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "app",
        (HostedModelArguments, AppArguments),
        _run,
        help="Gradio video chat app (also written as a Hub Space); needs .[app]",
    )


def _run(hosted: HostedModelArguments, options: AppArguments) -> int:
    if options.write_space:
        logger.info("wrote the Space to %s", write_space(options.write_space, hosted.model, options.examples))
        return 0
    try:  # the app extra (gradio), imported here so that the other commands run without it
        from model_card.space import app
    except ImportError as error:
        raise SystemExit(f"exo2ego app needs the app extra: pip install -e '.[app]' ({error})") from error
    # Deferred, heavy: the Exo2Ego model code loads transformers' models; exo2ego --help imports this module.
    import modeling_exo2ego  # noqa: F401  (registers Exo2Ego with the Auto classes for local folders)

    chat = app.VideoChat.from_pretrained(hosted.model, max_new_tokens=options.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="exo2ego-app-examples-") as folder:
        if options.examples:
            write_examples(folder, options.examples)
        examples = app.load_examples(folder)
        app.launch(
            app.build_demo(chat, examples), allowed_paths=[folder], server_name=hosted.host, server_port=options.port
        )
    return 0
