"""Evaluation prompts: a system prompt per variant and the user-turn layouts of the three scorers.

The variants follow the ablation of the paper's Table 16 (a terse instruction; one that spells out
what to watch; one that adds the first-person view, hands and objects), worded by us. Every variant is
hashed (SHA-256 over all of its texts), and the hash goes into each JSONL record and ``results.json``,
so numbers obtained with different prompts are never mixed up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from datasets_scripts.schema import format_options


@dataclass(frozen=True)
class PromptTemplate:
    """The texts of one prompt variant.

    Attributes:
        name: selectable name (``--prompt NAME``).
        system: system prompt ("" for none).
        letter_instruction: appended after the lettered options (``letter_logprob``, ``generate_parse``).
        continuation_instruction: appended after the question when options are scored as continuations
            (``option_loglik``; no option list is shown).
        open_instruction: appended after an open-ended question.
        class_question: the question used to score every action class (Charades-Ego mAP).
        retrieval_question: the question used to score every sentence (EK-100 MIR).
    """

    name: str
    system: str
    letter_instruction: str = "Answer with the letter of the correct option only."
    continuation_instruction: str = "Answer with a short phrase."
    open_instruction: str = "Answer in one short sentence."
    class_question: str = "Which action is the person in the video performing?"
    retrieval_question: str = "Describe in a short phrase what is being done in the video."

    @property
    def sha256(self) -> str:
        """Hex digest over every text of the template (stable across Python versions)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode("utf-8")).hexdigest()


PROMPTS: dict[str, PromptTemplate] = {
    template.name: template
    for template in (
        PromptTemplate(name="none", system=""),
        PromptTemplate(
            name="basic",
            system="Look at the video closely and pick the option that answers the question best.",
        ),
        PromptTemplate(
            name="detailed",
            system=(
                "Watch the whole video with care. Notice what happens first and what follows from it, how "
                "objects look and move, and what the people do and how they stand or move. Then pick the "
                "option that answers the question correctly."
            ),
        ),
        PromptTemplate(
            name="egocentric",
            system=(
                "The video is filmed from the eyes of the person acting (a first-person view). Follow what the "
                "hands do and which objects they touch and change, the order of events and what causes what, "
                "and the actions and posture of the people. Then pick the option that answers the question "
                "correctly."
            ),
        ),
    )
}
DEFAULT_PROMPT = "egocentric"


def get_prompt(name: str) -> PromptTemplate:
    """The prompt variant called ``name``; the error lists the known names."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise ValueError(f"unknown prompt {name!r}; choose one of {sorted(PROMPTS)}") from None


def user_text(template: PromptTemplate, question: str, options: Sequence[str] | None, mode: str) -> str:
    """The user turn's text (the video item precedes it).

    Args:
        mode: ``"letters"`` (question, lettered options, letter instruction), ``"continuation"``
            (question and the continuation instruction; options are scored as answers) or ``"open"``.
    """
    question = question.strip()
    if mode == "letters":
        return f"{question}\n{format_options(options or [])}\n{template.letter_instruction}"
    if mode == "continuation":
        return f"{question}\n{template.continuation_instruction}"
    if mode == "open":
        return f"{question}\n{template.open_instruction}"
    raise ValueError(f"unknown prompt mode {mode!r}")


def build_messages(template: PromptTemplate, text: str) -> list[dict]:
    """Chat messages ``[system?, user(video, text)]`` for ``processor.apply_chat_template``."""
    messages = []
    if template.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": template.system}]})
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]})
    return messages
