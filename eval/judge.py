"""Optional LLM judge for open-ended answers, reached through an OpenAI-compatible chat endpoint on loopback.

The judge (e.g. an open-weights model served by vLLM or SGLang on ``127.0.0.1``) reads the question, the
reference and the prediction, and answers with a yes/no verdict and an integer score from 0 to 5. Only
loopback addresses are accepted: no answer or reference leaves the machine. The model id, the prompt
hash, temperature 0 and the token limit go into ``results.json``; the raw judge text into each record.
"""

from __future__ import annotations

import ast
import hashlib
import ipaddress
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

JUDGE_SYSTEM = (
    "You grade answers to questions about videos. Decide whether the predicted answer means the same as the "
    "correct answer. Synonyms and paraphrases count as matches; missing or contradicting key details do not. "
    "Judge only the meaning, not the style or length."
)
JUDGE_USER = (
    "Question: {question}\n"
    "Correct answer: {reference}\n"
    "Predicted answer: {prediction}\n\n"
    "Reply with a Python dictionary and nothing else, with the keys 'pred' ('yes' if the predicted answer is "
    "correct, else 'no') and 'score' (an integer from 0, wrong, to 5, fully correct), for example "
    "{{'pred': 'no', 'score': 1}}."
)
_PRED = re.compile(r"""['"]pred['"]\s*:\s*['"](yes|no)['"]""", re.IGNORECASE)
_SCORE = re.compile(r"""['"]score['"]\s*:\s*([0-9]+(?:\.[0-9]+)?)""")


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how the judge runs.

    Attributes:
        url: the chat-completions endpoint, e.g. ``http://127.0.0.1:8000/v1/chat/completions``.
        model: the pinned model id the server serves (recorded with the results).
        max_tokens, temperature, timeout_s: request settings (temperature 0 for repeatable verdicts).
    """

    url: str
    model: str
    max_tokens: int = 64
    temperature: float = 0.0
    timeout_s: float = 60.0

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256((JUDGE_SYSTEM + "\x1f" + JUDGE_USER).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """A judge decision: ``correct`` (yes/no), ``score`` in [0, 5], and the judge's ``raw`` text."""

    correct: bool
    score: float
    raw: str
    parsed: bool


def check_loopback(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is http(s) to a loopback address (127.0.0.0/8, ::1, localhost)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"judge URL {url!r} must be http(s)://HOST:PORT/...")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 80)}
    except socket.gaierror as error:
        raise ValueError(f"judge host {parsed.hostname!r} does not resolve: {error}") from error
    if not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        raise ValueError(f"the judge must be served on loopback (127.0.0.1, ::1, localhost), not {parsed.hostname!r}")


def parse_verdict(text: str) -> Verdict:
    """Read ``{'pred': 'yes'|'no', 'score': n}`` from the judge's reply; anything else is ``no``/0, unparsed."""
    pred, score = None, None
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    if match:
        try:
            value = ast.literal_eval(match.group(0))
            if isinstance(value, dict):
                pred, score = value.get("pred"), value.get("score")
        except (ValueError, SyntaxError):
            pass
    if not isinstance(pred, str):
        found = _PRED.search(text or "")
        pred = found.group(1) if found else None
    if not isinstance(score, (int, float)):
        found = _SCORE.search(text or "")
        score = float(found.group(1)) if found else None
    if pred is None or pred.lower() not in ("yes", "no") or score is None:
        return Verdict(False, 0.0, text or "", parsed=False)
    return Verdict(pred.lower() == "yes", float(min(5.0, max(0.0, score))), text, parsed=True)


def judge_answer(config: JudgeConfig, question: str, reference: str, prediction: str) -> Verdict:
    """Ask the judge about one answer; network errors raise ``RuntimeError`` naming the endpoint."""
    check_loopback(config.url)
    body = {
        "model": config.model,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": JUDGE_USER.format(question=question, reference=reference, prediction=prediction),
            },
        ],
    }
    request = urllib.request.Request(
        config.url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
            reply = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as error:
        raise RuntimeError(f"judge request to {config.url} failed: {error}") from error
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise RuntimeError(
            f"judge at {config.url} returned no choices[0].message.content: {str(reply)[:200]}"
        ) from error
    return parse_verdict(text)
