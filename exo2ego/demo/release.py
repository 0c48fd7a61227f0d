"""The demo's release: the stage-3 model without the exo tower and G, with its processor, model card and results,
reloaded in a fresh process the way Hub users load it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

from eval.config import RESULTS_NAME
from model_card import CardInfo, build_model_card


def write_release(model_dir: Path, results_file: Path, release: Path) -> Path:
    """`release`: the model in `model_dir` without the exo tower and G, its processor, model card and the EgoBench
    results (`results_file`, a `results.json`) it is described by."""
    # Deferred, heavy: transformers' processors and the Exo2Ego model code; exo2ego --help imports this module.
    from transformers import AutoProcessor

    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    model = Exo2EgoForConditionalGeneration.from_pretrained(model_dir, include_exo_branch=False)
    model.save_pretrained(release)
    AutoProcessor.from_pretrained(model_dir).save_pretrained(release)
    shutil.copy(results_file, release / RESULTS_NAME)
    results = json.loads((release / RESULTS_NAME).read_text())
    card = build_model_card(
        results, CardInfo(model_id="org/exo2ego-tiny-synthetic", base_models=(), sources=("Ego-Exo4D",))
    )
    card.save(release / "README.md")
    return release


def reload_and_answer(release: Path, world: Path) -> str:
    """Load `release` in a fresh process the way Hub users do and answer the first held-out question of the
    synthetic `world`'s EgoBench."""
    bench = pd.read_parquet(next((world / "egobench" / "data" / "synthetic").glob("*.parquet")))
    row = bench.iloc[0]
    question = {
        "video": str(world / row["video"]),
        "start_sec": float(row["start_sec"]),
        "end_sec": float(row["end_sec"]),
        "question": row["question"],
        "truth": row["answer_text"],
    }
    completed = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(release), json.dumps(question)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if completed.returncode:
        raise RuntimeError(f"reloading the release failed:\n{completed.stderr[-3000:]}")
    return completed.stdout.strip()


RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModel, AutoProcessor
    release, question = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(release, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(release, trust_remote_code=True)
    video = {"type": "video", "path": question["video"], "start_sec": question["start_sec"]}
    video["end_sec"] = question["end_sec"]
    messages = [{"role": "user", "content": [video, {"type": "text", "text": question["question"]}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"Q: {question['question']}\\nmodel ({type(model).__name__}, reloaded with trust_remote_code): {answer}\\n"
          f"ground truth: {question['truth']}")
    """
)
