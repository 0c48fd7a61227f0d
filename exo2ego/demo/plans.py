"""The demo's plans: the stages it trains, the points and splits it evaluates, and the sizes of each run."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("init", "stage1", "stage2", "stage3")
EVAL_POINTS = ("untrained",) + STAGES
# The world's two EgoBench splits: what ego-side text names (object, colour, action), and the exo-only pattern.
TASKS = ("synthetic", "synthetic_pattern")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `full` is the learning run (its time and results: README "The demo"); `quick` only
    proves the wiring."""

    takes: int
    steps: dict[str, int]
    # One object per take: the exo views then show what the ego view shows, so the pattern their features carry is
    # the handled object's (with two, a clip's exo features mix both objects' patterns).
    objects_per_take: int = 1
    batch_size: int = 8
    frames: int = 4
    # Frame rate of the world's videos (`exo2ego data synth --fps`, 8 by default): 4 halves the time to render and to
    # decode them. EgoIT and EgoBench windows (1.6-1.9 s) still hold 6-7 frames for the 4 sampled; Ego-ExoClip's
    # narration windows (about 0.5 s, the paper's alpha on this world's narration gaps) hold 2, each sampled twice.
    fps: float = 4.0
    # `exo2ego tiny-model --connector`: VideoLLaMA2.1's STC without padding gives a video of 4 frames 2 x 4 x 4 = 32
    # tokens (75 with `stc`), which shortens every training and evaluation sequence.
    connector: str = "stc_v35"
    learning_rate: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 1e-3))
    eval_limit: int | None = None
    eval_batch_size: int = 32  # EgoBench questions prefilled together (`exo2ego eval --batch-size`)
    # Per-module rates (`--vision_tower_lr`, `--mapping_lr`, ...) of a stage, over its `learning_rate`.
    module_learning_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    web_exo_per_take: int = 8  # web-exo clips rendered per take (`exo2ego data synth --web-exo-per-take`)
    language_steps: int = 0  # text-only pretraining of the tiny LLM on EgoIT, Ego-ExoClip and web-exo text
    vision_steps: int = 0  # bag-of-words pretraining of the tiny vision towers on web-exo clips (exo2ego.tiny.vision)
    vision_samples: int = 1024  # web-exo clips decoded for it
    vision_learning_rate: float = 1e-2
    gate_probe: tuple[int, int, int] = (512, 200, 150)  # ego colour gate: training clips, held-out clips, steps
    pattern_probe_clips: tuple[int, int] = (400, 200)  # linear pattern probe on y, F(x), x: fitting, scored clips
    egoit_fraction: float = 1.0  # share of EgoIT stage 3 trains on
    # Which rows a fraction below 1 keeps: drawn at random with this seed (the same rows for every training seed), so
    # they spread over the takes; None keeps the first rows, the first takes only.
    egoit_subset_seed: int | None = 0


PLANS = {
    "full": DemoPlan(
        takes=200,
        steps={"init": 150, "stage1": 100, "stage2": 200, "stage3": 1000},
        # The LLM learns the world's language first (text only) and stays frozen until stage 3, as in the paper.
        # Stage 1 at a tenth of the init rate (Table 14). Stage 2 gives the ego tower and F more learning rate x steps
        # than stage 3 does (200 x 1.5e-3 = 0.3 against 1000 x 2e-4 = 0.2), as Table 14 gives stage 2 the larger share
        # of the exo stages: stage 2 is where they learn from the exo tower, stage 3 only adapts them, while its LoRA,
        # lm_head and connector keep the rate they need to learn the instructions (the per-module rate groups).
        # Stage 3 keeps its 1000 steps: with 600 or 800, `synthetic` stayed at 36-42% (seed 0, 75-token connector).
        # The other sizes are what lets the whole demo run in about 4 minutes on 2 cores (README "The demo").
        learning_rate={"init": 1e-3, "stage1": 1e-4, "stage2": 1.5e-3, "stage3": 1e-3},
        module_learning_rate={"stage3": {"vision_tower_lr": 2e-4, "mapping_lr": 2e-4}},
        language_steps=150,
        vision_steps=300,
        # Limited egocentric instructions (the paper's premise for the exo stages): a random 10% of EgoIT's rows,
        # about 23 epochs in stage 3.
        egoit_fraction=0.1,
    ),
    "quick": DemoPlan(
        takes=6,
        steps={"init": 4, "stage1": 4, "stage2": 4, "stage3": 6},
        batch_size=4,
        eval_limit=12,
        web_exo_per_take=4,
        language_steps=4,
        vision_steps=2,
        vision_samples=8,
        gate_probe=(8, 4, 2),
        pattern_probe_clips=(12, 8),
        egoit_fraction=0.5,
    ),
}
