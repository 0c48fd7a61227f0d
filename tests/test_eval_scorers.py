"""The three scorers on the tiny model: cached option log-likelihood equals the uncached computation,
letter scores equal an explicit two-spelling computation, generation goes through the parser."""

import math

import numpy as np
import pytest
import torch

from eval import scorers
from eval.parsing import parse_choice
from eval.prompts import build_messages, get_prompt, user_text

OPTIONS = ["pick up the red cube", "open the drawer", "pour water into the cup", "close", "put the blue ball down"]


@pytest.fixture(scope="module")
def adapter(tiny):
    return scorers.ModelAdapter(*tiny)


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(0).integers(0, 255, (4, 40, 48, 3), dtype=np.uint8)


def _messages(mode, options=OPTIONS):
    template = get_prompt("egocentric")
    return build_messages(template, user_text(template, "What did I do first?", options, mode))


def test_cached_option_loglik_equals_uncached(adapter, video):
    cached = scorers.option_loglik(adapter, _messages("continuation"), video, OPTIONS, chunk_size=2)
    one_batch = scorers.option_loglik(adapter, _messages("continuation"), video, OPTIONS, chunk_size=64)
    uncached = scorers.option_loglik_uncached(adapter, _messages("continuation"), video, OPTIONS)
    np.testing.assert_allclose(cached.sum_logprob, one_batch.sum_logprob, rtol=0, atol=1e-5)
    assert cached.num_tokens == uncached.num_tokens
    assert len(set(cached.num_tokens)) > 1  # options of different lengths share a padded batch
    np.testing.assert_allclose(cached.sum_logprob, uncached.sum_logprob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(cached.mean_logprob, uncached.mean_logprob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.array(cached.sum_logprob) / cached.num_tokens, cached.mean_logprob, atol=1e-12)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_batched_option_loglik_equals_each_question_alone(tiny, attention):
    """Questions of different prompt lengths (left padding), videos and option counts share one prefill; chunks of 3
    answers cross question boundaries. Each question's scores equal its own full forwards."""
    from exo2ego_base.tiny import build_tiny_model

    adapter = scorers.ModelAdapter(*tiny) if attention == "eager" else scorers.ModelAdapter(*build_tiny_model(seed=0))
    rng = np.random.default_rng(1)
    template = get_prompt("egocentric")
    questions = [
        scorers.OptionQuestion(
            build_messages(template, user_text(template, question, None, "continuation")),
            rng.integers(0, 255, (4, 40, 48, 3), dtype=np.uint8),
            answers,
        )
        for question, answers in [
            ("What did I do first?", OPTIONS),
            ("Which object did I pick up with my left hand after I opened the drawer?", OPTIONS[:2]),
            ("What now?", OPTIONS[2:]),
        ]
    ]
    batched = scorers.option_loglik_batch(adapter, questions, chunk_size=3)
    assert len(batched) == len(questions)
    for question, scores in zip(questions, batched):
        alone = scorers.option_loglik_uncached(adapter, question.messages, question.video, question.answers)
        assert scores.num_tokens == alone.num_tokens
        np.testing.assert_allclose(scores.sum_logprob, alone.sum_logprob, rtol=0, atol=1e-4)
        np.testing.assert_allclose(scores.mean_logprob, alone.mean_logprob, rtol=0, atol=1e-4)


def test_continuations_leave_out_the_end_of_turn(adapter):
    prompt, sequences = scorers.continuations_for(adapter, _messages("continuation"), ["close"])
    eos = adapter.tokenizer.eos_token_id
    assert eos not in sequences[0]
    assert adapter.tokenizer.decode(sequences[0]) == " close"  # the template writes the answer after a space
    assert prompt.endswith("[/INST]")


def test_letter_scores_sum_both_spellings(adapter, video):
    messages = _messages("letters")
    result = scorers.letter_logprob(adapter, messages, video, len(OPTIONS))
    prompt = adapter.render_prompt(messages)
    plan = scorers.plan_letters(adapter, prompt, len(OPTIONS))
    assert plan.shared_prefix == ()  # the tiny BPE has " B" as one token, next to "B"
    spelled = {
        letter: (adapter.tokenizer.convert_tokens_to_ids(letter), adapter.tokenizer.encode(" " + letter))
        for letter in "ABCDE"
    }
    assert all(len(spaced) == 1 and spaced[0] != bare for bare, spaced in spelled.values())

    # Explicit: log(P("B" | prompt) + P(" B" | prompt)) from a plain forward.
    batch = adapter.encode(prompt, video)
    with torch.no_grad():
        logits = adapter.model(input_ids=batch["input_ids"], pixel_values_videos=batch["pixel_values_videos"]).logits[
            0
        ]
    after_prompt = torch.log_softmax(logits[-1], -1)
    for index, letter in enumerate("ABCDE"):
        bare, (spaced,) = spelled[letter]
        expected = math.log(math.exp(after_prompt[bare]) + math.exp(after_prompt[spaced]))
        assert result.option_scores[index] == pytest.approx(expected, abs=1e-5)
    assert result.prediction == int(np.argmax(result.option_scores))


def test_generate_parse_reports_raw_text_and_parser_rule(adapter, video):
    result = scorers.generate_parse(adapter, _messages("letters"), video, OPTIONS, max_new_tokens=6)
    parsed = parse_choice(result.raw_output, OPTIONS)
    assert (result.prediction, result.parse_rule) == (parsed.index, parsed.rule)
    assert result.option_scores is None


def test_choose_option_by_mean_or_sum():
    scores = scorers.ContinuationScores(sum_logprob=[-4.0, -3.0], mean_logprob=[-1.0, -3.0], num_tokens=[4, 1])
    assert scorers.choose_option(scores, "mean")[0] == 0
    assert scorers.choose_option(scores, "sum")[0] == 1
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        scorers.choose_option(scores, "max")


def test_registry_scorers_give_what_the_scoring_functions_give(adapter, video):
    from types import SimpleNamespace

    settings = SimpleNamespace(max_new_tokens=6, option_chunk_size=2, option_score="sum")
    assert scorers.SCORERS == ("letter_logprob", "generate_parse", "option_loglik")
    registered = {
        name: scorer.score(adapter, _messages(scorer.prompt_mode), video, OPTIONS, settings)
        for name, scorer in scorers.MCQ_SCORERS.items()
    }
    letters = scorers.letter_logprob(adapter, _messages("letters"), video, len(OPTIONS))
    assert (registered["letter_logprob"].prediction, registered["letter_logprob"].option_scores) == (
        letters.prediction,
        letters.option_scores,
    )
    generated = scorers.generate_parse(adapter, _messages("letters"), video, OPTIONS, max_new_tokens=6)
    assert registered["generate_parse"].raw_output == generated.raw_output
    loglik = scorers.option_loglik(adapter, _messages("continuation"), video, OPTIONS)
    prediction, values = scorers.choose_option(loglik, "sum")
    assert registered["option_loglik"].prediction == prediction
    np.testing.assert_allclose(registered["option_loglik"].option_scores, values, rtol=0, atol=1e-5)
    assert registered["option_loglik"].extra["num_tokens"] == loglik.num_tokens
