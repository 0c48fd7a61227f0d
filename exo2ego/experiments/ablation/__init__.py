"""`exo2ego ablate`: the paper's ablations (Tables 7-8, 15) as a pre-registered experiment on the synthetic world.

Design. Every seed s has its own world (world seed s) and training seed s, and every arm of seed s sees that world
and that data order: arms are paired with the full pipeline seed by seed. An arm is the full pipeline (the demo's
`full` plan: init -> stage 1 -> stage 2 -> stage 3 on 10% of EgoIT) with one change
(:data:`~exo2ego.experiments.ablation.design.ARMS`). Runs share their common prefixes (per seed one world, one base
model and, per exo corpus, one init and one stage 1; one stage 2 per stage-2 setting; arms that differ only at test
time reuse the trained model), finished folders are reused, so an interrupted ablation resumes, and `--jobs` runs
seeds side by side.

Statistics (`eval.seed_statistics`), per EgoBench split and arm, on the difference arm - full: the two-level
bootstrap (seeds, then held-out takes within each seed) as the primary 95% interval, the paired t-interval over
per-seed differences, the exact sign-flip p-value over seeds and the smallest effect the design detects at 80% power.
A question-level interval appears only labelled as within-seed.

Pre-registration. The hypotheses (:data:`~exo2ego.experiments.ablation.design.HYPOTHESES`) and their decision rules
are written to `preregistration.md` before the first run; the report quotes that file and gives each hypothesis a
verdict (held, failed, undecided). A folder whose pre-registration differs from the current one is refused, never
rewritten.

Mechanism. After stage 2 and stage 3 of every trained arm: a linear probe of the pattern fitted on y and scored on
F(x) and x (`exo2ego.experiments.mapping_probe.pattern_probe`), and the connector distances with another take's exo
clip as the other-scene baseline (`exo2ego.experiments.mapping_probe.probe_folder`).

Outputs in `--out`: `preregistration.md`, `results.json`, `report.md` and `ablation.png`.

Modules: `design` (the arms, the hypotheses and their verdicts, the plans, the pre-registration), `runs`
(:class:`~exo2ego.experiments.ablation.runs.SeedRuns`: one seed's arms trained and evaluated through the demo's
pipeline, and the mechanism probes), `report` (the statistics over seeds, the plot and `report.md`) and `cli` (the
command: its arguments and its run from the pre-registration to the report).
"""
