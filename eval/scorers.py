"""The three scorers of EgoBench questions, on any Exo2Ego-style model + processor pair.

- :func:`letter_logprob` (default): one forward pass; each option letter gets the log-probability of
  being the answer's first token(s), summed over its two spellings (``"B"`` and ``" B"``); argmax.
- :func:`generate_parse`: greedy decoding of a few tokens, then :func:`eval.parsing.parse_choice`.
- :func:`option_loglik`: one prefill of video + question, kept as a KV cache; every option's text is
  scored as a continuation from copies of that cache, in batches (never one video encoding per option);
  :func:`option_loglik_batch` does the same for several questions in one left-padded prefill.

:data:`MCQ_SCORERS` is the registry the harness picks the run's multiple-choice scorer from (``--scorer``).

Prompts are rendered with the processor's chat template; the text an assistant answer adds after the
generation prompt (e.g. a leading space) is read off the template, and the end-of-turn token is left out
of continuation scores (the same for every option). :func:`option_loglik_uncached` recomputes
the same numbers with one full forward per option; tests and benchmarks compare the two.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modeling_exo2ego import DecodedClipCache

from .parsing import OPTION_LETTERS, parse_choice

_SENTINEL = "\u0000ANSWER\u0000"


@dataclass
class ChoiceResult:
    """Outcome of scoring one multiple-choice question.

    Attributes:
        prediction: chosen option index, ``None`` when the answer was unparsable.
        option_scores: one score per option (letter log-prob, or option log-likelihood), or None
            (``generate_parse``).
        raw_output: generated text (``generate_parse`` only).
        parse_rule: which parser rule decided (``generate_parse`` only).
        extra: scorer details kept in the JSONL record (sum/mean log-probs, token counts).
    """

    prediction: int | None
    option_scores: list[float] | None = None
    raw_output: str | None = None
    parse_rule: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContinuationScores:
    """Log-likelihoods of K continuations: ``sum_logprob``, ``mean_logprob`` and ``num_tokens``, each (K,)."""

    sum_logprob: list[float]
    mean_logprob: list[float]
    num_tokens: list[int]


class ModelAdapter:
    """Renders prompts, encodes (prompt, video) pairs and runs the model for the scorers.

    Args:
        model: an ``Exo2EgoForConditionalGeneration`` (anything with the same forward/generate API).
        processor: the matching ``Exo2EgoProcessor``.
        num_frames: frames per video (None: the processor's default).
        clip_cache: keeps the frames of the video files it decodes, so that the questions about one clip decode it
            once (the processor then gets those frames, sampled as it would have sampled them).
    """

    def __init__(self, model, processor, num_frames: int | None = None, clip_cache: DecodedClipCache | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.num_frames = num_frames
        self.clip_cache = clip_cache

    # ----------------------------------------------------------------------------------- text
    def render_prompt(self, messages: list[dict]) -> str:
        """The chat-templated prompt ending with the generation prompt (assistant turn opened)."""
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def answer_affixes(self, messages: list[dict], prompt: str) -> tuple[str, str]:
        """``(before, after)``: what the template writes around an assistant answer after ``prompt``,
        without the end-of-turn token (e.g. ``(" ", "")`` for Mistral's ``[/INST] answer</s>``)."""
        answered = messages + [{"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]}]
        full = self.processor.apply_chat_template(answered, tokenize=False, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template renders an answered conversation that does not start with the prompt; "
                "continuations cannot be scored from a cached prompt with this template"
            )
        before, after = full[len(prompt) :].split(_SENTINEL, 1)
        eos = self.tokenizer.eos_token
        if eos and eos in after:  # the end of turn is not part of the answer
            after = after[: after.index(eos)]
        return before, after

    def continuation_ids(self, prompt: str, continuations: Sequence[str]) -> list[list[int]]:
        """Token ids each continuation adds after ``prompt`` when the two are tokenized together."""
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        joint = self.tokenizer([prompt + text for text in continuations], add_special_tokens=False)["input_ids"]
        result = []
        for text, ids in zip(continuations, joint):
            if ids[: len(prompt_ids)] != prompt_ids:
                # A merge across the boundary: score the continuation tokenized on its own.
                ids = prompt_ids + self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == len(prompt_ids):
                raise ValueError(f"continuation {text!r} is empty after tokenization")
            result.append(ids[len(prompt_ids) :])
        return result

    # ----------------------------------------------------------------------------------- model
    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, prompt: str | Sequence[str], video) -> dict[str, torch.Tensor]:
        """Processor inputs for one (prompt, video) pair, or for lists of them (left-padded), on the model's device
        and dtype."""
        prompts, videos = ([prompt], [video]) if isinstance(prompt, str) else (list(prompt), list(video))
        batch = self.processor(
            text=prompts,
            videos=[self._cached_frames(video, f"videos[{index}]") for index, video in enumerate(videos)],
            num_frames=self.num_frames,
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return batch.to(self.device, dtype=self.model.dtype)

    def _cached_frames(self, video, argument: str):
        """A file-backed video's sampled frames, decoded once per clip; any other input as given."""
        if self.clip_cache is None or not isinstance(video, dict) or "path" not in video:
            return video
        num_frames = self.num_frames or self.processor.num_frames
        # The key holds what decides the frames here: `encode` passes no other video kwarg (short_video, sampling).
        key = (video["path"], video.get("start_sec"), video.get("end_sec"), num_frames)
        frames = self.clip_cache.get(key)
        if frames is None:
            frames = self.processor.load_video(video, num_frames, argument=argument).frames
            self.clip_cache.put(key, frames)
        return frames

    def forward(self, batch: dict[str, torch.Tensor], **kwargs):
        return self.model(**batch, **kwargs)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


# ----------------------------------------------------------------------------------------- letter_logprob
@dataclass(frozen=True)
class LetterPlan:
    """How option letters are read from one forward pass.

    ``shared_prefix`` tokens (e.g. a lone space token) are appended to the prompt; ``spellings[i]`` lists
    the spellings of letter i as ``(uses_prefix, token_id)``.
    """

    shared_prefix: tuple[int, ...]
    spellings: tuple[tuple[tuple[bool, int], ...], ...]


def plan_letters(adapter: ModelAdapter, prompt: str, num_options: int) -> LetterPlan:
    """Work out the token(s) of each letter ``L`` spelled ``"L"`` and ``" L"`` right after ``prompt``.

    Each spelling is tokenized together with the prompt. Raises ``ValueError`` when a spelling is not one
    token after a prefix shared by all letters (e.g. a lone space token), or two letters share a token.
    """
    sequences: dict[tuple[int, str], tuple[int, ...]] = {}
    for index, letter in enumerate(OPTION_LETTERS[:num_options]):
        for spelling, ids in zip((letter, " " + letter), adapter.continuation_ids(prompt, [letter, " " + letter])):
            sequences[(index, spelling)] = tuple(ids)
    prefixes = {ids[:-1] for ids in sequences.values() if len(ids) > 1}
    if len(prefixes) > 1:
        raise ValueError(f"option letters tokenize with different prefixes {sorted(prefixes)}; use another scorer")
    shared_prefix = next(iter(prefixes), ())
    spellings: list[list[tuple[bool, int]]] = [[] for _ in range(num_options)]
    owners: dict[tuple[bool, int], int] = {}
    for (index, _), ids in sequences.items():
        key = (len(ids) > 1, ids[-1])
        if owners.setdefault(key, index) != index:
            raise ValueError(f"letters {OPTION_LETTERS[owners[key]]} and {OPTION_LETTERS[index]} share token {ids}")
        if key not in spellings[index]:
            spellings[index].append(key)
    return LetterPlan(tuple(shared_prefix), tuple(tuple(s) for s in spellings))


@torch.inference_mode()
def letter_logprob(adapter: ModelAdapter, messages: list[dict], video, num_options: int) -> ChoiceResult:
    """Score a lettered question with one forward pass; option score = log P(letter) over its spellings."""
    prompt = adapter.render_prompt(messages)
    plan = plan_letters(adapter, prompt, num_options)
    batch = adapter.encode(prompt, video)
    if plan.shared_prefix:
        extra_ids = torch.tensor([plan.shared_prefix], device=adapter.device)
        batch["input_ids"] = torch.cat([batch["input_ids"], extra_ids], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(extra_ids)], dim=1)
    keep = len(plan.shared_prefix) + 1
    logprobs = _log_softmax(adapter.forward(batch, logits_to_keep=keep).logits[0])  # (keep, V)
    prefix_logprob = sum(float(logprobs[position, token]) for position, token in enumerate(plan.shared_prefix))
    scores = []
    for spellings in plan.spellings:
        values = [
            prefix_logprob + float(logprobs[-1, token]) if uses_prefix else float(logprobs[0, token])
            for uses_prefix, token in spellings
        ]
        scores.append(float(torch.logsumexp(torch.tensor(values, dtype=torch.float64), dim=0)))
    prediction = max(range(num_options), key=lambda index: (scores[index], -index))
    return ChoiceResult(prediction=prediction, option_scores=scores)


# ----------------------------------------------------------------------------------------- generate_parse
@torch.inference_mode()
def generate_text(adapter: ModelAdapter, messages: list[dict], video, max_new_tokens: int) -> str:
    """Greedy decoding of at most ``max_new_tokens`` after the prompt; special tokens dropped."""
    prompt = adapter.render_prompt(messages)
    batch = adapter.encode(prompt, video)
    output = adapter.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, batch["input_ids"].shape[1] :]
    return adapter.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def generate_parse(
    adapter: ModelAdapter, messages: list[dict], video, options: Sequence[str], max_new_tokens: int = 16
) -> ChoiceResult:
    """Generate greedily, then parse the answer; an unparsable answer has ``prediction=None``."""
    text = generate_text(adapter, messages, video, max_new_tokens)
    parsed = parse_choice(text, options)
    return ChoiceResult(prediction=parsed.index, raw_output=text, parse_rule=parsed.rule)


# ----------------------------------------------------------------------------------------- option_loglik
def _gather_scores(
    first_logprobs: torch.Tensor, rest_logprobs: torch.Tensor | None, ids: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and mean log-prob of right-padded continuations ``ids`` (K, L) with true ``lengths`` (K,).

    ``first_logprobs`` (K, V) predicts token 0; ``rest_logprobs`` (K, L-1, V) predicts tokens 1..L-1.
    """
    token_logprobs = first_logprobs.gather(1, ids[:, :1])
    if rest_logprobs is not None:
        token_logprobs = torch.cat([token_logprobs, rest_logprobs.gather(2, ids[:, 1:, None])[..., 0]], dim=1)
    mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
    total = (token_logprobs.double() * mask).sum(1)
    return total, total / lengths


def _padded(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(ids) for ids in sequences], device=device)
    ids = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, device=device)
    return ids, lengths


def continuations_for(
    adapter: ModelAdapter, messages: list[dict], answers: Sequence[str]
) -> tuple[str, list[list[int]]]:
    """The prompt and the token ids of each answer written as the assistant's reply (no end of turn)."""
    prompt = adapter.render_prompt(messages)
    before, after = adapter.answer_affixes(messages, prompt)
    if any(not answer.strip() for answer in answers):
        raise ValueError("an option text is empty")
    return prompt, adapter.continuation_ids(prompt, [before + answer + after for answer in answers])


@dataclass(frozen=True)
class OptionQuestion:
    """A question whose ``answers`` are scored as continuations: its chat ``messages`` and its ``video``."""

    messages: list[dict]
    video: Any
    answers: Sequence[str]


@torch.inference_mode()
def option_loglik(
    adapter: ModelAdapter, messages: list[dict], video, answers: Sequence[str], chunk_size: int = 64
) -> ContinuationScores:
    """Log-likelihood of each answer after one cached prefill of (video, question); see :func:`option_loglik_batch`."""
    return option_loglik_batch(adapter, [OptionQuestion(messages, video, answers)], chunk_size)[0]


@torch.inference_mode()
def option_loglik_batch(
    adapter: ModelAdapter, questions: Sequence[OptionQuestion], chunk_size: int = 64
) -> list[ContinuationScores]:
    """Log-likelihoods of each question's answers after one prefill of all the questions (videos included).

    The B prompts are left-padded into one prefill whose position ids count each row's real tokens, so every row
    sees the positions it would alone, and its KV cache is kept. The answers of all questions then run as
    continuations in batches of up to ``chunk_size``, each from its own question's rows of that cache; they are
    right-padded (causal attention never looks at the padding after a token). Returns one
    :class:`ContinuationScores` per question, in order.
    """
    prompts, sequences = zip(*(continuations_for(adapter, q.messages, q.answers) for q in questions))
    batch = adapter.encode(prompts, [question.video for question in questions])
    prompt_mask = batch["attention_mask"]
    prompt_lengths = prompt_mask.sum(1)
    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    prefill = adapter.forward(batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    first = _log_softmax(prefill.logits[:, -1])  # (B, V)
    owners = [index for index, answers in enumerate(sequences) for _ in answers]
    answers = [ids for question_answers in sequences for ids in question_answers]
    pad_id = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else 0
    sums: list[float] = []
    means: list[float] = []
    for start in range(0, len(answers), chunk_size):
        owner = torch.tensor(owners[start : start + chunk_size], device=adapter.device)
        ids, lengths = _padded(answers[start : start + chunk_size], pad_id, adapter.device)
        rest = None
        if ids.shape[1] > 1:
            inputs = ids[:, :-1]
            cache = copy.deepcopy(prefill.cache)
            cache.batch_select_indices(owner)
            rest = adapter.model(
                input_ids=inputs,
                attention_mask=torch.cat([prompt_mask[owner], torch.ones_like(inputs)], dim=1),
                position_ids=prompt_lengths[owner, None] + torch.arange(inputs.shape[1], device=adapter.device),
                cache=cache,
                use_cache=True,
            ).logits
            rest = _log_softmax(rest)
        total, mean = _gather_scores(first[owner], rest, ids, lengths)
        sums += total.tolist()
        means += mean.tolist()
    results, start = [], 0
    for question_answers in sequences:
        stop = start + len(question_answers)
        counts = [len(ids) for ids in question_answers]
        results.append(ContinuationScores(sums[start:stop], means[start:stop], counts))
        start = stop
    return results


@torch.inference_mode()
def option_loglik_uncached(
    adapter: ModelAdapter, messages: list[dict], video, answers: Sequence[str]
) -> ContinuationScores:
    """The same scores as :func:`option_loglik` from one full forward (video included) per answer.

    This is how per-option likelihood harnesses work (K video encodings); kept as the reference for
    tests and as the baseline of ``benchmarks/eval_scorers.py``.
    """
    prompt, sequences = continuations_for(adapter, messages, answers)
    sums, means = [], []
    for sequence in sequences:
        batch = adapter.encode(prompt, video)
        prompt_length = batch["input_ids"].shape[1]
        extra = torch.tensor([sequence], device=adapter.device)
        batch["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(extra)], dim=1)
        logprobs = _log_softmax(adapter.forward(batch).logits[0, prompt_length - 1 : -1])  # (L, V)
        values = logprobs.gather(1, extra[0][:, None])[:, 0].double()
        sums.append(float(values.sum()))
        means.append(float(values.mean()))
    return ContinuationScores(sums, means, [len(ids) for ids in sequences])


def choose_option(scores: ContinuationScores, option_score: str = "mean") -> tuple[int, list[float]]:
    """Argmax option under ``option_score`` (``"mean"`` or ``"sum"`` log-prob); ties go to the lower index."""
    if option_score not in ("mean", "sum"):
        raise ValueError(f"option_score must be 'mean' or 'sum', not {option_score!r}")
    values = scores.mean_logprob if option_score == "mean" else scores.sum_logprob
    return max(range(len(values)), key=lambda index: (values[index], -index)), list(values)


# ----------------------------------------------------------------------------------------- registry
class ChoiceSettings(Protocol):
    """The run settings a multiple-choice scorer reads (``eval.config.EvalConfig`` has them)."""

    max_new_tokens: int
    option_chunk_size: int
    option_score: str


@dataclass(frozen=True)
class ChoiceScorer:
    """A multiple-choice scorer of the registry.

    Attributes:
        prompt_mode: how the prompt shows the question (``eval.prompts.user_text`` mode): ``"letters"`` lists
            lettered options, ``"continuation"`` asks the bare question (options are scored as answers).
        score: ``score(adapter, messages, video, options, settings) -> ChoiceResult``.
        choose: for scorers that rank option log-likelihoods, ``choose(scores, settings) -> ChoiceResult`` from
            :func:`option_loglik_batch`'s scores, so that the harness can score several questions in one batch.
    """

    prompt_mode: str
    score: Callable[[ModelAdapter, list[dict], Any, Sequence[str], ChoiceSettings], ChoiceResult]
    choose: Callable[[ContinuationScores, ChoiceSettings], ChoiceResult] | None = None


def _letter_logprob(adapter, messages, video, options, settings) -> ChoiceResult:
    return letter_logprob(adapter, messages, video, len(options))


def _generate_parse(adapter, messages, video, options, settings) -> ChoiceResult:
    return generate_parse(adapter, messages, video, options, settings.max_new_tokens)


def _choose_by_loglik(scores: ContinuationScores, settings) -> ChoiceResult:
    prediction, values = choose_option(scores, settings.option_score)
    return ChoiceResult(prediction, values, extra=dataclasses.asdict(scores))


def _option_loglik(adapter, messages, video, options, settings) -> ChoiceResult:
    return _choose_by_loglik(option_loglik(adapter, messages, video, options, settings.option_chunk_size), settings)


MCQ_SCORERS: dict[str, ChoiceScorer] = {
    "letter_logprob": ChoiceScorer("letters", _letter_logprob),
    "generate_parse": ChoiceScorer("letters", _generate_parse),
    "option_loglik": ChoiceScorer("continuation", _option_loglik, choose=_choose_by_loglik),
}
SCORERS = tuple(MCQ_SCORERS)
