"""Text-only pretraining of the tiny LLM (`exo2ego.tiny.language`): it learns the text and nothing else moves."""

import torch

from exo2ego.tiny.language import pretrain_language, render_text
from exo2ego_base.tiny import build_tiny_model


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
