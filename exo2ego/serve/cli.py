"""`exo2ego serve --model DIR_OR_HUB_ID [--host 127.0.0.1 --port 8000 --media-root DIR --allow-remote-media]`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from eval.cli import load_model_and_processor
from exo2ego_base.command_line import add_command

from .engine import GenerationEngine
from .media import MediaPolicy

logger = logging.getLogger(__name__)


@dataclass
class HostedModelArguments:
    """What a server command (`exo2ego serve`, `exo2ego app`) answers with and where it listens: the model and the
    host address; each command has its own port."""

    model: str = field(metadata={"help": "model folder or Hub id (with its processor)"})
    host: str = field(
        default="127.0.0.1",
        metadata={"help": "address to listen on (the default is reachable from this machine only)"},
    )


@dataclass
class ServeArguments:
    """What `exo2ego serve` takes besides the model and host: the port, how the model is loaded, which media it
    reads, batching, request limits and the API key."""

    port: int = field(default=8000, metadata={"help": "port to listen on"})
    served_model_name: str | None = field(
        default=None, metadata={"help": "the `model` name clients use (None: the model folder's name)"}
    )
    media_root: str = field(default=".", metadata={"help": "only videos under this folder are readable"})
    allow_remote_media: bool = field(
        default=False,
        metadata={"help": "also fetch http(s) video URLs (otherwise refused; the server makes no network request)"},
    )
    max_frames: int | None = field(
        default=None,
        metadata={"help": "most frames a request may ask for with num_frames (None: 4x the processor's)"},
    )
    max_batch_size: int = field(default=8, metadata={"help": "most requests in one generate call"})
    max_queue: int = field(default=64, metadata={"help": "most waiting requests; more get HTTP 503"})
    batch_wait_ms: float = field(
        default=5.0, metadata={"help": "how long a waiting request waits for others to share its batch"}
    )
    default_max_tokens: int = field(
        default=256, metadata={"help": "answer length limit of a request that sets no max_tokens"}
    )
    max_tokens_limit: int = field(default=2048, metadata={"help": "largest max_tokens a request may ask for"})
    max_body_mb: float = field(
        default=16.0, metadata={"help": "largest request body in MiB, above 0; larger ones get HTTP 413"}
    )
    max_data_url_mb: float = field(
        default=64.0,
        metadata={
            "help": "largest base64 data: URL (a video, or one image) in MiB, above 0; larger ones get HTTP 413 (the "
            "body must also fit --max-body-mb)"
        },
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "clients must send 'Authorization: Bearer KEY' (None: $EXO2EGO_API_KEY); required unless --host "
            "is a loopback address"
        },
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "dtype the model is loaded in"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "for a Hub id not installed locally"})

    def __post_init__(self):
        for flag, value in (("--max-body-mb", self.max_body_mb), ("--max-data-url-mb", self.max_data_url_mb)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"argument {flag}: must be a finite number of MiB above 0, got {value:g}")
        if self.api_key is None:
            self.api_key = os.environ.get("EXO2EGO_API_KEY")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "serve",
        (HostedModelArguments, ServeArguments),
        _run,
        help="OpenAI-compatible video chat server (/v1/chat/completions, /v1/models); needs .[serve]",
    )


def build_app(hosted: HostedModelArguments, options: ServeArguments):
    """Load the model and processor and build the app (not yet serving)."""
    # Deferred, optional: exo2ego.serve.server needs the serve extra (fastapi).
    from .server import ServerSettings, create_app

    policy = MediaPolicy(
        options.media_root,
        allow_remote_media=options.allow_remote_media,
        max_data_url_bytes=int(options.max_data_url_mb * 2**20),
    )
    model, processor = load_model_and_processor(hosted.model, options.dtype, options.trust_remote_code)
    engine = GenerationEngine(
        model,
        processor,
        max_batch_size=options.max_batch_size,
        max_queue=options.max_queue,
        batch_wait_s=options.batch_wait_ms / 1000,
    )
    settings = ServerSettings(
        served_model_name=options.served_model_name or os.path.basename(os.path.normpath(hosted.model)),
        max_frames=options.max_frames or 4 * processor.num_frames,
        context_length=model.config.get_text_config().max_position_embeddings,
        default_max_tokens=options.default_max_tokens,
        max_tokens_limit=options.max_tokens_limit,
        max_body_bytes=int(options.max_body_mb * 2**20),
        api_key=options.api_key or None,
    )
    return create_app(engine, processor, policy, settings), settings, policy


def _run(hosted: HostedModelArguments, options: ServeArguments) -> int:
    try:  # the serve extra, imported here so that the other commands run without it
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise SystemExit(f"exo2ego serve needs the serve extra: pip install -e '.[serve]' ({error})") from error

    if not options.api_key and not is_loopback(hosted.host):
        print(
            f"exo2ego serve: error: --host {hosted.host} is reachable from other machines, and the server has no API "
            "key: pass --api-key KEY (or set EXO2EGO_API_KEY), or serve on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    app, settings, policy = build_app(hosted, options)
    logger.info(
        "serving %r from %s; videos under %s%s",
        settings.served_model_name,
        hosted.model,
        policy.media_root,
        ", remote URLs allowed" if policy.allow_remote_media else "",
    )
    uvicorn.run(app, host=hosted.host, port=options.port, log_level="info")
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False
