"""Deterministic multiple-choice answer parser for the ``generate_parse`` scorer.

The cascade (first rule that gives exactly one valid option wins; nothing is ever guessed):

1. ``<think>...</think>`` blocks, markdown emphasis and surrounding whitespace are removed;
2. ``leading``: the response starts with a letter followed by ``)``, ``]``, ``.``, ``:`` or the end
   (``"B"``, ``"(B) open drawer"``, ``"C. the cup"``);
3. ``keyword``: ``answer``/``option`` (any case), optionally ``is``/``:``, then a letter
   (``"The answer is (D)"``, ``"Option B"``);
4. ``standalone``: exactly one distinct standalone capital letter among the valid ones, except ``A``
   in a response longer than three words (the article) and the pronoun ``I`` (``"I think"``, ``"I'm"``);
5. ``option_text``: exactly one option's normalised text occurs in the normalised response as whole
   words (an option contained in another matched option does not count);
6. otherwise ``invalid`` (counted as wrong by the metrics, and logged).

Letters are only ever read in upper case and never inside a word, so ``"Based on the video, C"`` is C
and ``"a cup"`` is never option A.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasets_scripts.schema import OPTION_LETTERS

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_LEADING = re.compile(r"^[\(\[]?([A-J])(?:[\)\]\.:]|$)")
_KEYWORD = re.compile(r"(?i:answer|option)\s*(?i:is)?\s*:?\s*[\(\[]?([A-J])(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z'])([A-J])(?![A-Za-z'])")
# "I think", "I am", "I'd": the pronoun, not option I.
_PRONOUN_I = re.compile(r"(?<![A-Za-z])I(?:'[a-z]+|\s+[a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ParsedAnswer:
    """The parser's verdict: ``index`` into the options (None = invalid) and the rule that decided it."""

    index: int | None
    rule: str

    @property
    def letter(self) -> str | None:
        return None if self.index is None else OPTION_LETTERS[self.index]


def _normalize(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _clean(response: str) -> str:
    text = _THINK.sub(" ", response or "")
    return text.replace("*", "").replace("`", "").strip()


def parse_choice(response: str, options: Sequence[str]) -> ParsedAnswer:
    """Map a generated ``response`` to an option index of ``options`` (see the module docstring)."""
    if not 1 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"between 1 and {len(OPTION_LETTERS)} options are supported, got {len(options)}")
    valid = OPTION_LETTERS[: len(options)]
    text = _clean(response)

    match = _LEADING.match(text)
    if match and match.group(1) in valid:
        return ParsedAnswer(valid.index(match.group(1)), "leading")

    for match in _KEYWORD.finditer(text):
        if match.group(1) in valid:
            return ParsedAnswer(valid.index(match.group(1)), "keyword")

    without_pronoun = _PRONOUN_I.sub(" ", text)
    letters = {letter for letter in _STANDALONE.findall(without_pronoun) if letter in valid}
    if len(letters) == 1:
        (letter,) = letters
        if not (letter == "A" and len(text.split()) > 3):
            return ParsedAnswer(valid.index(letter), "standalone")

    padded_response = f" {_normalize(text)} "
    normalized = [f" {_normalize(option)} " for option in options]
    hits = [index for index, option in enumerate(normalized) if option.strip() and option in padded_response]
    # "open drawer" inside a matched "open drawer slowly" is not a second answer.
    maximal = [i for i in hits if not any(j != i and normalized[i] in normalized[j] for j in hits)]
    if len(maximal) == 1:
        return ParsedAnswer(maximal[0], "option_text")
    return ParsedAnswer(None, "invalid")
