"""Model cards of Exo2Ego checkpoints: the full card from an EgoBench ``results.json``, and the short card of a
training-stage output without results (:func:`build_stage_card`).

The YAML header carries ``model-index`` evaluation results (``huggingface_hub.EvalResult``, one per
headline metric of each task), so the Hub shows them; the body has the description, intended use, how to
run it, the training stages, the evaluation table (with intervals, the scorer and prompt hash), the data
sources and their terms, and limitations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from datasets_scripts.hub_export import render_card
from eval.report import table_rows

from .dataset_card import source_sections

TRAINING_STAGES = (
    ("init", "exo clip-text pairs / EgoClip", "both vision towers and the connector (LLM frozen)", "VTG per branch"),
    ("1 teacher self-preparation", "Ego-ExoClip exo clips", "exo tower, connector", "VTG on exo"),
    ("2 teacher-student guidance", "Ego-ExoClip ego+exo pairs", "ego tower, F, G", "VTG + KL + CCL"),
    ("3 student self-practice", "EgoIT", "ego tower, connector, F, LoRA on the LLM", "VTG"),
)
# The card's name for each stage-2 KL form (`kl_mode`, see `train.losses.kl_alignment_loss`).
KL_FORMS = {
    "gaussian": "per-sample (paired) Gaussian KL: per ego-exo pair, closed form on each clip's per-channel moments",
    "gaussian_batch": "Gaussian KL of per-channel moments over the batch (pairing ignored)",
    "token_softmax": "per-token KL of softmaxes over channels",
    "pooled": "KL of softmaxes over channels of frame-pooled features",
}
DEFAULT_SOURCES = (
    "Ego-Exo4D",
    "EgoClip",
    "EGTEA Gaze+",
    "Something-Something-V2",
    "EgoTimeQA",
    "OpenEQA",
    "EgoExoLearn",
    "EgoSchema",
    "QAEgo4D",
    "EgoTaskQA",
    "Charades-Ego",
    "EPIC-KITCHENS-100",
    "EgoPlan",
    "VLN-QA",
    "EgoMCQ",
)


@dataclass
class CardInfo:
    """What the card says beyond the results.

    Attributes:
        model_id: Hub repo id (``org/name``) used in the usage snippet and ``model-index``.
        base_models: checkpoints the weights start from.
        datasets: Hub dataset ids used for training (YAML ``datasets``).
        eval_dataset: Hub id of the EgoBench export, if published (``model-index`` dataset type).
        license, license_name, license_link: licence of the weights (``other`` by default: the training
            data's terms restrict use to non-commercial research).
        sources: names of the data sources (see :mod:`model_card.dataset_card`).
        stages: training stage rows ``(stage, data, trained modules, loss)``.
        kl_mode: the stage-2 KL form the weights were trained with (a key of ``KL_FORMS``).
        extra_sections: more ``{heading: markdown}`` sections appended at the end.
    """

    model_id: str = "org/exo2ego"
    base_models: Sequence[str] = ("mistralai/Mistral-7B-Instruct-v0.2", "openai/clip-vit-large-patch14-336")
    datasets: Sequence[str] = ()
    eval_dataset: str | None = None
    license: str = "other"
    license_name: str | None = "exo2ego-research"
    license_link: str | None = "LICENSE"
    sources: Sequence[str] = DEFAULT_SOURCES
    stages: Sequence[tuple[str, str, str, str]] = TRAINING_STAGES
    kl_mode: str = "gaussian"
    extra_sections: Mapping[str, str] = field(default_factory=dict)


def eval_results(results: Mapping[str, Any], info: CardInfo) -> list:
    """``huggingface_hub.EvalResult`` for every headline metric of every task in ``results``."""

    entries = []
    for task, entry in results["tasks"].items():
        for key in entry.get("headline") or list(entry["metrics"]):
            metric = entry["metrics"][key]
            entries.append(
                EvalResult(
                    task_type="video-text-to-text",
                    task_name="Egocentric video understanding",
                    dataset_type=info.eval_dataset or f"egobench-{task}",
                    dataset_name=f"EgoBench {entry.get('display_name', task)}",
                    dataset_config=task,
                    dataset_split=(results.get("config") or {}).get("split") or "test",
                    metric_type=metric.get("metric_type", "accuracy"),
                    metric_name=metric.get("label", key),
                    metric_value=round(float(metric["value"]), 2),
                    metric_config=key,
                    metric_args={
                        "scorer": metric.get("scorer", results.get("scorer")),
                        "prompt_sha256": results["prompt"]["sha256"],
                        "num_frames": (results.get("config") or {}).get("num_frames"),
                    },
                )
            )
    return entries


def _results_table(results: Mapping[str, Any], compare: Mapping[str, Any] | None) -> str:

    compare_name = None if compare is None else compare.get("name", "comparison")
    header = "| Task | Metric | Value | 95% CI | n |" + (f" {compare_name} |" if compare_name else "")
    lines = [header, "|---|---|---:|---|---:|" + ("---:|" if compare_name else "")]
    for row in table_rows(dict(results), dict(compare) if compare else None):
        digits = 2 if row["unit"] == "score" else 1
        line = (
            f"| {row['display_name']} | {row['label']} | {row['value']:.{digits}f} | "
            f"[{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}] | {row['n']} |"
        )
        if compare_name:
            line += " – |" if row["compare"] is None else f" {row['compare']:.{digits}f} |"
        lines.append(line)
    return "\n".join(lines)


def build_model_card(
    results: Mapping[str, Any], info: CardInfo | None = None, compare: Mapping[str, Any] | None = None
):
    """A ``huggingface_hub.ModelCard`` for the checkpoint evaluated in ``results`` (a results.json dict)."""

    info = info or CardInfo()
    card_data = ModelCardData(
        model_name=info.model_id.split("/")[-1],
        base_model=list(info.base_models) or None,
        datasets=list(info.datasets) or None,
        license=info.license,
        license_name=info.license_name if info.license == "other" else None,
        license_link=info.license_link if info.license == "other" else None,
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        tags=["exo2ego", "egocentric", "video", "multimodal", "custom_code"],
        eval_results=eval_results(results, info),
    )
    config = results.get("config") or {}
    versions = results.get("versions") or {}
    results_sha = hashlib.sha256(json.dumps(results, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    stages = "\n".join(f"| {stage} | {data} | {modules} | {loss} |" for stage, data, modules, loss in info.stages)
    sections = {
        "Model description": (
            "Exo2Ego is an egocentric-video multimodal LLM that borrows exocentric (third-person) knowledge. "
            "An ego CLIP tower encodes first-person frames; a mapping F turns them into estimated exocentric "
            "features; both are compressed by a spatial-temporal convolution connector and concatenated as "
            "visual tokens for the language model. The exo tower and the inverse mapping G are needed only "
            "for training."
        ),
        "Intended use": (
            "Research on egocentric video understanding: question answering, action recognition, retrieval, "
            "planning and navigation questions about first-person videos.\n\n"
            "Out of scope: commercial use (the training data's terms forbid it), decisions about people, "
            "surveillance, and safety-critical use; answers about videos far from kitchen/household/outdoor "
            "activity footage are unreliable."
        ),
        "How to use": (
            "```python\n"
            "from transformers import AutoModel, AutoProcessor\n\n"
            f'model = AutoModel.from_pretrained("{info.model_id}", trust_remote_code=True)\n'
            f'processor = AutoProcessor.from_pretrained("{info.model_id}", trust_remote_code=True)\n'
            'messages = [{"role": "user", "content": [{"type": "video"}, '
            '{"type": "text", "text": "What am I holding?"}]}]\n'
            "prompt = processor.apply_chat_template(messages, add_generation_prompt=True)\n"
            'inputs = processor(text=[prompt], videos=[{"path": "clip.mp4", "start_sec": 0, "end_sec": 8}], '
            'add_special_tokens=False, return_tensors="pt")\n'
            "print(processor.decode(model.generate(**inputs, max_new_tokens=32)[0], skip_special_tokens=True))\n"
            "```\n\n"
            f"Evaluate: `exo2ego eval --model {info.model_id} --data EGOBENCH_DIR --tasks all --out OUT`."
        ),
        "Training": (
            "| Stage | Data | Trained | Loss |\n|---|---|---|---|\n"
            + stages
            + f"\n\nStage 2's KL: {kl_form(info.kl_mode)}."
        ),
        "Evaluation": (
            f"EgoBench, scorer `{results.get('scorer')}`, prompt `{results['prompt']['name']}` "
            f"(sha256 `{results['prompt']['sha256'][:12]}`), frames {config.get('num_frames') or 'processor default'}"
            f"{', limit ' + str(config['limit']) + ' per task' if config.get('limit') else ''}. "
            "Percentages except judge scores (0-5); 95% percentile bootstrap intervals over items.\n\n"
            + _results_table(results, compare)
            + f"\n\nResults file sha256 `{results_sha}`; code revision `{(results.get('git') or {}).get('commit')}`; "
            f"transformers {versions.get('transformers')}, torch {versions.get('torch')}."
        ),
        **source_sections(info.sources),
        **info.extra_sections,
    }
    return render_card(ModelCard, card_data, info.model_id.split("/")[-1], sections)


def kl_form(kl_mode: str) -> str:
    """The card's words for a stage-2 KL form, with its ``kl_mode``."""
    if kl_mode not in KL_FORMS:
        raise ValueError(f"unknown kl_mode {kl_mode!r}; expected one of {tuple(KL_FORMS)}")
    return f"{KL_FORMS[kl_mode]} (`kl_mode: {kl_mode}`)"


def training_summary(metadata: Mapping[str, Any]) -> str:
    """Markdown bullet list of how a stage output was trained (from its ``exo2ego_stage.json``)."""
    training = metadata["arguments"]["training"]
    lora = " + LoRA on the LLM" if metadata["lora"] else ""
    kl = f"; KL form: {kl_form(training['kl_mode'])}" if "kl" in metadata["losses"] else ""
    return "\n".join(
        [
            f"- stage: {metadata['stage']} ({metadata['description']})",
            f"- trained modules: {', '.join(metadata['trainable_modules'])}{lora}",
            f"- losses: {', '.join(metadata['losses'])} (weights {json.dumps(metadata['loss_weights'])}){kl}",
            f"- ablations: {', '.join(metadata['ablations']) or 'none'}",
            f"- data: {metadata['arguments']['data']['dataset_path']} ({metadata['data']})",
            f"- optimizer steps: {metadata['global_step']}, learning rate {training['learning_rate']}, weight decay "
            f"{training['weight_decay']}, schedule {training['lr_scheduler_type']}, seed {metadata['seed']}",
            f"- unreadable videos skipped: {metadata['failed_videos']}",
            f"- versions: {json.dumps(metadata['versions'], sort_keys=True)}",
        ]
    )


def build_stage_card(metadata: Mapping[str, Any], model_id: str, adapter_subfolder: str = "adapter"):
    """The short ``ModelCard`` of a training-stage output that has no EgoBench results: what it is, how to
    load it (through PEFT when the stage saved only a LoRA adapter, in ``adapter_subfolder``) and how it was
    trained (``metadata``: the folder's ``exo2ego_stage.json``)."""

    adapter = metadata.get("save_mode") == "adapter"
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="video-text-to-text",
        tags=["exo2ego", "egocentric", "video", "custom_code", metadata["stage"]],
    )
    loading = (
        f'PeftModel.from_pretrained(AutoModel.from_pretrained("{model_id}", trust_remote_code=True), "{model_id}", '
        f'subfolder="{adapter_subfolder}")'
        if adapter
        else f'model = AutoModel.from_pretrained("{model_id}", trust_remote_code=True)'
    )
    usage = "\n".join(
        [
            "```python",
            "from transformers import AutoModel, AutoProcessor",
            *(["from peft import PeftModel"] if adapter else []),
            loading,
            f'processor = AutoProcessor.from_pretrained("{model_id}", trust_remote_code=True)',
            "```",
        ]
    )
    summary = f"Exo2Ego checkpoint after **{metadata['stage']}**: {metadata['description']}.\n\n{usage}"
    return render_card(
        ModelCard, card_data, model_id.split("/")[-1], {"Training run": training_summary(metadata)}, summary
    )
