"""`exo2ego demo`: the whole Exo2Ego pipeline on the embedded synthetic world, ending in a Hub-ready release.

Phases, each through the command or script a user runs on real data (only the sizes and the source differ):

1. `exo2ego data synth` renders the synthetic Ego-Exo world in the Ego-Exo4D layout, with EgoIT, EgoBench,
   EgoClip-style ego captions and a web-exo corpus (separate scenes whose captions name the objects' patterns, the
   world's exo-only knowledge);
2. `exo2ego data ego-exoclip` builds Ego-ExoClip from it (paper eq. 1), `exo2ego data pretrain` the init stage's web
   captions from the web-exo corpus;
3. `exo2ego tiny-model` builds a tiny Exo2Ego with an offline tokenizer, its LLM pretrained on the world's text and
   both vision towers on the web-exo clips (one tower, copied, as both start from one CLIP in the paper), and
   measures what that tower reads in each view;
4. the gates: the pretrained tower reads the pattern on the world's exo views and not on its ego views (the domain
   gap is real), and a tower trained on ego frames reads their colours (`gates.json`);
5. `train/init.py`, `stage1.py`, `stage2.py`, `stage3.py` (what `accelerate launch` runs) train the initialization
   (web captions for the exo tower, EgoClip-style captions for the ego tower) and the three stages, each from the
   previous stage's folder, on `train/configs/tiny_*.yaml` with the plan's step counts and rates;
6. `exo2ego eval` scores both EgoBench splits, `synthetic` (what ego-side text names) and `synthetic_pattern` (the
   exo-only pattern, asked about ego video), for the untrained model and after every stage;
7. `report.md` with the gates, loss curves (VTG, KL, CCL) and accuracy per stage and split beside each split's
   text-only baseline, then `<out>/release/` (ego-only model, processor, model card, results), reloaded in a fresh
   process with `trust_remote_code=True` to answer a question about a held-out ego clip.

EgoBench is scored with `option_loglik` (mean log-probability of each option's text after the question, one cached
prefill per question): it needs the model to describe what the video shows, not to point at option letters, which
a tiny model trained for minutes does not learn (`letter_logprob` stays at chance). The prompt variant is `none` (no
system prompt): the tiny LLM knows only the world's text (EgoIT, Ego-ExoClip, the web-exo captions), and the default
system prompt is made of words it never saw in training.

Before the pipeline, `exo2ego tiny-model --language-*` pretrains the tiny LLM on the text of EgoIT, Ego-ExoClip and the
web-exo captions (`exo2ego.tiny.language`), so that, as Mistral in the paper, it knows the world's language (the
pattern words included, as Mistral has read the web) and stays frozen in init and stages 1-2. README "The demo" has
the measured seeds.

Modules: `plans` (the stages, evaluation points, EgoBench splits and the sizes of the `full` run, which `exo2ego
ablate` runs too, and of the `quick` one), `gates` (the world's gates and their measurement), `pipeline`
(:class:`~exo2ego.demo.pipeline.Demo`, which runs and times each phase; `exo2ego ablate` runs its arms through it
too), `report` (plots, `report.md`, the learning targets and the printed summary), `release` (the release folder and
its reload in a fresh process) and `cli` (the command).
"""
