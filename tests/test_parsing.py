"""Golden cases of the deterministic multiple-choice parser."""

import pytest

from eval.parsing import parse_choice

OPTIONS = ["pick up the cup", "open drawer", "cut the onion", "wash the plate", "close the fridge"]


@pytest.mark.parametrize(
    "response, letter, rule",
    [
        ("Based on the video, C", "C", "standalone"),
        ("(B) open drawer", "B", "leading"),
        ("B", "B", "leading"),
        ("  D.", "D", "leading"),
        ("[E] close the fridge", "E", "leading"),
        ("**A**: pick up the cup", "A", "leading"),
        ("The answer is (D).", "D", "keyword"),
        ("Best option: B", "B", "keyword"),
        ("answer: e", None, "invalid"),  # a lowercase letter is never read as an option
        ("<think>A seems likely, or maybe B</think> D", "D", "leading"),
        ("I think it is C", "C", "standalone"),  # the pronoun I is not option I (nor a second letter)
        ("I'd say E", "E", "standalone"),
        ("A cup is on the table", None, "invalid"),  # the article, and no option text matches
        ("A", "A", "leading"),
        ("a", None, "invalid"),
        ("Both B and C look right", None, "invalid"),  # two letters: ambiguous
        ("Because Ann cut it", None, "invalid"),  # capital letters inside words never count
        ("He decided to cut the onion first.", "C", "option_text"),
        ("I would open drawer", "B", "option_text"),
        ("", None, "invalid"),
        ("F", None, "invalid"),  # not one of the five valid letters
    ],
)
def test_golden_cases(response, letter, rule):
    parsed = parse_choice(response, OPTIONS)
    assert (parsed.letter, parsed.rule) == (letter, rule)


def test_text_that_matches_exactly_one_option_is_accepted():
    options = ["a cup is on the table", "a plate is in the sink", "the door is open", "nothing", "a knife"]
    assert parse_choice("A cup is on the table", options).letter == "A"
    assert parse_choice("A cup is on the table", options).rule == "option_text"


def test_an_option_inside_a_longer_matched_option_is_not_a_second_answer():
    options = ["open drawer", "open drawer slowly", "close drawer"]
    assert parse_choice("You open drawer slowly.", options).letter == "B"
    assert parse_choice("open drawer or close drawer", options).letter is None


def test_ten_options_and_the_pronoun_i():
    options = [f"option text {i}" for i in range(10)]
    assert parse_choice("I", options).letter == "I"  # a bare I is the letter
    assert parse_choice("I think J", options).letter == "J"
    with pytest.raises(ValueError, match="between 1 and 10"):
        parse_choice("A", ["x"] * 11)
