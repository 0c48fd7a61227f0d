"""Batches for the Exo2Ego trainer: chat template, processor on the fly, labels on the target text only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train.stages import BRANCH_VIEWS

IGNORE_INDEX = -100


@dataclass
class Exo2EgoCollator:
    """Turns decoded samples (see `train.data`) into model inputs for the stage's input branches.

    For each sample the user turn is `<video>` + `prompt` rendered with the processor's chat template (generation
    prompt included) and the target is what the template appends for the assistant turn (answer + EOS). The prompt
    goes through the processor (which expands `<video>` to the model's visual-token count and normalises frames),
    the target is tokenized alone and appended, so labels are exactly the target tokens: prompt, visual and padding
    positions are `-100`. Rows are right-padded.

    One branch (stages 1-3): a flat dict `{input_ids, attention_mask, labels, pixel_values_videos and/or
    exo_pixel_values_videos, failed_videos}`. Several branches (init): `{branch: that dict, ...,
    "failed_videos": n}`, one forward per branch. Init items are either Ego-ExoClip samples (both views of one
    clip) or two-source items `{"exo": [samples], "ego": [samples]}` (`train.data.MixedSourceSamples`), whose
    lists are concatenated per branch: each tower then sees only its own source.

    Args:
        processor: an `Exo2EgoProcessor`.
        branches: the stage's branches: "exo" (exo pixels only, N visual tokens), "ego" (ego pixels, 2N tokens)
            or "pair" (ego pixels for the LLM plus exo pixels for the stage-2 losses).
        max_length: cap on the sequence length; the target is truncated, a prompt alone over the cap is an error
            (cutting visual tokens would break the placeholder count).
    """

    processor: object
    branches: tuple[str, ...]
    max_length: int | None = None

    def __call__(self, samples: list[dict]) -> dict:
        failed = torch.tensor(sum(sample.get("failed_videos", 0) for sample in samples))
        if len(self.branches) == 1:
            return {**self.branch_batch(samples, self.branches[0]), "failed_videos": failed}
        batches = {}
        for branch in self.branches:
            per_branch = [one for item in samples for one in item[branch]] if branch in samples[0] else samples
            batches[branch] = self.branch_batch(per_branch, branch)
        return {**batches, "failed_videos": failed}

    def branch_batch(self, samples: list[dict], branch: str) -> dict[str, torch.Tensor]:
        views = BRANCH_VIEWS[branch]
        prompts, targets = zip(*(self.render(sample["prompt"], sample["target"]) for sample in samples))
        encoded = self.processor(
            text=list(prompts),
            videos=[sample["ego_frames"] for sample in samples] if "ego" in views else None,
            exo_videos=[sample["exo_frames"] for sample in samples] if "exo" in views else None,
            num_frames=len(samples[0]["ego_frames" if "ego" in views else "exo_frames"]),
            padding=True,
            add_special_tokens=False,  # the chat template writes BOS itself
            return_tensors="pt",
        )
        target_ids = self.processor.tokenizer(list(targets), add_special_tokens=False)["input_ids"]
        rows = []
        for index, sample in enumerate(samples):
            prompt_ids = encoded["input_ids"][index][encoded["attention_mask"][index].bool()].tolist()
            answer_ids = target_ids[index]
            if self.max_length is not None:
                if len(prompt_ids) >= self.max_length:
                    raise ValueError(
                        f"sample {sample.get('sample_id')}: the prompt alone is {len(prompt_ids)} tokens "
                        f"(visual tokens included), over max_length={self.max_length}"
                    )
                answer_ids = answer_ids[: self.max_length - len(prompt_ids)]
            rows.append((prompt_ids, answer_ids))
        batch = self.pad(rows)
        for key in ("pixel_values_videos", "exo_pixel_values_videos"):
            if key in encoded:
                batch[key] = encoded[key]
        return batch

    def render(self, prompt: str, target: str) -> tuple[str, str]:
        """(prompt text up to the generation prompt, target text the template appends for the answer)."""
        user = {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}
        assistant = {"role": "assistant", "content": [{"type": "text", "text": target}]}
        prompt_text = self.processor.apply_chat_template([user], add_generation_prompt=True)
        full_text = self.processor.apply_chat_template([user, assistant])
        if not full_text.startswith(prompt_text):
            raise ValueError("the chat template does not render the prompt as a prefix of the full conversation")
        return prompt_text, full_text[len(prompt_text) :]

    def pad(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad (prompt ids, target ids) rows into input_ids / attention_mask / labels (B, L)."""
        pad_id = self.processor.tokenizer.pad_token_id
        length = max(len(prompt) + len(target) for prompt, target in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for index, (prompt, target) in enumerate(rows):
            ids = prompt + target
            input_ids[index, : len(ids)] = torch.tensor(ids)
            attention_mask[index, : len(ids)] = 1
            labels[index, len(prompt) : len(ids)] = torch.tensor(target, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
