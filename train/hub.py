"""Publish a finished stage folder: model, processor and a generated model card in one Hub commit."""

from __future__ import annotations

import fnmatch
import json
import os

from train.pipeline import ADAPTER_DIR_NAME, STAGE_METADATA_NAME, read_stage_metadata

# Training by-products that stay local: checkpoints (optimizer state), staging, logs, pickled arguments.
LOCAL_ONLY_DIRS = ("checkpoint-*", ".staging", "runs")
LOCAL_ONLY_FILES = ("training_args.bin", "*.pt", "*.pth", "*.tmp-*")


def write_model_card(folder: str, repo_id: str, eval_results: str | None = None) -> str:
    """Write `README.md` for the stage output in `folder` with the `model_card` generator; returns its path.

    With an EgoBench `results.json` (`eval_results`), the card is the project's full card (with `model-index`
    results) plus a training section; otherwise the short stage card from `exo2ego_stage.json`.
    """
    from exo2ego.provenance import atomic_path
    from model_card import CardInfo, build_model_card, build_stage_card, training_summary

    metadata = read_stage_metadata(folder)
    if metadata is None:
        raise ValueError(f"{folder} has no {STAGE_METADATA_NAME}: only a finished stage output can be pushed")
    if eval_results:
        with open(eval_results) as handle:
            results = json.load(handle)
        info = CardInfo(model_id=repo_id, extra_sections={"Training run": training_summary(metadata)})
        card = build_model_card(results, info)
    else:
        card = build_stage_card(metadata, repo_id, ADAPTER_DIR_NAME)
    path = os.path.join(folder, "README.md")
    with atomic_path(path) as tmp:
        card.save(tmp)
    return path


def files_to_push(folder: str) -> list[str]:
    """Relative paths of the release files in `folder`: everything except checkpoints, logs and pickles."""
    paths = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not any(fnmatch.fnmatch(d, pattern) for pattern in LOCAL_ONLY_DIRS))
        for name in sorted(files):
            if not any(fnmatch.fnmatch(name, pattern) for pattern in LOCAL_ONLY_FILES):
                paths.append(os.path.relpath(os.path.join(directory, name), folder))
    return paths


def push_stage_output(
    folder: str, repo_id: str | None, private: bool | None = None, token: str | None = None, eval_results: str | None = None
):
    """Create `repo_id` if needed and upload the release files of `folder` (weights, processor, remote code, model
    card, stage metadata) in one commit; returns the `CommitInfo`. (`upload_folder` may split large folders into
    several commits.)"""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    write_model_card(folder, repo_id, eval_results)
    operations = [
        CommitOperationAdd(path_in_repo=path.replace(os.sep, "/"), path_or_fileobj=os.path.join(folder, path))
        for path in files_to_push(folder)
    ]
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.create_commit(
        repo_id=repo_id, operations=operations,
        commit_message=f"Exo2Ego {read_stage_metadata(folder)['stage']} checkpoint",
    )
