"""Questions per second of the EgoBench scorers on the tiny Exo2Ego model, on CPU.

Compares ``letter_logprob`` (one forward per question), ``option_loglik`` (one cached prefill, all
options from the cache), the same with ``--batch`` questions per prefill (``option_loglik_batch``, what
``exo2ego eval --batch-size`` does) and per-option re-encoding (one full forward with the video per option, the
way lmms-eval's loglikelihood scores options), for 5 and 10 options. Videos are decoded from a small
MP4 each time, as in a real run. Prints a table and writes JSON (CPU name, versions, ratios).

    python -m benchmarks.eval_scorers --questions 20 --out benchmarks/results/eval_scorers.json
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic


def time_scorer(run, questions: int, warmup: int = 2, per_call: int = 1) -> float:
    """Questions per second of ``run(index)``, which scores ``per_call`` questions, over ``questions`` questions
    after ``warmup`` calls."""
    for index in range(warmup):
        run(index)
    calls = max(1, questions // per_call)
    start = time.perf_counter()
    for index in range(calls):
        run(index)
    return calls * per_call / (time.perf_counter() - start)


@dataclass
class EvalScorersArguments:
    """The flags of `python -m benchmarks.eval_scorers`."""

    questions: int = field(default=20, metadata={"help": "timed questions per scorer and option count"})
    frames: int = field(default=4, metadata={"help": "frames per video of the tiny model"})
    batch: int = field(default=8, metadata={"help": "questions per prefill of the batched option_loglik"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (None: torch's)"})
    out: str | None = field(default=None, metadata={"help": "JSON output path"})


def main(argv: list[str] | None = None) -> int:
    args = parse_script_arguments(EvalScorersArguments, argv, __doc__.splitlines()[0])

    import torch

    from eval import scorers
    from eval.prompts import build_messages, get_prompt, user_text
    from eval.toy import write_video
    from exo2ego_base.tiny import build_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = build_tiny_model(attn_implementation="sdpa", num_frames=args.frames)
    adapter = scorers.ModelAdapter(model, processor, num_frames=args.frames)
    template = get_prompt("egocentric")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        video = {
            "path": str(write_video(Path(folder) / "clip.mp4", seed=0, num_frames=16, size=64)),
            "start_sec": 0.0,
            "end_sec": 4.0,
        }
        for num_options in (5, 10):
            options = [
                f"I pick up the {colour} cube and put it on the shelf"
                for colour in ("red", "green", "blue", "yellow", "white", "black", "pink", "cyan", "brown", "gray")
            ][:num_options]
            letters = build_messages(template, user_text(template, "What did I do?", options, "letters"))
            continuation = build_messages(template, user_text(template, "What did I do?", None, "continuation"))
            question = scorers.OptionQuestion(continuation, video, options)
            measured = {
                "letter_logprob": time_scorer(
                    lambda _: scorers.letter_logprob(adapter, letters, video, num_options), args.questions
                ),
                "option_loglik (cached prefix)": time_scorer(
                    lambda _: scorers.option_loglik(adapter, continuation, video, options), args.questions
                ),
                f"option_loglik, {args.batch} per prefill": time_scorer(
                    lambda _: scorers.option_loglik_batch(adapter, [question] * args.batch),
                    args.questions,
                    per_call=args.batch,
                ),
                "per-option re-encoding": time_scorer(
                    lambda _: scorers.option_loglik_uncached(adapter, continuation, video, options), args.questions
                ),
            }
            baseline = measured["per-option re-encoding"]
            rows += [
                {
                    "options": num_options,
                    "scorer": name,
                    "questions_per_s": value,
                    "speedup_vs_reencoding": value / baseline,
                }
                for name, value in measured.items()
            ]

    print(
        f"CPU: {cpu_name()}, torch threads {torch.get_num_threads()}, tiny Exo2Ego ({args.frames} frames, "
        f"{processor.num_video_tokens(args.frames)} visual tokens), {args.questions} questions each"
    )
    print(f"{'options':>7}  {'scorer':<30} {'questions/s':>12} {'vs re-encoding':>15}")
    for row in rows:
        print(
            f"{row['options']:>7}  {row['scorer']:<30} {row['questions_per_s']:>12.2f} "
            f"{row['speedup_vs_reencoding']:>14.2f}x"
        )
    if args.out:
        payload = {
            "benchmark": "eval_scorers",
            "cpu": cpu_name(),
            "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            "config": asdict(args),
            "rows": rows,
        }
        write_json_atomic(args.out, payload)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
