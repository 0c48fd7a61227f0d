"""The ablation's runs: per seed, the world, the base model and every arm trained (sharing common prefixes) and
evaluated inside a :class:`~exo2ego.demo.pipeline.Demo` of that seed, then the mechanism probes; finished folders
are reused, so an interrupted ablation resumes."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import torch

from datasets_scripts.synthetic import web_exo
from eval.config import RESULTS_NAME
from exo2ego.demo.pipeline import Demo
from exo2ego.experiments.ablation.design import ARMS_BY_NAME, NO_PATTERN_CORPUS, Arm
from exo2ego.experiments.mapping_probe import paired_pattern_clips, pattern_probe, probe_folder
from exo2ego_base.provenance import write_json_atomic
from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor
from train.stage_folder import STAGE_METADATA_NAME


def finished(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def save_unmapped(model_dir: Path, out: Path) -> Path:
    """Copy the checkpoint in `model_dir` to `out` with F set to the identity, so the LLM reads c(x) where it read
    c(F(x)). F is residual (x + head(...)), so zeroing its last layer makes it the identity exactly."""
    model = Exo2EgoForConditionalGeneration.from_pretrained(model_dir)
    if not model.config.mapping_residual:
        raise ValueError(f"{model_dir}: F is not residual (mapping_residual=False); zeroing a layer is not identity")
    mapping = model.model.ego_to_exo
    last = mapping.head[-1] if hasattr(mapping, "head") else mapping.fc2
    with torch.no_grad():
        for parameter in last.parameters():
            parameter.zero_()
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    Exo2EgoProcessor.from_pretrained(model_dir).save_pretrained(staging)
    shutil.copy(model_dir / STAGE_METADATA_NAME, staging / STAGE_METADATA_NAME)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


class SeedRuns:
    """Trains (or reuses) and evaluates every arm of one seed in `out/seed<S>`, inside a `Demo` of that seed."""

    def __init__(self, demo):
        self.demo, self.models, self.evals = demo, demo.models, demo.evals
        self.corpora = {"web": demo.web_captions, NO_PATTERN_CORPUS: demo.out / "web-captions-no-pattern"}

    def build(self) -> None:
        """The seed's world, Ego-ExoClip, both exo corpora and the base model (each skipped when finished)."""
        demo = self.demo
        built = (demo.world / "egobench", demo.clips / "README.md", demo.web_captions / "README.md")
        if not all(path.exists() for path in built):
            for folder in (demo.world, demo.clips, demo.web_captions):
                shutil.rmtree(folder, ignore_errors=True)
            demo.build_data()
        stripped = self.corpora[NO_PATTERN_CORPUS]
        if not finished(stripped, "README.md"):
            self.write_stripped_corpus(stripped)
        if not finished(self.models / "untrained", "tokenizer.json"):  # tiny-model renames its folder into place whole
            shutil.rmtree(self.models / "untrained", ignore_errors=True)
            demo.build_model()

    def write_stripped_corpus(self, out: Path) -> None:
        """`exo2ego data pretrain` on the web-exo annotations with the pattern words removed (same videos)."""
        web_root = self.demo.world / web_exo.FOLDER
        annotations = self.demo.out / "web_exo_no_pattern.json"
        records = json.loads((web_root / web_exo.ANNOTATIONS).read_text())
        write_json_atomic(annotations, web_exo.without_pattern_words(records))
        shutil.rmtree(out, ignore_errors=True)
        self.demo.cli(
            "web captions without pattern words",
            "data",
            "pretrain",
            "--root",
            f"videollama2={web_root}",
            "--annotations",
            f"videollama2={annotations}",
            "--out",
            str(out),
        )

    def train(self, stage: str, start: Path, output: Path, extra: tuple[str, ...] = (), corpus: str = "web") -> Path:
        if not finished(output, STAGE_METADATA_NAME):
            shutil.rmtree(output, ignore_errors=True)  # an interrupted run: start it again
            self.demo.web_captions = self.corpora[corpus]  # what init reads for the exo tower
            self.demo.train(stage, start, output=output, extra=extra, phase=f"{output.name}")
        return output

    def evaluate(self, model: Path, name: str) -> Path:
        out = self.evals / name
        if not finished(out, RESULTS_NAME):
            shutil.rmtree(out, ignore_errors=True)
            self.demo.evaluate(name, model=model, out=out)
        return out

    def run(self, arms: tuple[Arm, ...]) -> dict:
        """Every arm of this seed: `{"evals": {arm: EgoBench folder}, "stage2": {arm: folder}, "stage3": {arm:
        folder}}`, the last two for the arms that trained their own stage 3 after a stage 2."""
        self.build()
        base, prefixes, stage2_runs, stage3_runs = self.models / "untrained", {}, {}, {}
        result = {"evals": {}, "stage2": {}, "stage3": {}}
        for arm in arms:
            suffix = "" if arm.exo_corpus == "web" else "_no_pattern"
            if arm.exo_corpus not in prefixes:
                init = self.train("init", base, self.models / f"init{suffix}", corpus=arm.exo_corpus)
                prefixes[arm.exo_corpus] = init
            init = prefixes[arm.exo_corpus]
            if arm.skip_stages_1_2:
                start, stage3_extra = init, ("--allow_stage_mismatch", "true")
            else:
                if arm.stage2_key() not in stage2_runs:
                    stage1 = self.train("stage1", init, self.models / f"stage1{suffix}")
                    stage2_runs[arm.stage2_key()] = self.train(
                        "stage2", stage1, self.models / f"stage2_{arm.name}", arm.stage2
                    )
                start, stage3_extra = stage2_runs[arm.stage2_key()], ()
            if arm.stage3_key() not in stage3_runs:
                output = self.models / f"stage3_{arm.name}"
                stage3_runs[arm.stage3_key()] = self.train("stage3", start, output, stage3_extra + arm.stage3)
                if not arm.skip_stages_1_2:  # the mechanism probes read each trained stage 2 and stage 3 once
                    result["stage2"][arm.name], result["stage3"][arm.name] = start, stage3_runs[arm.stage3_key()]
            model = stage3_runs[arm.stage3_key()]
            if arm.unmapped_at_test:
                unmapped = self.models / f"{model.name}_unmapped"
                model = unmapped if finished(unmapped, STAGE_METADATA_NAME) else save_unmapped(model, unmapped)
            result["evals"][arm.name] = self.evaluate(model, arm.name)
        return result

    def mechanism(self, result: dict) -> dict:
        """Per trained arm, after stage 2 and stage 3: the pattern probe and the connector distances."""
        out = self.demo.out / "mechanism.json"
        if out.is_file():
            return json.loads(out.read_text())
        plan, demo = self.demo.plan, self.demo
        train, heldout = plan.pattern_probe_clips
        processor = Exo2EgoProcessor.from_pretrained(self.models / "untrained")
        clips = paired_pattern_clips(processor, str(demo.world), plan.frames, train + heldout, demo.seed)
        probes = {}
        for arm, stage2 in result["stage2"].items():
            probes[arm] = {
                stage: {
                    "pattern_probe": pattern_probe(folder, clips, train),
                    "distances": probe_folder(folder, str(demo.clips), str(demo.world), plan.frames, seed=demo.seed),
                }
                for stage, folder in (("stage2", stage2), ("stage3", result["stage3"][arm]))
            }
        write_json_atomic(out, probes)
        return probes


def run_seed(out: str, demo_plan, seed: int, arm_names: tuple[str, ...], threads: int) -> dict:
    """One seed's whole work (a `--jobs` worker process): its log goes to `seed<S>/ablate.log`."""
    torch.set_num_threads(threads)
    runs = SeedRuns(Demo(Path(out) / f"seed{seed}", demo_plan, seed))
    runs.demo.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (
        open(runs.demo.out / "ablate.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = runs.run(tuple(ARMS_BY_NAME[name] for name in arm_names))
        mechanism = runs.mechanism(result)
    return {
        "evals": {arm: str(path) for arm, path in result["evals"].items()},
        "mechanism": mechanism,
        "timings_sec": {phase: round(seconds, 1) for phase, seconds in runs.demo.timings.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
