"""``exo2ego eval ...`` (run EgoBench) and ``exo2ego eval-report ...`` (rebuild a report)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


class ModelFolderError(ValueError):
    """A model folder that cannot be evaluated (e.g. saved without its processor)."""


def check_model_folder(model: str) -> None:
    """Fail early when a local model folder lacks its processor or tokenizer files, or when ``model`` is no
    folder and, offline, no Hub id in the local cache either."""
    folder = Path(model)
    if not folder.is_dir():
        if folder.exists() or model.startswith((".", "/", "~")):
            raise ModelFolderError(f"--model {model}: not a model folder")
        from huggingface_hub import constants, try_to_load_from_cache

        if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise ModelFolderError(
                f"--model {model}: no such folder (from {os.getcwd()}), and no Hub model of that "
                "id in the local cache (HF_HUB_OFFLINE is set); check the path"
            )
        return
    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"--model {model}: no config.json (not a saved model folder)")
    missing = []
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        missing.append(" or ".join(PROCESSOR_FILES))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise ModelFolderError(
            f"--model {model}: the folder has no processor ({'; '.join(missing)} missing); "
            "save it next to the weights with processor.save_pretrained(folder)"
        )


def load_model_and_processor(model: str, dtype: str = "auto", trust_remote_code: bool = False):
    """Processor first (cheap, fails fast), then the model in eval mode on this process's device."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import modeling_exo2ego  # noqa: F401  (registers Exo2Ego with the Auto classes)

    from .runner import process_state

    check_model_folder(model)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        loaded = AutoModelForImageTextToText.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as error:  # a Hub id that is unknown, private or unreachable
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFolderError(f"--model {model}: cannot load it as a folder or Hub id: {first_line}") from error
    return loaded.to(process_state().device).eval(), processor


def parse_video_roots(values: list[str] | None) -> dict[str, str]:
    """``["DIR", "egoschema=DIR2"]`` -> ``{"": "DIR", "egoschema": "DIR2"}``."""
    from .tasks import TASKS

    roots: dict[str, str] = {}
    for value in values or []:
        task, separator, folder = value.partition("=")
        if separator and task in TASKS:
            roots[task] = folder
        else:
            roots[""] = value
    return roots


def add_parser(subparsers) -> None:
    from .prompts import DEFAULT_PROMPT, PROMPTS
    from .scorers import SCORERS

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on EgoBench (resumable; results.json, report.md, plots)",
        description="Evaluate a model folder or Hub id on an EgoBench folder. Re-running the same command "
        "resumes a killed run. Multi-GPU: accelerate launch -m exo2ego eval ...",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id (with its processor)")
    parser.add_argument(
        "--data", required=True, help="EgoBench folder (one Parquet config per task) or Hub dataset id"
    )
    parser.add_argument(
        "--tasks", default="all", help="'all' or comma-separated task names (e.g. synthetic,egoschema)"
    )
    parser.add_argument(
        "--scorer", choices=SCORERS, default="letter_logprob", help="how multiple-choice rows are scored"
    )
    parser.add_argument("--out", required=True, help="run folder (predictions/, results.json, report.md, plots/)")
    parser.add_argument("--limit", type=int, default=None, help="first N rows (and side-table videos) per task")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the processor's)")
    parser.add_argument("--prompt", choices=sorted(PROMPTS), default=DEFAULT_PROMPT, help="system prompt variant")
    parser.add_argument(
        "--video-root",
        action="append",
        metavar="[TASK=]DIR",
        help="where relative video paths live (default: the data folder); repeatable per task",
    )
    parser.add_argument("--split", default=None, help="dataset split (default: the only one, or 'test')")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="generate_parse budget")
    parser.add_argument("--open-max-new-tokens", type=int, default=64, help="open-ended answer budget")
    parser.add_argument(
        "--option-score",
        choices=["mean", "sum"],
        default="mean",
        help="option_loglik ranking: mean or summed token log-prob",
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="continuations per batch from one cached prefix")
    parser.add_argument("--compare", default=None, help="comparison column: another results.json or 'paper'")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible chat endpoint on loopback (open QA)")
    parser.add_argument("--judge-model", default=None, help="pinned judge model id (required with --judge-url)")
    parser.add_argument(
        "--sentence-encoder", default=None, help="sentence-transformers path (default: offline MiniLM)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the Hub checkpoint's own code")
    parser.add_argument("--no-video-check", action="store_true", help="skip the up-front check that videos exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run in --out (predictions, results) and start fresh, not resume",
    )
    parser.set_defaults(func=_run_eval)

    report = subparsers.add_parser("eval-report", help="rebuild report.md and plots from a results.json")
    report.add_argument("--results", required=True, help="results.json of a run")
    report.add_argument("--out", default=None, help="folder for report.md and plots/ (default: next to results.json)")
    report.add_argument("--compare", default=None, help="another results.json or 'paper'")
    report.set_defaults(func=_run_report)


def _run_eval(args: argparse.Namespace) -> int:
    from .data import EvalDataError
    from .runner import (
        EvalConfig,
        RunConfigError,
        check_output_folder,
        evaluate,
        prepare_tasks,
    )

    config = EvalConfig(
        tasks=args.tasks,
        scorer=args.scorer,
        prompt=args.prompt,
        num_frames=args.frames,
        limit=args.limit,
        split=args.split,
        video_roots=parse_video_roots(args.video_root),
        max_new_tokens=args.max_new_tokens,
        open_max_new_tokens=args.open_max_new_tokens,
        option_score=args.option_score,
        option_chunk_size=args.chunk_size,
        bootstrap_resamples=args.bootstrap,
        seed=args.seed,
        judge_url=args.judge_url,
        judge_model=args.judge_model,
        sentence_encoder=args.sentence_encoder,
        check_videos=not args.no_video_check,
        compare=args.compare,
    )
    try:
        config.validate()
        check_output_folder(args.out, args.overwrite)
        task_data = prepare_tasks(args.data, config)  # bad data fails before the model is loaded
        check_model_folder(args.model)
        model, processor = load_model_and_processor(args.model, args.dtype, args.trust_remote_code)
        results = evaluate(
            model,
            processor,
            args.data,
            args.out,
            config,
            show_progress=not args.no_progress,
            task_data=task_data,
            overwrite=args.overwrite,
        )
    except (EvalDataError, RunConfigError, ModelFolderError, ValueError) as error:
        print(f"exo2ego eval: error: {error}", file=sys.stderr)
        return 2
    if results is not None:
        print(f"wrote {os.path.join(args.out, 'results.json')} and {os.path.join(args.out, 'report.md')}")
        for task, entry in results["tasks"].items():
            shown = entry["headline"] or list(entry["metrics"])
            print(f"  {task}: " + ", ".join(f"{key}={entry['metrics'][key]['value']:.2f}" for key in shown))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from .report import load_comparison, write_report

    out = Path(args.out or Path(args.results).parent)
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        results = json.loads(Path(args.results).read_text(encoding="utf-8"))
        comparison = load_comparison(args.compare)
    except (OSError, ValueError) as error:  # a missing file, invalid JSON (a ValueError) or a bad --out
        print(f"exo2ego eval-report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {write_report(results, out, comparison)}")
    return 0
