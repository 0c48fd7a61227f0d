"""`exo2ego data ...`: one sub-command per builder, each defined next to its builder."""

from __future__ import annotations

import importlib

# Modules that define ``add_parser(data_subparsers)``.
DATA_COMMAND_MODULES = (
    "datasets_scripts.synthetic.cli",
    "datasets_scripts.ego_exoclip.cli",
    "datasets_scripts.egoit.cli",
    "datasets_scripts.egobench.cli",
    "datasets_scripts.egoclip.cli",
    "datasets_scripts.pretrain.cli",
)


def add_parser(subparsers) -> None:
    data_parser = subparsers.add_parser(
        "data", help="build the data sets (synthetic world, Ego-ExoClip, EgoIT, EgoBench, EgoClip, web pretraining)"
    )
    data_subparsers = data_parser.add_subparsers(dest="data_command", required=True)
    for module_name in DATA_COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(data_subparsers)
