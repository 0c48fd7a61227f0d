"""`exo2ego serve --model DIR_OR_HUB_ID [--host 127.0.0.1 --port 8000 --media-root DIR --allow-remote-media]`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys

logger = logging.getLogger(__name__)


def positive_mib(text: str) -> float:
    """argparse type of `--max-body-mb` and `--max-data-url-mb`: a finite number of MiB above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MiB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of MiB above 0, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="OpenAI-compatible video chat server (/v1/chat/completions, /v1/models); needs .[serve]"
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id (with its processor)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the `model` name clients use (default: the folder's name)")
    parser.add_argument("--media-root", default=".", help="only videos under this folder are readable (default: .)")
    parser.add_argument(
        "--allow-remote-media",
        action="store_true",
        help="also fetch http(s) video URLs (otherwise refused; the server makes no network request)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        help="most frames a request may ask for with num_frames (default: 4x the processor's)",
    )
    parser.add_argument("--max-batch-size", type=int, default=8, help="most requests in one generate call")
    parser.add_argument("--max-queue", type=int, default=64, help="most waiting requests; more get HTTP 503")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a waiting request waits for others to share its batch",
    )
    parser.add_argument("--default-max-tokens", type=int, default=256)
    parser.add_argument("--max-tokens-limit", type=int, default=2048)
    parser.add_argument(
        "--max-body-mb", type=positive_mib, default=16.0, help="largest request body in MiB; larger ones get HTTP 413"
    )
    parser.add_argument(
        "--max-data-url-mb",
        type=positive_mib,
        default=64.0,
        help="largest base64 data: URL (a video, or one image) in MiB; larger ones get HTTP 413 (the body must also "
        "fit --max-body-mb)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EXO2EGO_API_KEY"),
        help="clients must send 'Authorization: Bearer KEY' (default: $EXO2EGO_API_KEY); required unless --host is "
        "a loopback address",
    )
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--trust-remote-code", action="store_true", help="for a Hub id not installed locally")
    parser.set_defaults(func=_run)


def build_app(args: argparse.Namespace):
    """Load the model and processor and build the app (not yet serving)."""
    from eval.cli import load_model_and_processor

    from .engine import GenerationEngine
    from .media import MediaPolicy
    from .server import ServerSettings, create_app

    policy = MediaPolicy(
        args.media_root,
        allow_remote_media=args.allow_remote_media,
        max_data_url_bytes=int(args.max_data_url_mb * 2**20),
    )
    model, processor = load_model_and_processor(args.model, args.dtype, args.trust_remote_code)
    engine = GenerationEngine(
        model,
        processor,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        batch_wait_s=args.batch_wait_ms / 1000,
    )
    settings = ServerSettings(
        served_model_name=args.served_model_name or os.path.basename(os.path.normpath(args.model)),
        max_frames=args.max_frames or 4 * processor.num_frames,
        context_length=model.config.get_text_config().max_position_embeddings,
        default_max_tokens=args.default_max_tokens,
        max_tokens_limit=args.max_tokens_limit,
        max_body_bytes=int(args.max_body_mb * 2**20),
        api_key=args.api_key or None,
    )
    return create_app(engine, processor, policy, settings), settings, policy


def _run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise SystemExit(f"exo2ego serve needs the serve extra: pip install -e '.[serve]' ({error})") from error

    if not args.api_key and not is_loopback(args.host):
        print(
            f"exo2ego serve: error: --host {args.host} is reachable from other machines, and the server has no API "
            "key: pass --api-key KEY (or set EXO2EGO_API_KEY), or serve on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    app, settings, policy = build_app(args)
    logger.info(
        "serving %r from %s; videos under %s%s",
        settings.served_model_name,
        args.model,
        policy.media_root,
        ", remote URLs allowed" if policy.allow_remote_media else "",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False
