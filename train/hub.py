"""Publish a finished stage folder: model, processor and a generated model card in one Hub commit.

Only the files the stage wrote (the list in `exo2ego_stage.json`), the stage metadata and the card are uploaded:
checkpoints, logs, pickled arguments and anything else found in the folder (`.env`, notes) stay local.
"""

from __future__ import annotations

import json
import os

from exo2ego_base.provenance import atomic_path, push_files_to_hub
from model_card import CardInfo, build_model_card, build_stage_card, training_summary
from train.stage_folder import ADAPTER_DIR_NAME, STAGE_METADATA_NAME, read_stage_metadata

CARD_NAME = "README.md"


def write_model_card(folder: str, repo_id: str, eval_results: str | None = None) -> str:
    """Write `README.md` for the stage output in `folder` with the `model_card` generator; returns its path.

    With an EgoBench `results.json` (`eval_results`), the card is the project's full card (with `model-index`
    results) plus a training section; otherwise the short stage card from `exo2ego_stage.json`.
    """
    metadata = read_stage_metadata(folder)
    if metadata is None:
        raise ValueError(f"{folder} has no {STAGE_METADATA_NAME}: only a finished stage output can be pushed")
    path = os.path.join(folder, CARD_NAME)
    if eval_results:
        with open(eval_results) as handle:
            results = json.load(handle)
        info = CardInfo(model_id=repo_id, extra_sections={"Training run": training_summary(metadata)})
        card = build_model_card(results, info)
    else:
        card = build_stage_card(metadata, repo_id, ADAPTER_DIR_NAME)
    with atomic_path(path) as tmp:
        card.save(tmp)
    return path


def files_to_push(folder: str) -> list[str]:
    """Relative paths of the release files in `folder`: the files its stage wrote, its metadata and the card."""
    metadata = read_stage_metadata(folder)
    if metadata is None:
        raise ValueError(f"{folder} has no {STAGE_METADATA_NAME}: only a finished stage output can be pushed")
    if "files" not in metadata:
        raise ValueError(
            f"{folder}/{STAGE_METADATA_NAME} does not list the files its stage wrote (an output of an "
            "older version); train it again to push it"
        )
    card = [CARD_NAME] if os.path.isfile(os.path.join(folder, CARD_NAME)) else []
    return sorted({*metadata["files"], STAGE_METADATA_NAME, *card})


def push_stage_output(
    folder: str,
    repo_id: str | None,
    private: bool | None = None,
    token: str | None = None,
    eval_results: str | None = None,
):
    """Create `repo_id` if needed and upload the release files of `folder` (weights, processor, remote code, model
    card, stage metadata) in one commit; returns the `CommitInfo`."""
    if not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    write_model_card(folder, repo_id, eval_results)
    return push_files_to_hub(
        folder,
        repo_id,
        files_to_push(folder),
        private=private,
        token=token,
        commit_message=f"Exo2Ego {read_stage_metadata(folder)['stage']} checkpoint",
    )
