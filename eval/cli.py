"""``exo2ego eval ...`` (run EgoBench) and ``exo2ego eval-report ...`` (rebuild a report)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub import constants, try_to_load_from_cache

from exo2ego_base.command_line import add_command
from exo2ego_base.provenance import FolderLockedError

from .config import EvalConfig
from .data import EvalDataError
from .report import load_comparison, load_results, write_report

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
    # Deferred, heavy: transformers' model classes, the Exo2Ego model and eval.runner (accelerate); exo2ego --help
    # imports this module.
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


@dataclass
class EvalCommandArguments:
    """What ``exo2ego eval`` takes besides the run's :class:`eval.config.EvalConfig`: the model, the data, the run
    folder and how the model is loaded (flags from the fields, as for ``EvalConfig``)."""

    model: str = field(metadata={"help": "model folder or Hub id (with its processor)"})
    data: str = field(metadata={"help": "EgoBench folder (one Parquet config per task) or Hub dataset id"})
    out: str = field(metadata={"help": "run folder (predictions/, results.json, report.md, plots/)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "dtype the model is loaded in"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "allow the Hub checkpoint's own code"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (--no-progress: none)"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "delete an earlier run in --out (predictions, results) and start fresh, not resume"},
    )


@dataclass
class EvalReportArguments:
    """What ``exo2ego eval-report`` takes."""

    results: str = field(metadata={"help": "results.json of a run"})
    out: str | None = field(
        default=None, metadata={"help": "folder for report.md and plots/ (None: next to results.json)"}
    )
    compare: str | None = field(default=None, metadata={"help": "another results.json or 'paper'"})


def add_parser(subparsers) -> None:
    add_command(
        subparsers,
        "eval",
        (EvalCommandArguments, EvalConfig),
        _run_eval,
        help="evaluate a model on EgoBench (resumable; results.json, report.md, plots)",
        description="Evaluate a model folder or Hub id on an EgoBench folder. Re-running the same command "
        "resumes a killed run. Multi-GPU: accelerate launch -m exo2ego eval ... Each flag is a field of "
        "eval.cli.EvalCommandArguments or eval.config.EvalConfig.",
    )
    add_command(
        subparsers,
        "eval-report",
        (EvalReportArguments,),
        _run_report,
        help="rebuild report.md and plots from a results.json",
    )


def _run_eval(command: EvalCommandArguments, config: EvalConfig) -> int:
    # Deferred, heavy: eval.runner loads accelerate; exo2ego --help imports this module.
    from .runner import (
        RunConfigError,
        check_output_folder,
        evaluate,
        prepare_tasks,
        process_state,
        run_folder_lock,
    )

    try:
        config.validate()
        out = check_output_folder(command.out, command.overwrite)
        # The main process holds the folder from here on, so a second run stops before loading anything.
        with run_folder_lock(out, process_state()):
            task_data = prepare_tasks(command.data, config)  # bad data fails before the model is loaded
            check_model_folder(command.model)
            model, processor = load_model_and_processor(command.model, command.dtype, command.trust_remote_code)
            results = evaluate(
                model,
                processor,
                command.data,
                command.out,
                config,
                show_progress=command.progress,
                task_data=task_data,
                overwrite=command.overwrite,
            )
    except (EvalDataError, RunConfigError, ModelFolderError, FolderLockedError, ValueError) as error:
        print(f"exo2ego eval: error: {error}", file=sys.stderr)
        return 2
    if results is not None:
        print(f"wrote {os.path.join(command.out, 'results.json')} and {os.path.join(command.out, 'report.md')}")
        for task, entry in results["tasks"].items():
            shown = entry["headline"] or list(entry["metrics"])
            print(f"  {task}: " + ", ".join(f"{key}={entry['metrics'][key]['value']:.2f}" for key in shown))
    return 0


def _run_report(args: EvalReportArguments) -> int:
    out = Path(args.out or Path(args.results).parent)
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        results = load_results(args.results)
        comparison = load_comparison(args.compare)
    except (OSError, ValueError) as error:  # a missing file, invalid JSON or content (ValueErrors) or a bad --out
        print(f"exo2ego eval-report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {write_report(results, out, comparison)}")
    return 0
