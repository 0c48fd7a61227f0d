"""``exo2ego model-card --results results.json --out README.md``: write a model card from EgoBench results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .card import KL_FORMS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("model-card", help="write a Hub model card (model-index results) from results.json")
    parser.add_argument("--results", required=True, help="results.json of an `exo2ego eval` run")
    parser.add_argument("--out", required=True, help="README.md path, or a model folder to write README.md into")
    parser.add_argument("--model-id", default="org/exo2ego", help="Hub repo id shown in the card")
    parser.add_argument("--base-model", action="append", default=None, help="base checkpoint (repeatable)")
    parser.add_argument("--dataset", action="append", default=None, help="training dataset Hub id (repeatable)")
    parser.add_argument("--eval-dataset", default=None, help="Hub id of the published EgoBench export")
    parser.add_argument("--license", default="other", help="licence of the weights (Hub licence id)")
    parser.add_argument(
        "--kl-mode", default="gaussian", choices=sorted(KL_FORMS), help="stage-2 KL form the weights were trained with"
    )
    parser.add_argument("--compare", default=None, help="comparison column: another results.json or 'paper'")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from eval.report import load_comparison, load_results
    from exo2ego_base.provenance import atomic_path

    from .card import CardInfo, build_model_card

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
