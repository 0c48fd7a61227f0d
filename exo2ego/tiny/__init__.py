"""The tiny models: random-weight Exo2Ego checkpoints at toy sizes, built offline, for the CPU demo, tests and
benchmarks, and the short pretraining that gives them the premises of the paper's base models.

The tiny models have one index, here:

- `exo2ego_base.tiny` (a lower layer, so that tests, benchmarks and every other layer can build one): the toy
  configuration, the offline BPE tokenizer, the processor and `build_tiny_model`;
- `checkpoint`: `save_tiny_model`, a tiny checkpoint written as a folder that loads with `AutoModel` and
  `AutoProcessor`, optionally after the pretraining below;
- `language`: text-only pretraining of the tiny LLM on the synthetic world's text (Mistral's premise);
- `vision`: text-supervised pretraining of the tiny vision towers on captioned clips, and the probes of what a
  tower reads in each view (CLIP's premise; the demo's gates);
- `cli`: the `exo2ego tiny-model` command.
"""

from exo2ego.tiny.checkpoint import VISION_REPORT, save_tiny_model

__all__ = ["VISION_REPORT", "save_tiny_model"]
