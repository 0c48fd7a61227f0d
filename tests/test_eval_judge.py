"""The optional open-QA judge against a tiny OpenAI-compatible server on 127.0.0.1 started by the test."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval.config import EvalConfig
from eval.judge import JudgeConfig, check_loopback, judge_answer, parse_verdict
from eval.runner import evaluate
from eval.toy import write_toy_egobench


class _FakeJudge(BaseHTTPRequestHandler):
    """Says yes (score 4) when the predicted answer contains the reference's last word, else no (score 1)."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        user = body["messages"][-1]["content"]
        reference = user.split("Correct answer: ", 1)[1].split("\n", 1)[0]
        prediction = user.split("Predicted answer: ", 1)[1].split("\n", 1)[0]
        verdict = (
            "{'pred': 'yes', 'score': 4}" if reference.split()[-1] in prediction else "{'pred': 'no', 'score': 1}"
        )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeJudge.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


def test_judge_round_trip(judge_url):
    config = JudgeConfig(url=judge_url, model="pinned/judge-model@rev1")
    yes = judge_answer(config, "What did I pick up?", "the red cup", "I picked up a red cup")
    no = judge_answer(config, "What did I pick up?", "the red cup", "a knife")
    assert (yes.correct, yes.score, yes.parsed) == (True, 4.0, True)
    assert (no.correct, no.score) == (False, 1.0)
    request = _FakeJudge.requests[0]
    assert request["model"] == "pinned/judge-model@rev1" and request["temperature"] == 0.0


@pytest.mark.parametrize(
    "text, correct, score, parsed",
    [
        ("{'pred': 'yes', 'score': 5}", True, 5.0, True),
        ('Sure! {"pred": "no", "score": 2.5}', False, 2.5, True),
        ("{'pred': 'yes', 'score': 9}", True, 5.0, True),  # clamped to 0-5
        ("'pred': 'YES', 'score': 3 (no braces)", True, 3.0, True),  # the regex fallback
        ("I cannot decide.", False, 0.0, False),
        ("{'pred': 'maybe', 'score': 3}", False, 0.0, False),
    ],
)
def test_parse_verdict(text, correct, score, parsed):
    verdict = parse_verdict(text)
    assert (verdict.correct, verdict.score, verdict.parsed) == (correct, score, parsed)
    assert verdict.raw == text


def test_only_loopback_judges_are_accepted():
    check_loopback("http://localhost:8000/v1/chat/completions")
    check_loopback("http://[::1]:8000/v1/chat/completions")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://10.1.2.3:8000/v1/chat/completions")
    with pytest.raises(ValueError, match="http"):
        check_loopback("ftp://127.0.0.1/x")


def test_open_questions_are_judged_in_a_run(tmp_path, judge_url, tiny):
    toy = write_toy_egobench(tmp_path / "toy")
    config = EvalConfig(
        tasks="qaego4d", judge_url=judge_url, judge_model="pinned/judge", open_max_new_tokens=4, bootstrap_resamples=50
    )
    results = evaluate(*tiny, str(toy), str(tmp_path / "run"), config, show_progress=False)
    qaego4d = results["tasks"]["qaego4d"]
    assert qaego4d["metrics"]["judge_accuracy_open"]["n"] == 2
    assert {"judge_accuracy_open", "judge_score_open"} <= set(qaego4d["headline"])
    assert results["judge"]["model"] == "pinned/judge" and len(results["judge"]["prompt_sha256"]) == 64
    assert len(_FakeJudge.requests) == 2
