"""``exo2ego model-card --results results.json --out README.md``: write a model card from EgoBench results."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from eval.report import load_comparison, load_results
from exo2ego_base.command_line import add_command
from exo2ego_base.provenance import atomic_path

from .card import KL_FORMS, CardInfo, build_model_card


@dataclass
class ModelCardArguments:
    """What ``exo2ego model-card`` takes: the results of an ``exo2ego eval`` run, where the card goes, and what the
    card says about the weights (repo id, base checkpoints, datasets, licence, KL form, a comparison column)."""

    results: str = field(metadata={"help": "results.json of an `exo2ego eval` run"})
    out: str = field(metadata={"help": "README.md path, or a model folder to write README.md into"})
    model_id: str = field(default="org/exo2ego", metadata={"help": "Hub repo id shown in the card"})
    base_model: list[str] | None = field(
        default=None,
        metadata={
            "help": "base checkpoint (repeatable; unset: the paper's Mistral and CLIP)",
            "action": "extend",
        },
    )
    dataset: list[str] | None = field(
        default=None,
        metadata={"help": "training dataset Hub id (repeatable)", "action": "extend"},
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Hub id of the published EgoBench export"})
    license: str = field(default="other", metadata={"help": "licence of the weights (Hub licence id)"})
    kl_mode: str = field(
        default="gaussian",
        metadata={"help": "stage-2 KL form the weights were trained with", "choices": sorted(KL_FORMS)},
    )
    compare: str | None = field(default=None, metadata={"help": "comparison column: another results.json or 'paper'"})


def add_parser(subparsers) -> None:
    add_command(
        subparsers,
        "model-card",
        (ModelCardArguments,),
        _run,
        help="write a Hub model card (model-index results) from results.json",
    )


def _run(args: ModelCardArguments) -> int:
    info = CardInfo(
        model_id=args.model_id,
        datasets=args.dataset or (),
        eval_dataset=args.eval_dataset,
        license=args.license,
        kl_mode=args.kl_mode,
    )
    if args.base_model:
        info.base_models = args.base_model
    try:
        results = load_results(args.results)
        comparison = load_comparison(args.compare)
    except (OSError, ValueError) as error:  # a missing file, invalid JSON or content (ValueErrors)
        print(f"exo2ego model-card: error: {error}", file=sys.stderr)
        return 2
    card = build_model_card(results, info, comparison)
    out = Path(args.out)
    path = out / "README.md" if out.is_dir() else out
    with atomic_path(path) as tmp:
        card.save(str(tmp))
    print(f"wrote {path} ({len(card.data.eval_results or [])} model-index results)")
    return 0
