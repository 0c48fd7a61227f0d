"""Text-only pretraining of the tiny LLM on the language of its training data, before the Exo2Ego pipeline starts.

The paper starts from Mistral-7B-Instruct, an LLM that already speaks the language of its captions and questions; it
stays frozen in the initialization and stages 1-2, and only those stages' vision side learns to talk to it. A random
tiny LLM cannot stay frozen there. This module gives the tiny base model the same premise cheaply: a few hundred
causal-LM steps on the *text* of EgoIT (instructions, questions, options and answers of the train takes), of
Ego-ExoClip (the clip prompt and narrations) and of caption folders (the web-exo captions, which name the objects'
patterns, as Mistral has read the web), rendered through the model's chat template without the video. No EgoBench
text and no pixels are used; the answers stay unknowable from the text (see `datasets_scripts.synthetic.qa`), so the
pretrained model knows what answers look like, not which one is right.
"""

from __future__ import annotations

import logging
import tempfile

from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from train.data import CLIP_PROMPT, egoit_prompt, egoit_target, load_table

logger = logging.getLogger(__name__)


def render_text(processor, prompt: str, target: str) -> str:
    """One text-only conversation (user prompt, assistant answer) in the model's chat template."""
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": target}]},
    ]
    return processor.apply_chat_template(conversation)


def language_corpus(
    processor, egoit_path: str | None = None, clips_path: str | None = None, captions_path: str | None = None
) -> list[str]:
    """Chat-formatted texts of an EgoIT folder (every row), an Ego-ExoClip folder (config `clips`) and a caption
    folder (config `captions`: `exo2ego data pretrain` or `egoclip` output; its prompt, or the clip prompt)."""
    texts = []
    if egoit_path:
        for row in load_table(egoit_path, None, "train").select_columns(
            ["instruction", "question", "options", "answer"]
        ):
            texts.append(render_text(processor, egoit_prompt(row), egoit_target(row)))
    if clips_path:
        for text in load_table(clips_path, "clips", "train")["text"]:
            texts.append(render_text(processor, CLIP_PROMPT, text))
    if captions_path:
        for row in load_table(captions_path, "captions", "train").select_columns(["prompt", "caption"]):
            texts.append(render_text(processor, row["prompt"] or CLIP_PROMPT, row["caption"]))
    if not texts:
        raise ValueError("language_corpus needs an EgoIT, an Ego-ExoClip or a caption folder")
    return texts


def pretraining_arguments(output_dir: str, steps: int, batch_size: int, learning_rate: float, seed: int, **extra):
    """`TrainingArguments` of the tiny base model's short CPU pretraining runs (language here, vision in
    `exo2ego.tiny.vision`): cosine schedule, 5% warm-up, no weight decay, nothing saved or reported."""
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        seed=seed,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def pretrain_language(
    model, processor, texts: list[str], steps: int, learning_rate: float = 3e-3, batch_size: int = 32, seed: int = 0
):
    """Train the LLM (`language_model`, and `lm_head` tied to its embeddings) on `texts` with next-token CE.

    Everything else (vision towers, connector, mappings) keeps its random initialization. Returns the log history.
    """
    tokenizer = processor.tokenizer
    dataset = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], add_special_tokens=False), batched=True, remove_columns=["text"]
    )
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(("model.language_model.", "lm_head."))
    model.train()
    with tempfile.TemporaryDirectory() as scratch:
        arguments = pretraining_arguments(scratch, steps, batch_size, learning_rate, seed)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator)
        # Right padding: positions count from 0, as in the stages' batches.
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            trainer.train()
        finally:
            tokenizer.padding_side = padding_side
    for parameter in model.parameters():
        parameter.requires_grad = True
    model.eval()
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    if losses:
        logger.info("language pretraining: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], steps)
    return history
