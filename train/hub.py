"""Publish a finished stage folder: model, processor and a generated model card in one Hub commit.

Only the files the stage wrote (the list in `exo2ego_stage.json`), the stage metadata and the card are uploaded:
checkpoints, logs, pickled arguments and anything else found in the folder (`.env`, notes) stay local.
"""

from __future__ import annotations

import json
import os

from exo2ego.provenance import push_files_to_hub
from train.pipeline import ADAPTER_DIR_NAME, STAGE_METADATA_NAME, read_stage_metadata

CARD_NAME = "README.md"


def training_summary(metadata: dict) -> str:
    """Markdown bullet list of how the stage output was trained (from `exo2ego_stage.json`)."""
    training = metadata["arguments"]["training"]
    lora = " + LoRA on the LLM" if metadata["lora"] else ""
    return "\n".join(
        [
            f"- stage: {metadata['stage']} ({metadata['description']})",
            f"- trained modules: {', '.join(metadata['trainable_modules'])}{lora}",
            f"- losses: {', '.join(metadata['losses'])} (weights {json.dumps(metadata['loss_weights'])})",
            f"- ablations: {', '.join(metadata['ablations']) or 'none'}",
            f"- data: {metadata['arguments']['data']['dataset_path']} ({metadata['data']})",
            f"- optimizer steps: {metadata['global_step']}, learning rate {training['learning_rate']}, weight decay "
            f"{training['weight_decay']}, schedule {training['lr_scheduler_type']}, seed {metadata['seed']}",
            f"- unreadable videos skipped: {metadata['failed_videos']}",
            f"- versions: {json.dumps(metadata['versions'], sort_keys=True)}",
        ]
    )


def write_model_card(folder: str, repo_id: str, eval_results: str | None = None) -> str:
    """Write `README.md` for the stage output in `folder`; returns its path.

    With an EgoBench `results.json` (`eval_results`), the card is the project's full card (`model_card`, with
    `model-index` results) plus a training section; otherwise a short card from `exo2ego_stage.json`.
    """
    from huggingface_hub import ModelCard, ModelCardData

    metadata = read_stage_metadata(folder)
    if metadata is None:
        raise ValueError(f"{folder} has no {STAGE_METADATA_NAME}: only a finished stage output can be pushed")
    path = os.path.join(folder, CARD_NAME)
    if eval_results:
        from model_card import CardInfo, build_model_card

        with open(eval_results) as handle:
            results = json.load(handle)
        info = CardInfo(model_id=repo_id, extra_sections={"Training run": training_summary(metadata)})
        build_model_card(results, info).save(path)
        return path
    adapter = metadata.get("save_mode") == "adapter"
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="video-text-to-text",
        tags=["exo2ego", "egocentric", "video", "custom_code", metadata["stage"]],
    )
    loading = (
        f'PeftModel.from_pretrained(AutoModel.from_pretrained("{repo_id}", trust_remote_code=True), "{repo_id}", '
        f'subfolder="{ADAPTER_DIR_NAME}")'
        if adapter
        else f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)'
    )
    content = "\n".join(
        [
            f"---\n{card_data.to_yaml()}\n---",
            f"# {repo_id.split('/')[-1]}",
            "",
            f"Exo2Ego checkpoint after **{metadata['stage']}**: {metadata['description']}.",
            "",
            "```python",
            "from transformers import AutoModel, AutoProcessor",
            *(["from peft import PeftModel"] if adapter else []),
            loading,
            f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
            "```",
            "",
            "## Training run",
            "",
            training_summary(metadata),
            "",
        ]
    )
    ModelCard(content).save(path)
    return path


def files_to_push(folder: str) -> list[str]:
    """Relative paths of the release files in `folder`: the files its stage wrote, its metadata and the card."""
    metadata = read_stage_metadata(folder)
    if metadata is None:
        raise ValueError(f"{folder} has no {STAGE_METADATA_NAME}: only a finished stage output can be pushed")
    if "files" not in metadata:
        raise ValueError(f"{folder}/{STAGE_METADATA_NAME} does not list the files its stage wrote (an output of an "
                         "older version); train it again to push it")
    card = [CARD_NAME] if os.path.isfile(os.path.join(folder, CARD_NAME)) else []
    return sorted({*metadata["files"], STAGE_METADATA_NAME, *card})


def push_stage_output(
    folder: str, repo_id: str | None, private: bool | None = None, token: str | None = None, eval_results: str | None = None
):
    """Create `repo_id` if needed and upload the release files of `folder` (weights, processor, remote code, model
    card, stage metadata) in one commit; returns the `CommitInfo`."""
    if not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    write_model_card(folder, repo_id, eval_results)
    return push_files_to_hub(
        folder, repo_id, files_to_push(folder), private=private, token=token,
        commit_message=f"Exo2Ego {read_stage_metadata(folder)['stage']} checkpoint",
    )
