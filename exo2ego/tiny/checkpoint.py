"""A tiny random-weight Exo2Ego checkpoint (`exo2ego_base.tiny`) saved with its processor, optionally after the
pretraining the paper's base models come with: its LLM on the synthetic world's text (`exo2ego.tiny.language`,
Mistral's premise) and its vision towers on Ego-ExoClip frames and their narrations (`exo2ego.tiny.vision`, CLIP's
premise). `exo2ego tiny-model` (`exo2ego.tiny.cli`) is its command."""

from __future__ import annotations

import os

from exo2ego_base.provenance import check_output_apart, staged_folder, write_json_atomic
from exo2ego_base.tiny import build_tiny_model
from train.stage_folder import read_stage_metadata

VISION_REPORT = "vision_pretraining.json"  # written next to the weights: what the pretrained tower reads (its probes)


def save_tiny_model(
    out_dir: str,
    seed: int = 0,
    overwrite: bool = False,
    language_data: dict | None = None,
    vision_data: dict | None = None,
    **config_overrides,
) -> None:
    """Write a tiny checkpoint (weights, config, processor) to `out_dir`; `language_data` (`egoit`, `clips`,
    `captions` folders, `steps`) pretrains its LLM on their text first (`exo2ego.tiny.language`), `vision_data`
    (`captions` or `clips` folder, `video_root`, `samples`, `steps`, `learning_rate`, `views`, `probe_world`) its
    vision towers on those clips' frames (`exo2ego.tiny.vision.pretrain_and_probe`; with `probe_world`, what the tower
    reads is written to `vision_pretraining.json`).

    The folder is written next to `out_dir` and renamed into place when complete. An existing non-empty `out_dir`
    (e.g. a trained stage output) is refused unless `overwrite`, which replaces the whole folder; a file, and a folder
    that is, contains or lies inside one of the data folders it reads, are always refused.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file, not a folder; choose another --out")
    inputs = [(language_data or {}).get(key) for key in ("egoit", "clips", "captions")]
    inputs += [(vision_data or {}).get(key) for key in ("clips", "captions", "video_root", "probe_world")]
    check_output_apart(out_dir, inputs)  # before minutes of pretraining, not after
    contents = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if contents and not overwrite:
        metadata = read_stage_metadata(out_dir)
        state = (
            f"holds a finished {metadata.get('stage')} output with trained weights"
            if metadata is not None
            else f"is not empty ({', '.join(contents[:5])}{', ...' if len(contents) > 5 else ''})"
        )
        raise ValueError(
            f"--out {out_dir!r} {state}; choose another --out, or pass --overwrite to replace the whole folder"
        )
    model, processor = build_tiny_model(seed=seed, **config_overrides)
    if language_data and language_data.get("steps"):
        # Deferred, heavy: the pretraining modules load transformers' models; exo2ego --help imports this module.
        from exo2ego.tiny.language import language_corpus, pretrain_language

        texts = language_corpus(
            processor, language_data.get("egoit"), language_data.get("clips"), language_data.get("captions")
        )
        pretrain_language(model, processor, texts, steps=language_data["steps"], seed=seed)
    vision_report = None
    if vision_data and vision_data.get("steps"):
        from exo2ego.tiny.vision import pretrain_and_probe

        vision_report = pretrain_and_probe(model, processor, vision_data, seed=seed)
    with staged_folder(out_dir, overwrite=overwrite, marker="config.json", error=ValueError) as staging:
        processor.save_pretrained(staging)
        model.save_pretrained(staging)
        if vision_report is not None:
            write_json_atomic(os.path.join(staging, VISION_REPORT), vision_report)
