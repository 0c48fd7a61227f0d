"""The experiments: research measurements on the synthetic world that ask whether Exo2Ego's mechanism does what the
paper claims, run through the same pipeline as the demo (:class:`~exo2ego.demo.pipeline.Demo`).

- `ablation`: the `exo2ego ablate` command, the paper's ablations (Tables 7-8, 15) as a pre-registered experiment
  over seeds, with its arms, runs, statistics and report;
- `mapping_probe`: what the ego->exo mapping F learned, through the model's own connector (connector distances) and
  a linear probe of the world's exo-only pattern; the demo's report and the ablation's mechanism section read it.
"""
