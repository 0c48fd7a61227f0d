"""EgoBench-style multiple-choice throughput at the paper's scale, per scorer, and time to first token.

Scores synthetic 5-option questions about 16-frame ego videos with the project's own scorers (`eval/scorers.py`):

- `letter_logprob`: one forward over video + question + lettered options, logits at the last position only
  (`logits_to_keep`), argmax over the letters;
- `option_loglik` (cached prefix): one prefill of video + question with `use_cache=True`, then every option scored
  from copies of that KV cache, batched;
- per-option re-encoding (`option_loglik_uncached`): K full forwards, video included, one per option (what
  per-option likelihood harnesses do) - the baseline;
- `generate_parse`: greedy decoding of 16 tokens, then parsing.

and the time to first token of a 16-frame ego question (processor + prefill + one decoding step, from decoded
frames). Questions/s count the processor (CLIP preprocessing of the frames) but not video decoding: frames are
random uint8 arrays already at 336x336. The model is the ego-only inference release (no exo tower, no G), random
weights, bf16, sdpa; the tokenizer is the offline tiny BPE tokenizer of `exo2ego_base.tiny` (its ids fit Mistral's
vocabulary), so prompts are a little longer in tokens than with Mistral's tokenizer.

    python -m benchmarks.gpu_eval                   # paper scale on a GPU
    python -m benchmarks.gpu_eval --reduced         # CPU-sized: every code path
    python -m benchmarks.gpu_eval --tiny            # test-sized
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from benchmarks.gpu_setup import DeviceRunArguments, compile_modules, device_facts, start_run, synchronize
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic
from train.memory_count import GIB
from train.model_at_scale import ModelSize, build_model

# Words of the synthetic questions and options (all in the tiny tokenizer's corpus, so they tokenize compactly).
OBJECTS = ["cup", "bowl", "knife", "spoon", "bottle", "jar", "pan", "plate", "box", "lid"]
ACTIONS = ["picks up", "puts down", "opens", "closes", "pours", "moves", "holds", "lifts", "drops", "stacks"]
PLACES = ["table", "shelf", "drawer", "counter", "sink"]


def synthetic_questions(count: int, num_options: int, seed: int) -> list[dict]:
    """`count` questions with `num_options` distinct options each: {question, options, answer_idx}."""
    rng = np.random.default_rng(seed)
    questions = []
    for _ in range(count):
        obj = OBJECTS[rng.integers(len(OBJECTS))]
        options = set()
        while len(options) < num_options:
            options.add(
                f"C {ACTIONS[rng.integers(len(ACTIONS))]} the {OBJECTS[rng.integers(len(OBJECTS))]} "
                f"on the {PLACES[rng.integers(len(PLACES))]}"
            )
        questions.append(
            {
                "question": f"What did I do with the {obj} after I opened the drawer?",
                "options": sorted(options),
                "answer_idx": int(rng.integers(num_options)),
            }
        )
    return questions


def build_eval_model(size: ModelSize, frames: int, device: torch.device, dtype: torch.dtype, attn: str):
    """Ego-only Exo2Ego (inference release) + processor around the offline tiny tokenizer."""
    from exo2ego_base.tiny import VIDEO_TOKEN, build_processor, build_tiny_tokenizer
    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    config = size.exo2ego_config(
        frames, include_exo_branch=False, video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config.text_config, name, getattr(tokenizer, name))
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the tokenizer's {len(tokenizer)} ids do not fit the LLM's {config.text_config.vocab_size}")
    model = build_model(Exo2EgoForConditionalGeneration, config, device, dtype, attn).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, build_processor(config, tokenizer)


def time_questions(run_one, items: list, device: torch.device, warmup: int) -> dict:
    """Seconds per question over `items` after `warmup` untimed ones (cycling through `items`)."""
    for index in range(warmup):
        run_one(items[index % len(items)])
    synchronize(device)
    times = []
    for item in items:
        start = time.perf_counter()
        run_one(item)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "questions": len(times),
        "seconds_total": sum(times),
        "seconds_median": statistics.median(times),
        "questions_per_s": len(times) / sum(times),
    }


@dataclass
class EvalArguments(DeviceRunArguments):
    """The flags of `python -m benchmarks.gpu_eval`; the scale fills the sizes left unset."""

    questions: int | None = field(
        default=None, metadata={"help": "timed questions per scorer (default 10; reduced 3; tiny 2)"}
    )
    options: int = field(default=5, metadata={"help": "options per question (EgoSchema: 5)"})
    frames: int | None = field(default=None, metadata={"help": "frames per video (default 16; reduced 8; tiny 4)"})
    warmup: int | None = field(default=None, metadata={"help": "untimed questions first (default 2; tiny 1)"})
    ttft_repeats: int | None = field(
        default=None, metadata={"help": "time-to-first-token repeats (default 10; reduced 3; tiny 1)"}
    )
    generate_tokens: int = field(default=16, metadata={"help": "new tokens of generate_parse"})
    compile: Literal["none", "vision"] = field(
        default="none", metadata={"help": "torch.compile ego tower, F, connector"}
    )
    out: str | None = field(
        default=None, metadata={"help": "JSON path (default benchmarks/results/gpu_eval[_reduced].json)"}
    )

    def __post_init__(self):
        super().__post_init__()
        self.questions = self.questions or self.scale_default(10, 3, 2)
        self.frames = self.frames or self.scale_default(16, 8, 4)
        self.ttft_repeats = self.ttft_repeats or self.scale_default(10, 3, 1)
        if self.warmup is None:
            self.warmup = self.scale_default(2, 2, 1)
        self.out = self.out or f"benchmarks/results/gpu_eval{self.scale_default('', '_reduced', '_tiny')}.json"


def parse_args(argv=None) -> EvalArguments:
    return parse_script_arguments(EvalArguments, argv, __doc__.splitlines()[0])


def main(argv=None) -> int:
    from eval.prompts import DEFAULT_PROMPT, build_messages, get_prompt, user_text
    from eval.scorers import ModelAdapter, generate_parse, letter_logprob, option_loglik, option_loglik_uncached

    args = parse_args(argv)
    device, dtype = start_run(args)
    size = ModelSize(args.scale)
    facts = device_facts(device)
    model, processor = build_eval_model(size, args.frames, device, dtype, args.attn)
    compiled = compile_modules(model, args.compile, args.compile_backend)
    adapter = ModelAdapter(model, processor, num_frames=args.frames)
    template = get_prompt(DEFAULT_PROMPT)
    image_size = model.config.ego_vision_config.image_size
    rng = np.random.default_rng(args.seed)
    items = []
    for question in synthetic_questions(args.questions, args.options, args.seed):
        items.append(
            {
                **question,
                "video": rng.integers(0, 256, (args.frames, image_size, image_size, 3), dtype=np.uint8),
                "letter_messages": build_messages(
                    template, user_text(template, question["question"], question["options"], "letters")
                ),
                "continuation_messages": build_messages(
                    template, user_text(template, question["question"], None, "continuation")
                ),
            }
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    first = items[0]
    prompt_tokens = {
        "letters": adapter.encode(adapter.render_prompt(first["letter_messages"]), first["video"])["input_ids"].shape[
            1
        ],
        "continuation": adapter.encode(adapter.render_prompt(first["continuation_messages"]), first["video"])[
            "input_ids"
        ].shape[1],
    }
    print(
        f"{args.scale}-scale ego-only Exo2Ego on {facts['device_name']} ({device.type}), "
        f"{args.frames} frames, {args.options} options, prompt {prompt_tokens['letters']} tokens (letters)"
    )

    cached_scores: list[list[float]] = []
    uncached_scores: list[list[float]] = []
    scorers = {
        "letter_logprob": lambda item: letter_logprob(adapter, item["letter_messages"], item["video"], args.options),
        "option_loglik (cached prefix)": lambda item: cached_scores.append(
            option_loglik(adapter, item["continuation_messages"], item["video"], item["options"]).mean_logprob
        ),
        "per-option re-encoding": lambda item: uncached_scores.append(
            option_loglik_uncached(adapter, item["continuation_messages"], item["video"], item["options"]).mean_logprob
        ),
        f"generate_parse ({args.generate_tokens} tokens)": lambda item: generate_parse(
            adapter, item["letter_messages"], item["video"], item["options"], max_new_tokens=args.generate_tokens
        ),
    }
    results = {}
    for name, run_one in scorers.items():
        results[name] = time_questions(run_one, items, device, args.warmup)
    # The warm-up questions appended scores too: the timed ones are the last len(items) of each list.
    cached, uncached = cached_scores[-len(items) :], uncached_scores[-len(items) :]
    max_difference = max(abs(a - b) for row_a, row_b in zip(cached, uncached) for a, b in zip(row_a, row_b))

    # Time to first token: decoded frames -> processor -> prefill -> first generated token.
    ttft, preprocess, prefill = [], [], []
    messages = first["letter_messages"]
    prompt = adapter.render_prompt(messages)
    with torch.inference_mode():
        for repeat in range(args.warmup + args.ttft_repeats):
            synchronize(device)
            start = time.perf_counter()
            batch = adapter.encode(prompt, first["video"])
            synchronize(device)
            encoded = time.perf_counter()
            model(**batch, logits_to_keep=1)
            synchronize(device)
            prefilled = time.perf_counter()
            model.generate(**adapter.encode(prompt, first["video"]), max_new_tokens=1, do_sample=False)
            synchronize(device)
            generated = time.perf_counter()
            if repeat >= args.warmup:
                preprocess.append(encoded - start)
                prefill.append(prefilled - encoded)
                ttft.append(generated - prefilled)
    time_to_first_token = {
        "ttft_s_median": statistics.median(ttft),
        "preprocess_s_median": statistics.median(preprocess),
        "prefill_forward_s_median": statistics.median(prefill),
    }

    rate = {name: row["questions_per_s"] for name, row in results.items()}
    ratios = {
        "letter_logprob_over_reencoding": rate["letter_logprob"] / rate["per-option re-encoding"],
        "cached_option_loglik_over_reencoding": rate["option_loglik (cached prefix)"] / rate["per-option re-encoding"],
    }
    print(f"{'scorer':<32} {'questions/s':>11} {'median s':>9} {'x re-encoding':>13}")
    for name, row in results.items():
        print(
            f"{name:<32} {row['questions_per_s']:>11.3f} {row['seconds_median']:>9.3f} "
            f"{row['questions_per_s'] / rate['per-option re-encoding']:>13.2f}"
        )
    print(
        f"time to first token ({args.frames}-frame question: processor + prefill + 1 token): "
        f"{time_to_first_token['ttft_s_median']:.3f} s (processor {time_to_first_token['preprocess_s_median']:.3f} s, "
        f"prefill forward {time_to_first_token['prefill_forward_s_median']:.3f} s)"
    )
    print(f"cached vs re-encoded option scores: max |difference| of mean log-prob {max_difference:.2e}")
    payload = {
        "benchmark": "gpu_eval",
        "scale": args.scale,
        **facts,
        "dtype": str(dtype).removeprefix("torch."),
        "settings": args.settings(),
        "compiled": compiled,
        "prompt_tokens": prompt_tokens,
        "scorers": results,
        "time_to_first_token": time_to_first_token,
        "ratios": ratios,
        "cached_vs_reencoded_max_abs_diff": max_difference,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
    }
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
