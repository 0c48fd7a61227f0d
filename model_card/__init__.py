"""Model and dataset cards: ``huggingface_hub.ModelCard`` with ``model-index`` results from an EgoBench
``results.json``, and the shared data-source/licence sections the dataset builders reuse."""

from .card import CardInfo, build_model_card, build_stage_card, eval_results, training_summary
from .dataset_card import SOURCES, DataSource, dataset_card, licence_table, source_sections

__all__ = [
    "CardInfo",
    "build_model_card",
    "build_stage_card",
    "eval_results",
    "training_summary",
    "SOURCES",
    "DataSource",
    "dataset_card",
    "licence_table",
    "source_sections",
]
