"""Text-only pretraining of the tiny LLM (`exo2ego.tiny.language`): it learns the text and nothing else moves."""

import re

import torch

from datasets_scripts.synthetic.qa import ACTION_QUESTION, OBJECT_QUESTIONS, PATTERN_QUESTIONS, instruction_templates
from exo2ego.tiny.language import pretrain_language, render_text
from exo2ego_base.tiny import build_tiny_model, build_tiny_tokenizer


def text_loss(model, processor, texts) -> float:
    batch = processor.tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        return model(**batch, labels=labels).loss.item()


def test_pretraining_learns_the_text_and_leaves_the_vision_side_untouched():
    model, processor = build_tiny_model(seed=0)
    texts = [
        render_text(processor, "Which object did I pick up?", f"the {colour} cup")
        for colour in ("red", "green", "blue", "yellow")
    ]
    frozen = {
        name: value.clone()
        for name, value in model.state_dict().items()
        if not name.startswith(("model.language_model.", "lm_head."))
    }
    before = text_loss(model, processor, texts)
    history = pretrain_language(model, processor, texts * 4, steps=20, learning_rate=3e-3, batch_size=8)
    after = text_loss(model, processor, texts)
    assert after < 0.7 * before, (before, after)  # from about ln(vocab size) = 6.2
    assert any("loss" in entry for entry in history)
    for name, value in model.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name
    assert all(parameter.requires_grad for parameter in model.parameters())  # the stages set their own trainable sets
    assert processor.tokenizer.padding_side == "left"  # restored for generation
    assert texts[0].startswith("<s>[INST] Which object") and "[/INST]" in texts[0] and "the red cup" in texts[0]


def test_every_word_of_the_worlds_instructions_and_questions_is_one_token():
    """The tiny tokenizer spells each word the synthetic world's EgoIT instructions and EgoBench questions use as one
    token (with its leading space), so the demo's sequences are no longer than their words."""
    texts = [text for templates in instruction_templates().values() for text in templates]
    texts += [*OBJECT_QUESTIONS.values(), *PATTERN_QUESTIONS.values(), ACTION_QUESTION.format(obj="the red cup")]
    words = sorted({word for text in texts for word in re.findall(r"[A-Za-z]+", text)})
    tokenizer = build_tiny_tokenizer()
    split = {word: tokenizer.tokenize(" " + word) for word in words}
    assert len(words) > 50
    assert {word: tokens for word, tokens in split.items() if len(tokens) > 1} == {}
