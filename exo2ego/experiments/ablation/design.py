"""The ablation's design: its arms, the pre-registered hypotheses with their decision rules, the plans' sizes, and
`preregistration.md`, the design written down before the first run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets_scripts.synthetic.qa import PATTERN_EGOIT_CONFIG
from exo2ego.demo.plans import TASKS
from exo2ego_base.provenance import write_text_atomic

FULL = "full"
PLAIN, PATTERN = TASKS  # what ego-side text names; the exo-only pattern
NO_PATTERN_CORPUS = "web_without_pattern_words"


@dataclass(frozen=True)
class Arm:
    """One arm: what changes relative to the full pipeline.

    Attributes:
        name: id used in folder names and reports.
        description: what the arm tests, and where the paper has it.
        role: "ablation", "negative control" (must lose the full pipeline's exo-only gain) or "positive control".
        default: part of the default design (the others run with `--arms all`).
        stage2: extra arguments of `train/stage2.py` (the last word wins over config and plan).
        stage3: extra arguments of `train/stage3.py`.
        skip_stages_1_2: stage 3 starts from the init stage's output.
        exo_corpus: "web" (the world's web-exo captions) or `NO_PATTERN_CORPUS` (the same with no pattern named),
            what init trains the exo tower and connector on.
        unmapped_at_test: at test time the LLM reads c(x) in place of c(F(x)) (F set to the identity).
    """

    name: str
    description: str
    role: str = "ablation"
    default: bool = False
    stage2: tuple[str, ...] = ()
    stage3: tuple[str, ...] = ()
    skip_stages_1_2: bool = False
    exo_corpus: str = "web"
    unmapped_at_test: bool = False

    def stage2_key(self) -> tuple:
        """Arms with equal keys share one stage-2 run."""
        return (self.exo_corpus, self.stage2)

    def stage3_key(self) -> tuple:
        """Arms with equal keys share one stage-3 run (they differ at test time only)."""
        return (self.exo_corpus, self.skip_stages_1_2 or self.stage2, self.stage3)


ARMS = (
    Arm(FULL, "init -> stage 1 -> stage 2 (VTG + KL + CCL) -> stage 3 (LoRA), as in the paper", default=True),
    Arm(
        "no_stages_1_2",
        "Table 15: init -> stage 3, without the exo teacher and the mapping training",
        default=True,
        skip_stages_1_2=True,
    ),
    Arm("no_kl", "Table 7 #4: stage 2 without the KL alignment loss", default=True, stage2=("--ablations", "no_kl")),
    Arm(
        "shuffled_pairs",
        "stage 2 on shuffled ego-exo pairs (each ego clip with another take's exo clip; stage 1 reads exo clips only)",
        role="negative control",
        default=True,
        stage2=("--shuffle_pairs", "true"),
    ),
    Arm(
        "unmapped_at_test",
        "the full pipeline's model, reading c(x) in place of c(F(x)) at test time",
        role="negative control",
        default=True,
        unmapped_at_test=True,
    ),
    Arm(
        "no_pattern_words",
        "init's exo corpus with the pattern words removed (no text names the exo-only knowledge)",
        role="negative control",
        default=True,
        exo_corpus=NO_PATTERN_CORPUS,
    ),
    Arm(
        "no_g_ccl", "Table 7 #3: stage 2 without G and the cycle-consistency loss", stage2=("--ablations", "no_g_ccl")
    ),
    Arm("mlp_mapping", "Table 7: F and G as MLPs instead of ResNet blocks", stage2=("--mapping_type", "mlp")),
    Arm("no_lora", "Table 7 #2: stage 3 without LoRA on the LLM", stage3=("--ablations", "no_lora")),
    Arm(
        "exo_tower_trainable",
        "Table 8 #2: the exo tower also trains in stage 2",
        stage2=("--ablations", "exo_tower_trainable"),
    ),
    Arm(
        "kl_gaussian_batch",
        "KL form: Gaussian KL of per-channel moments over the batch (ignores the pairing)",
        stage2=("--kl_mode", "gaussian_batch"),
    ),
    Arm(
        "kl_token_softmax",
        "KL form: per-token softmax over channels (assumes ego and exo patches correspond)",
        stage2=("--kl_mode", "token_softmax"),
    ),
    Arm("kl_pooled", "KL form: softmax over channels of frame-pooled features", stage2=("--kl_mode", "pooled")),
    Arm(
        "shuffled_pairs_gaussian_batch",
        "shuffled pairs under the batch-moment KL: a KL that ignores the pairing should not care (compare with "
        "kl_gaussian_batch)",
        role="negative control",
        stage2=("--kl_mode", "gaussian_batch", "--shuffle_pairs", "true"),
    ),
    Arm(
        "egoit_asks_pattern",
        "stage 3 on EgoIT that also asks the pattern of the train takes' objects (an upper bound)",
        role="positive control",
        stage3=("--dataset_config", PATTERN_EGOIT_CONFIG),
    ),
)
ARMS_BY_NAME = {arm.name: arm for arm in ARMS}
DEFAULT_ARMS = tuple(arm.name for arm in ARMS if arm.default)


@dataclass(frozen=True)
class Hypothesis:
    """A pre-registered claim about `effect` = full - arm (`gain`) or arm - full (`change`) on `split`, in points.

    `gain`: held when, for every arm, the two-level 95% interval's lower bound is above 0 and the estimate is at least
    `threshold`; failed when, for some arm, the interval's upper bound is below `threshold`; undecided otherwise.
    `change`: held when, for every arm, the interval's lower bound is above `threshold` (a negative number: "no arm
    is more than |threshold| points worse"); failed when, for some arm, its upper bound is below `threshold`.
    """

    name: str
    statement: str
    split: str
    arms: tuple[str, ...]
    effect: str  # gain | change
    threshold: float


HYPOTHESES = (
    Hypothesis(
        "exo_stages_teach_the_pattern",
        "On the exo-only split, the full pipeline beats init -> stage 3 (no_stages_1_2) by at least 10 points.",
        PATTERN,
        ("no_stages_1_2",),
        "gain",
        10.0,
    ),
    Hypothesis(
        "kl_teaches_the_pattern",
        "On the exo-only split, the full pipeline beats stage 2 without the KL (no_kl) by at least 10 points.",
        PATTERN,
        ("no_kl",),
        "gain",
        10.0,
    ),
    Hypothesis(
        "no_arm_costs_the_plain_split",
        "On the plain split, neither no_stages_1_2 nor no_kl is more than 5 points worse than the full pipeline.",
        PLAIN,
        ("no_stages_1_2", "no_kl"),
        "change",
        -5.0,
    ),
)


def hypothesis_verdict(hypothesis: Hypothesis, rows: dict[str, dict]) -> str:
    """held / failed / undecided (see :class:`Hypothesis`) from each arm's `compare` row (arm - full, points)."""
    if hypothesis.effect == "gain":  # full - arm: the interval and estimate negated
        gains = [(-rows[a]["two_level_ci"][1], -rows[a]["two_level_ci"][0], -rows[a]["diff"]) for a in hypothesis.arms]
        if all(low > 0 and estimate >= hypothesis.threshold for low, _, estimate in gains):
            return "held"
        return "failed" if any(high < hypothesis.threshold for _, high, _ in gains) else "undecided"
    intervals = [rows[a]["two_level_ci"] for a in hypothesis.arms]
    if all(low > hypothesis.threshold for low, _ in intervals):
        return "held"
    return "failed" if any(high < hypothesis.threshold for _, high in intervals) else "undecided"


@dataclass(frozen=True)
class AblationPlan:
    """Sizes of an ablation: the demo plan each arm runs, the seeds, and the parallel seed jobs."""

    demo: str
    seeds: tuple[int, ...]
    jobs: int = 2


PLANS = {
    "full": AblationPlan(demo="full", seeds=tuple(range(8))),
    "quick": AblationPlan(demo="quick", seeds=(0, 1), jobs=1),
}


def preregistration_text(arm_names: tuple[str, ...], plan: AblationPlan, demo_plan) -> str:
    lines = [
        "# Pre-registration",
        "",
        "Written before any run of this folder; the report quotes it and never rewrites it.",
        "",
        f"Arms: {', '.join(arm_names)}. Seeds: {list(plan.seeds)} (world seed = training seed = s). Demo plan "
        f"`{plan.demo}`: `{json.dumps(asdict(demo_plan))}`.",
        "",
        "Primary statistic: per split, arm - full pipeline in points, with the two-level bootstrap 95% interval "
        "(seeds, then held-out takes within each seed; `eval.seed_statistics`).",
        "",
        "## Hypotheses",
        "",
    ]
    for hypothesis in HYPOTHESES:
        if hypothesis.effect == "gain":
            rule = (
                f"held if, for {', '.join(hypothesis.arms)}, full - arm has a lower bound above 0 and an estimate of "
                f"at least {hypothesis.threshold:+.0f} points; failed if its upper bound is below "
                f"{hypothesis.threshold:+.0f}; undecided otherwise"
            )
        else:
            rule = (
                f"held if, for each of {', '.join(hypothesis.arms)}, arm - full has a lower bound above "
                f"{hypothesis.threshold:+.0f} points; failed if one has an upper bound below "
                f"{hypothesis.threshold:+.0f}; undecided otherwise"
            )
        lines.append(f"- **{hypothesis.name}** (`{hypothesis.split}`): {hypothesis.statement} Rule: {rule}.")
    lines += [
        "",
        "## Controls",
        "",
        "- `shuffled_pairs`, `unmapped_at_test`, `no_pattern_words` must lose any exo-only gain of the full pipeline "
        "(their full - arm on the exo-only split should match full - no_stages_1_2).",
        "- `shuffled_pairs_gaussian_batch` (with `--arms all`): a KL that ignores the pairing should score like "
        "`kl_gaussian_batch`.",
    ]
    return "\n".join(lines) + "\n"


def write_preregistration(out: Path, text: str) -> None:
    path = out / "preregistration.md"
    if path.is_file():
        if path.read_text() != text:
            raise SystemExit(f"{path} pre-registers another design; use another --out (it is never rewritten)")
        return
    write_text_atomic(path, text)
