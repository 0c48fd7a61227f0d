"""Example videos from the synthetic Ego-Exo world, for the Gradio app, the server tests and benchmarks.

Each example is the egocentric view of one held-out synthetic take with one of its EgoBench questions and the
action's time window, so the app's examples ask what the model was evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets_scripts.synthetic.qa import take_questions
from datasets_scripts.synthetic.render import EGO_CAMERA, VideoWriter, render_views, scaled
from datasets_scripts.synthetic.world import WorldConfig, plan_world


@dataclass(frozen=True)
class Example:
    """One example: an ego video file, a question about it and the window [start_sec, end_sec] it is about."""

    video: str
    question: str
    start_sec: float
    end_sec: float


def write_synthetic_examples(out_dir: str | Path, count: int = 3, seed: int = 0, height: int = 128) -> list[Example]:
    """Render the ego view of `count` held-out synthetic takes into `out_dir` (`take_<i>.mp4`); reuse existing files.

    Same seed, same videos and questions. Rendering a take costs about a second of CPU.
    """
    config = WorldConfig(num_takes=count + 2, seed=seed, heldout_fraction=1.0)
    heldout = [plan for plan in plan_world(config)[0] if plan.split != "train"][:count]
    camera = scaled(EGO_CAMERA, height)
    out_dir = Path(out_dir)
    examples = []
    for index, plan in enumerate(heldout):
        path = out_dir / f"take_{index}.mp4"
        if not path.is_file():
            writer = VideoWriter(path, camera.width, camera.height, config.fps)
            try:
                for (frame,) in render_views(plan.script, [camera], config.fps, plan.sway_phase):
                    writer.write(frame)
            except BaseException:
                writer.abort()
                raise
            writer.close()
        question = take_questions(plan, seed)[0]
        examples.append(Example(str(path), question.question, question.start_sec, question.end_sec))
    return examples
