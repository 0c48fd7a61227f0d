"""Bad inputs and interruptions of the data builders and of eval (issue 14), one table row per case.

Every row is a user mistake that once gave a silently wrong result, lost data or a raw traceback. A new bad
input is one more row: CLI rows give the arguments and the message the user must see (exit code 2, no traceback,
nothing written), resume rows say what changes between two eval runs into one folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

# Fixture writers of the sibling test modules (pytest puts tests/ on the import path).
from test_egobench import write_egoschema, write_qaego4d, write_vlnqa
from test_egoclip import write_egoclip
from test_egoit import write_egoexolearn, write_egotimeqa
from test_pretrain_data import GOOD_RECORDS, turns, write_source

from datasets_scripts.hub_export import load_folder, parquet_relpath, write_parquet_table
from datasets_scripts.schema import EGOBENCH_FEATURES
from eval.config import EvalConfig
from eval.data import available_configs
from eval.runner import RunConfigError, evaluate, prepare_tasks, task_selection_message
from eval.toy import toy_tables, write_toy_egobench
from exo2ego.cli import main
from exo2ego_base.provenance import LOCK_NAME

FAST = dict(bootstrap_resamples=20, max_new_tokens=4, open_max_new_tokens=4)


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_egobench(tmp_path_factory.mktemp("toy") / "egobench")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from exo2ego.tiny import save_tiny_model

    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_tiny_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def egoexo(tmp_path_factory):
    """A 3-take synthetic Ego-Exo4D download (no QA tables)."""
    from datasets_scripts.synthetic import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("egoexo") / "root"
    generate_world(root, WorldConfig(num_takes=3, seed=2, actions_per_take=2, write_qa=False))
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """EgoBench (egoschema, qaego4d, vlnqa) and EgoIT (egotimeqa) sources as released."""
    base = tmp_path_factory.mktemp("sources")
    roots = {
        "egoschema": base / "egoschema",
        "qaego4d": base / "qaego4d",
        "vlnqa": base / "vlnqa",
        "egotimeqa": base / "egotimeqa",
        "egoexolearn": base / "egoexolearn",
    }
    write_egoschema(roots["egoschema"])
    write_qaego4d(roots["qaego4d"])
    write_vlnqa(roots["vlnqa"])
    write_egotimeqa(roots["egotimeqa"])
    write_egoexolearn(roots["egoexolearn"])
    return roots


def _synthetic_rows(mutate=None) -> list[dict]:
    tables, _ = toy_tables(["videos/clip0.mp4", "videos/clip1.mp4"])
    rows = [dict(row) for row in tables["synthetic"]["test"]]
    if mutate:
        mutate(rows)
    return rows


def _folder_with_synthetic(folder: Path, rows: list[dict], features=None) -> Path:
    """A toy EgoBench folder whose ``synthetic`` config holds ``rows`` (features inferred unless given)."""
    write_toy_egobench(folder)
    shutil.rmtree(folder / "data" / "synthetic")
    if not rows:  # written directly: the builders' writer leaves empty splits out, another tool may not
        rows = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    write_parquet_table(folder / parquet_relpath("synthetic", "test"), rows, features)
    return folder


def _copy_with(tmp_path: Path, source: Path, edit) -> Path:
    root = tmp_path / source.name
    shutil.copytree(source, root)
    edit(root)
    return root


def _edit_json(path: Path, change) -> None:
    payload = json.loads(path.read_text())
    path.write_text(json.dumps(change(payload)))


def _results_file(folder: Path, edit=lambda results: None, name: str = "results.json") -> Path:
    """A small results.json as `exo2ego eval` writes it (one task, one metric), after `edit(results)`."""
    metric = {"value": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 10, "unit": "percent", "label": "Accuracy"}
    results = {
        "prompt": {"name": "default", "sha256": "0" * 64},
        "scorer": "letter_logprob",
        "tasks": {
            "synthetic": {"display_name": "Synthetic", "headline": ["accuracy"], "metrics": {"accuracy": metric}}
        },
    }
    edit(results)
    path = folder / name
    path.write_text(json.dumps(results))
    return path


def _metric(**change):
    return lambda results: results["tasks"]["synthetic"]["metrics"]["accuracy"].update(change)


class Context:
    """What a row's argv builder gets: the shared fixtures and this row's temporary folder."""

    def __init__(self, tmp_path, toy, saved_model, egoexo, sources):
        self.tmp, self.toy, self.model, self.egoexo, self.sources = tmp_path, toy, saved_model, egoexo, sources
        self.out = tmp_path / "out"

    def eval(self, *extra, model=None, data=None, out=None, tasks="synthetic"):
        return [
            "eval",
            "--model",
            str(model or self.model),
            "--data",
            str(data or self.toy),
            "--tasks",
            tasks,
            "--out",
            str(out or self.out),
            "--bootstrap-resamples",
            "20",
            "--no-progress",
            *extra,
        ]

    def egobench(self, *extra, roots=None, out=None):
        roots = roots or {name: self.sources[name] for name in ("egoschema",)}
        return [
            "data",
            "egobench",
            *[f"--root={name}={path}" for name, path in roots.items()],
            "--out",
            str(out or self.out),
            *extra,
        ]

    def egoexoclip(self, root, *extra, out=None):
        return ["data", "ego-exoclip", "--egoexo-root", str(root), "--out", str(out or self.out), *extra]

    def egoit(self, source, root, *extra, out=None):
        return ["data", "egoit", f"--root={source}={root}", "--out", str(out or self.out), *extra]

    def pretrain(self, records, *extra, out=None):
        root = self.tmp / "videollama2"
        write_source(root, records)
        return ["data", "pretrain", f"--root=videollama2={root}", "--out", str(out or self.out), *extra]

    def a_file(self) -> Path:
        path = self.tmp / "a_file.txt"
        path.write_text("not a folder\n")
        return path

    def folder_with(self, name: str, file_name: str) -> Path:
        folder = self.tmp / name
        folder.mkdir()
        (folder / file_name).write_text("{}")
        return folder


def _truncate_with_index_in_front(take_folder: Path) -> None:
    """Cut the ego video short after moving its index to the front (``faststart``): it still opens and its
    first frame decodes."""
    import av

    video = next(take_folder.glob("frame_aligned_videos/aria*.mp4"))
    remuxed = video.with_suffix(".faststart.mp4")
    with av.open(str(video)) as source, av.open(str(remuxed), "w", options={"movflags": "faststart"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = remuxed.read_bytes()
    remuxed.unlink()
    video.write_bytes(data[: int(len(data) * 0.8)])


def _truncate_first_take(root: Path) -> None:
    _truncate_with_index_in_front(sorted((root / "takes").iterdir())[0])


def _no_answer(root: Path) -> None:
    """Every VLN-QA answer is no candidate: every row is bad."""
    _edit_json(root / "json" / "egocentric_navigation.json", lambda rows: [{**r, "answer": "nowhere"} for r in rows])


def _set_relative_paths(root: Path, value: str) -> None:
    def change(takes):
        for take in takes:
            for camera, streams in take["frame_aligned_videos"].items():
                if camera.startswith("gp") and isinstance(streams, dict) and "0" in streams:
                    streams["0"]["relative_path"] = value
        return takes

    _edit_json(root / "takes.json", change)


def _takes_json_not_utf8(root) -> None:
    path = root / "takes.json"
    path.write_bytes(b"\xff\xfe" + path.read_bytes())


def _repeat_take_uid(root: Path) -> None:
    """The second take of takes.json gets the first one's take_uid."""
    _edit_json(
        root / "takes.json", lambda takes: [takes[0], {**takes[1], "take_uid": takes[0]["take_uid"]}, *takes[2:]]
    )


def _shorten(video: Path, keep: float = 0.4) -> None:
    """Keep the first `keep` of the video's packets: a complete, readable file that ends early."""
    import av

    short = video.with_suffix(".short.mp4")
    with av.open(str(video)) as source, av.open(str(short), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        limit = source.streams.video[0].duration * keep
        for packet in source.demux(source.streams.video[0]):
            if packet.pts is not None and packet.dts is not None and packet.pts < limit:
                packet.stream = stream
                target.mux(packet)
    short.replace(video)


def _shorten_an_exo_video_per_take(root: Path) -> None:
    for folder in (root / "takes").iterdir():
        _shorten(sorted(folder.glob("frame_aligned_videos/[cg]*.mp4"))[0])


def _video_end(path: Path) -> float:
    """Seconds until the end of the last frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def _skip_every_take(root: Path) -> None:
    for video in root.glob("takes/*/frame_aligned_videos/aria*.mp4"):
        video.unlink()


def _vlnqa_video(value: str):
    def edit(root: Path) -> None:
        _edit_json(root / "json" / "egocentric_navigation.json", lambda rows: [{**rows[0], "video": value}, rows[1]])

    return edit


def _egoexolearn_video_uid(value: str):
    def edit(root: Path) -> None:
        path = root / "annotations" / "fine_annotation_trainval_en.csv"
        path.write_text(path.read_text().replace("bee9d8dc-ac78-11ee-819f-80615f12b59e", value, 1))

    return edit


def _egotimeqa_video_id(value: str):
    def edit(root: Path) -> None:
        path = root / "data" / "unified" / "annotations.EgoTimeQA.json"
        _edit_json(path, lambda rows: [{**rows[0], "video_id": value}, rows[1]])

    return edit


# --------------------------------------------------------------------------------------------- CLI rows
# (id, argv of `exo2ego ...` built from the Context, regex the error line must match)
CLI_ROWS = [
    # ---- eval arguments
    (
        "eval-frames-0",
        lambda c: c.eval("--num-frames", "0"),
        r"num_frames \(--num-frames\) must be an integer >= 1, got 0",
    ),
    (
        "eval-chunk-size-0",
        lambda c: c.eval("--option-chunk-size", "0"),
        r"option_chunk_size \(--option-chunk-size\) .*got 0",
    ),
    ("eval-max-new-tokens-0", lambda c: c.eval("--max-new-tokens", "0"), r"max_new_tokens \(--max-new-tokens\)"),
    ("eval-open-max-new-tokens-0", lambda c: c.eval("--open-max-new-tokens", "0"), r"--open-max-new-tokens"),
    (
        "eval-decoded-cache-negative",
        lambda c: c.eval("--decoded-cache-mb", "-1"),
        r"decoded_cache_mb \(--decoded-cache-mb\) must be an integer >= 0 .*got -1",
    ),
    (
        "eval-bootstrap-0",
        lambda c: c.eval("--bootstrap-resamples", "0"),
        r"bootstrap_resamples \(--bootstrap-resamples\)",
    ),
    (
        "eval-model-relative-path-offline",
        lambda c: c.eval(model="nomodel"),
        r"--model nomodel: no such folder .*no Hub model of that id in the local cache",
    ),
    ("eval-out-is-a-file", lambda c: c.eval(out=c.a_file()), r"--out .*a_file\.txt is a file, not a run folder"),
    (
        "eval-out-under-a-file",
        lambda c: c.eval(out=c.a_file() / "run"),
        r"--out .*a_file\.txt/run lies under the file .*a_file\.txt, not a folder",
    ),
    ("eval-out-in-proc", lambda c: c.eval(out="/proc/exo2ego-eval"), r"--out /proc/exo2ego-eval cannot be created"),
    ("eval-out-is-a-dataset-folder", lambda c: c.eval(out=c.toy), r"is a built dataset folder \(build_info\.json\)"),
    ("eval-out-is-a-model-folder", lambda c: c.eval(out=c.model), r"is a model folder \(config\.json\)"),
    (  # a downloaded dataset: Hub pushes leave the folder's identity file out
        "eval-out-is-a-downloaded-dataset-folder",
        lambda c: c.eval("--overwrite", out=c.folder_with("downloaded", "build_info.json")),
        r"is a built dataset folder \(build_info\.json\)",
    ),
    (
        "eval-out-is-someone-elses-folder",
        lambda c: c.eval(out=c.folder_with("notes", "todo.txt")),
        r"--out .*notes is not empty \(todo\.txt\) and holds no eval run; .*--overwrite",
    ),
    (
        "eval-report-out-is-a-file",
        lambda c: ["eval-report", "--results", str(c.a_file()), "--out", str(c.a_file())],
        r"--out .*a_file\.txt is a file, not a folder",
    ),
    (
        "eval-report-results-missing",
        lambda c: ["eval-report", "--results", str(c.tmp / "nope.json"), "--out", str(c.out)],
        r"No such file or directory: .*nope\.json",
    ),
    (
        "eval-report-results-not-json",
        lambda c: ["eval-report", "--results", str(c.a_file()), "--out", str(c.out)],
        r"Expecting value: line 1 column 1",
    ),
    (
        "eval-report-results-without-tasks",
        lambda c: [
            "eval-report",
            "--results",
            str(_results_file(c.tmp, lambda r: r.pop("tasks"))),
            "--out",
            str(c.out),
        ],
        r"results\.json: key tasks is missing",
    ),
    (
        "eval-report-metric-is-a-string",
        lambda c: [
            "eval-report",
            "--results",
            str(_results_file(c.tmp, lambda r: r["tasks"]["synthetic"].update(metrics={"accuracy": "85.0"}))),
            "--out",
            str(c.out),
        ],
        r"results\.json: tasks\.synthetic\.metrics\.accuracy must be an object, got '85\.0'",
    ),
    (
        "eval-report-metric-value-is-a-string",
        lambda c: ["eval-report", "--results", str(_results_file(c.tmp, _metric(value="85.0"))), "--out", str(c.out)],
        r"results\.json: tasks\.synthetic\.metrics\.accuracy\.value must be a number, got '85\.0'",
    ),
    (
        "eval-report-compare-without-tasks",
        lambda c: [
            "eval-report",
            "--results",
            str(_results_file(c.tmp)),
            "--compare",
            str(_results_file(c.tmp, lambda r: r.pop("tasks"), "baseline.json")),
            "--out",
            str(c.out),
        ],
        r"baseline\.json: key tasks is missing",
    ),
    (
        "model-card-results-without-metrics",
        lambda c: [
            "model-card",
            "--results",
            str(_results_file(c.tmp, lambda r: r["tasks"]["synthetic"].pop("metrics"))),
            "--out",
            str(c.tmp / "README.md"),
        ],
        r"exo2ego model-card: error: .*results\.json: key tasks\.synthetic\.metrics is missing",
    ),
    (
        "model-card-metric-value-is-a-string",
        lambda c: [
            "model-card",
            "--results",
            str(_results_file(c.tmp, _metric(value="85.0"))),
            "--out",
            str(c.tmp / "README.md"),
        ],
        r"results\.json: tasks\.synthetic\.metrics\.accuracy\.value must be a number, got '85\.0'",
    ),
    (
        "model-card-headline-not-a-metric",
        lambda c: [
            "model-card",
            "--results",
            str(_results_file(c.tmp, lambda r: r["tasks"]["synthetic"].update(headline=["accuracy_closed"]))),
            "--out",
            str(c.tmp / "README.md"),
        ],
        r"results\.json: tasks\.synthetic\.headline names 'accuracy_closed', which is not in its metrics",
    ),
    # ---- eval data
    (
        "eval-answer-idx-as-strings",
        lambda c: c.eval(
            data=_folder_with_synthetic(
                c.tmp / "d",
                _synthetic_rows(lambda rows: [row.update(answer_idx=str(row["answer_idx"])) for row in rows]),
            )
        ),
        r"config 'synthetic' .*field 'answer_idx' holds string values, the EgoBench schema stores int",
    ),
    (
        "eval-start-sec-as-strings",
        lambda c: c.eval(
            data=_folder_with_synthetic(
                c.tmp / "d",
                _synthetic_rows(lambda rows: [row.update(start_sec=str(row["start_sec"])) for row in rows]),
            )
        ),
        r"field 'start_sec' holds string values, the EgoBench schema stores float",
    ),
    (
        "eval-empty-config",
        lambda c: c.eval(data=_folder_with_synthetic(c.tmp / "d", [], EGOBENCH_FEATURES)),
        r"config 'synthetic' .*: no rows \(an empty config\)",
    ),
    (
        "eval-task-not-built",
        lambda c: c.eval(tasks="egotaskqa"),
        r"task 'egotaskqa' is not in the EgoBench folder: looked for config egotaskqa_direct\+egotaskqa_indirect",
    ),
    # ---- builders: --out
    ("egobench-out-is-a-file", lambda c: c.egobench(out=c.a_file()), r"a_file\.txt is a file, not a folder"),
    ("ego-exoclip-out-is-a-file", lambda c: c.egoexoclip(c.egoexo, out=c.a_file()), r"a_file\.txt is a file"),
    ("egoit-out-is-a-file", lambda c: c.egoit("egotimeqa", c.sources["egotimeqa"], out=c.a_file()), r"is a file"),
    ("synth-out-is-a-file", lambda c: ["data", "synth", "--out", str(c.a_file()), "--takes", "3"], r"is a file"),
    (
        "egobench-out-is-an-eval-folder",
        lambda c: c.egobench(out=c.folder_with("run", "run_config.json")),
        r"run already exists \(not empty\); .*pass overwrite=True \(CLI: --overwrite\)",
    ),
    (
        "egobench-out-is-a-file-even-with-overwrite",
        lambda c: c.egobench("--overwrite", out=c.a_file()),
        r"is a file, not a folder",
    ),
    # ---- builders: rows
    (
        "egoschema-questions-json-is-an-object",
        lambda c: c.egobench(
            roots={
                "egoschema": _copy_with(
                    c.tmp, c.sources["egoschema"], lambda root: (root / "questions.json").write_text("{}")
                )
            }
        ),
        r"questions\.json: row \(json\): field '\(top level\)': expected the list of questions, got dict",
    ),
    (
        "egoschema-questions-json-is-empty",
        lambda c: c.egobench(
            roots={
                "egoschema": _copy_with(
                    c.tmp, c.sources["egoschema"], lambda root: (root / "questions.json").write_text("[]")
                )
            }
        ),
        r"egoschema: config egoschema_full would have no rows .*the source lists nothing",
    ),
    (
        "egobench-every-row-skipped",
        lambda c: c.egobench("--skip-bad-rows", roots={"vlnqa": _copy_with(c.tmp, c.sources["vlnqa"], _no_answer)}),
        r"vlnqa: config vlnqa would have no rows .*2 bad rows skipped",
    ),
    (
        "vlnqa-video-climbs-out",
        lambda c: c.egobench(
            roots={"vlnqa": _copy_with(c.tmp, c.sources["vlnqa"], _vlnqa_video("../../../secret.mp4"))}
        ),
        r"egocentric_navigation\.json: row 0: field 'video': "
        r".*'video/vlnqa/\.\./\.\./\.\./secret\.mp4' leaves its root",
    ),
    (
        "egoit-video-absolute",
        lambda c: c.egoit(
            "egoexolearn", _copy_with(c.tmp, c.sources["egoexolearn"], _egoexolearn_video_uid("/etc/passwd"))
        ),
        r"egoexolearn/a-001: video path '/etc/passwd\.mp4' leaves its root",
    ),
    (
        "egoit-video-climbs-out",
        lambda c: c.egoit(
            "egotimeqa", _copy_with(c.tmp, c.sources["egotimeqa"], _egotimeqa_video_id("../../../../etc/passwd"))
        ),
        r"egotimeqa/.*: video path 'v1/clips/\.\./\.\./\.\./\.\./etc/passwd\.mp4' leaves its root",
    ),
    (
        "ego-exoclip-relative-path-climbs-out",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, lambda root: _set_relative_paths(root, "../../../etc/x"))),
        r"takes\.json: row .*: field 'root_dir / frame_aligned_videos\.gp\d+\.relative_path': .*leaves its root",
    ),
    (
        "ego-exoclip-truncated-video-with-index-in-front",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, _truncate_first_take)),
        r"unreadable video: .*/frame_aligned_videos/aria[\w-]*\.mp4",
    ),
    (
        "ego-exoclip-every-take-skipped",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, _skip_every_take), "--skip-bad-rows"),
        r"Ego-ExoClip: no take of .* is left to build \(takes dropped by reason: \{'missing_video': 2, ",
    ),
    (
        "ego-exoclip-take-uid-twice",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, _repeat_take_uid)),
        r"takes\.json: row 1 \(\w+\): field 'take_uid': '[\w-]+' is also the take_uid of row 0 \(\w+\)",
    ),
    *(
        (
            f"synth-{flag.strip('-')}-{value}",
            lambda c, flag=flag, value=value: ["data", "synth", "--out", str(c.tmp / "world"), flag, value],
            rf"invalid world settings: {name}={value}",
        )
        for flag, value, name in (
            ("--fps", "0", "fps"),
            ("--fps", "-5", "fps"),
            ("--height", "0", "height"),
            ("--actions-per-take", "0", "actions_per_take"),
            ("--heldout-fraction", "1.5", "heldout_fraction"),
        )
    ),
    (
        "ego-exoclip-takes-json-not-utf8",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, _takes_json_not_utf8)),
        r"takes\.json is not UTF-8 text \(byte 0xff at offset 0\)",
    ),
    (
        "pretrain-image-key-holds-a-video",
        lambda c: c.pretrain([*GOOD_RECORDS, {"id": 9, "image": "clips/x.mp4", "conversations": turns("<image>")}]),
        r"pretrain\.json: row 3: field 'image': 'clips/x\.mp4' has a video file suffix",
    ),
]


@pytest.mark.parametrize("build_argv, message", [row[1:] for row in CLI_ROWS], ids=[row[0] for row in CLI_ROWS])
def test_bad_input_is_refused_with_a_clear_message(
    tmp_path, toy, saved_model, egoexo, sources, capsys, build_argv, message
):
    context = Context(tmp_path, toy, saved_model, egoexo, sources)
    argv = build_argv(context)
    out = Path(argv[argv.index("--out") + 1])
    before = sorted(path.name for path in out.iterdir()) if out.is_dir() else None
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    error_lines = [line for line in error.splitlines() if "error:" in line]  # progress bars may come before
    assert len(error_lines) == 1 and re.search(message, error_lines[0]), error
    # Nothing was written: the folder is as it was (or still absent), and no run was recorded.
    assert (sorted(path.name for path in out.iterdir()) if out.is_dir() else None) == before


# Rows that a user may ask to skip: with --skip-bad-rows they are counted, not built.
SKIPPABLE_ROWS = [
    ("vlnqa-video-climbs-out", "vlnqa", _vlnqa_video("../../../x.mp4"), "vlnqa/video", 1),
    ("egoit-video-absolute", "egoexolearn", _egoexolearn_video_uid("/etc/passwd"), "egoexolearn/video", 1),
    ("egoit-video-climbs-out", "egotimeqa", _egotimeqa_video_id("../../x"), "egotimeqa/video", 1),
]


@pytest.mark.parametrize(
    "source, edit, counted_as, rows_left", [row[1:] for row in SKIPPABLE_ROWS], ids=[row[0] for row in SKIPPABLE_ROWS]
)
def test_paths_outside_the_root_are_counted_when_skipping(tmp_path, sources, source, edit, counted_as, rows_left):
    root = _copy_with(tmp_path, sources[source], edit)
    out = tmp_path / "out"
    egoit = source in ("egotimeqa", "egoexolearn")
    command = [
        "data",
        "egoit" if egoit else "egobench",
        f"--root={source}={root}",
        "--out",
        str(out),
        "--skip-bad-rows",
    ]
    assert main(command) == 0
    info = json.loads((out / "build_info.json").read_text())
    assert info["skips"]["by_source_field"] == {counted_as: 1}
    rows = load_folder(out, source, split="train" if egoit else "test")
    assert len(rows) == rows_left
    assert all(".." not in row["video"] and not row["video"].startswith("/") for row in rows)


def _clips_end_inside_their_videos(c: Context, out: Path) -> None:
    info = json.loads((out / "build_info.json").read_text())
    assert info["skips"]["narrations/window_outside_video"] >= 1
    root = c.tmp / c.egoexo.name
    for clip in load_folder(out, "clips", split="train"):
        assert all(clip["end_sec"] <= _video_end(root / video) for video in (clip["ego_video"], *clip["exo_videos"]))


def _image_row_skipped(c: Context, out: Path) -> None:
    info = json.loads((out / "build_info.json").read_text())
    assert info["skips"]["by_source_field"] == {"videollama2/image": 1} and info["counts"]["captions"] == 3


# Inputs a build goes on with, leaving out and counting what is wrong: (id, argv, check of the build)
COUNTED_SKIP_ROWS = [
    (
        "ego-exoclip-exo-video-shorter-than-its-take",
        lambda c: c.egoexoclip(_copy_with(c.tmp, c.egoexo, _shorten_an_exo_video_per_take)),
        _clips_end_inside_their_videos,
    ),
    (
        "pretrain-image-key-holds-a-video",
        lambda c: c.pretrain(
            [*GOOD_RECORDS, {"id": 9, "image": "x.mp4", "conversations": turns()}], "--skip-bad-rows"
        ),
        _image_row_skipped,
    ),
]


@pytest.mark.parametrize(
    "build_argv, check", [row[1:] for row in COUNTED_SKIP_ROWS], ids=[row[0] for row in COUNTED_SKIP_ROWS]
)
def test_bad_source_rows_are_counted_skips_never_kept(tmp_path, toy, saved_model, egoexo, sources, build_argv, check):
    context = Context(tmp_path, toy, saved_model, egoexo, sources)
    assert main(build_argv(context)) == 0
    check(context, context.out)


# ---- builders: an --out that is, lies inside or contains an input, or links to it: refused, the input untouched
def _write_data_input(c: Context, command: str, root: Path) -> list[str]:
    """Write `command`'s input at `root`; return the command line up to --out."""
    if command == "ego-exoclip":
        shutil.copytree(c.egoexo, root)
        return ["data", "ego-exoclip", "--egoexo-root", str(root)]
    if command == "egoit":
        write_egotimeqa(root)
        return ["data", "egoit", f"--root=egotimeqa={root}"]
    if command == "egobench":
        write_egoschema(root)
        return ["data", "egobench", f"--root=egoschema={root}"]
    if command == "egoclip":
        write_egoclip(root)
        return ["data", "egoclip", f"--root=egoclip={root}"]
    write_source(root, GOOD_RECORDS)
    return ["data", "pretrain", f"--root=videollama2={root}"]


def _link_to(root: Path) -> Path:
    link = root.parent.parent / "link"
    link.symlink_to(root, target_is_directory=True)
    return link


# where --out goes relative to the input root: (placement, out, relation named in the error)
PLACEMENTS = {
    "at": (lambda root: root, "is"),
    "inside": (lambda root: root / "built", "lies inside"),
    "above": (lambda root: root.parent, "contains"),
    "link-to": (_link_to, "is"),
}
DATA_LOSS_ROWS = [
    (command, placement, overwrite)
    for command in ("ego-exoclip", "egoit", "egobench", "egoclip", "pretrain")
    for placement in ("at", "inside", "above")
    for overwrite in (False, True)
] + [("egoit", "link-to", True)]


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    "command, placement, overwrite",
    DATA_LOSS_ROWS,
    ids=[
        f"{command}-out-{placement}-input{'-overwrite' if overwrite else ''}"
        for command, placement, overwrite in DATA_LOSS_ROWS
    ],
)
def test_an_out_at_inside_or_above_the_input_is_refused_and_the_input_kept(
    tmp_path, toy, saved_model, egoexo, sources, capsys, command, placement, overwrite
):
    root = tmp_path / "above" / "input"
    argv = _write_data_input(Context(tmp_path, toy, saved_model, egoexo, sources), command, root)
    place, relation = PLACEMENTS[placement]
    out = place(root)
    before = _file_hashes(tmp_path)
    assert main([*argv, "--out", str(out), *(["--overwrite"] if overwrite else [])]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    message = rf"error: output {re.escape(str(out))} {relation} the input folder {re.escape(str(root))}: "
    assert re.search(message + "writing there could destroy the input", error), error
    assert _file_hashes(tmp_path) == before


def test_ego_exoclip_keeps_a_take_whose_video_is_complete(tmp_path, egoexo):
    """The end-of-file check passes the world's own (complete) videos: one truncated take is skipped, not all."""
    assert main(["data", "ego-exoclip", "--egoexo-root", str(egoexo), "--out", str(tmp_path / "clean")]) == 0
    clean = json.loads((tmp_path / "clean" / "build_info.json").read_text())
    root = _copy_with(tmp_path, egoexo, _truncate_first_take)
    out = tmp_path / "out"
    assert main(["data", "ego-exoclip", "--egoexo-root", str(root), "--out", str(out), "--skip-bad-rows"]) == 0
    info = json.loads((out / "build_info.json").read_text())
    assert info["drops"]["takes"]["unreadable_video"] == 1
    assert info["counts"]["takes_kept"] == clean["counts"]["takes_kept"] - 1 >= 1


# --------------------------------------------------------------------------------------------- eval resume
def _retrained(model):
    import copy

    import torch

    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    return changed


def _other_world(tmp_path):
    """The same task with other questions' answers: a rebuilt or different data folder."""
    rows = _synthetic_rows(lambda rows: [row.update(answer_idx=(row["answer_idx"] + 1) % 5) for row in rows])
    return _folder_with_synthetic(tmp_path / "other", rows, EGOBENCH_FEATURES)


# (id, what changes for the second run: (model, data, config) -> (model, data, config), what the refusal names)
RESUME_ROWS = [
    ("other-data", lambda m, d, c, tmp: (m, _other_world(tmp), c), r"data\.synthetic: was '[0-9a-f]{64}', now"),
    ("retrained-weights", lambda m, d, c, tmp: (_retrained(m), d, c), r"model\.weights_sha256: was"),
    (
        "other-scorer",
        lambda m, d, c, tmp: (m, d, EvalConfig(**{**vars(c), "scorer": "option_loglik"})),
        r"settings\.scorer: was 'letter_logprob', now 'option_loglik'",
    ),
    (
        "other-frames",
        lambda m, d, c, tmp: (m, d, EvalConfig(**{**vars(c), "num_frames": 2})),
        r"settings\.num_frames: was None, now 2",
    ),
    (
        "other-video-root",
        lambda m, d, c, tmp: (m, d, EvalConfig(**{**vars(c), "video_roots": [str(d)]})),
        r"settings\.video_roots",
    ),
]


@pytest.mark.parametrize("change, message", [row[1:] for row in RESUME_ROWS], ids=[row[0] for row in RESUME_ROWS])
def test_resume_with_other_data_weights_or_settings_is_refused(tmp_path, toy, tiny, change, message):
    model, processor = tiny
    config = EvalConfig(tasks="synthetic", limit=2, **FAST)
    out = tmp_path / "run"
    evaluate(model, processor, str(toy), str(out), config, show_progress=False)
    records = (out / "predictions" / "synthetic" / "shard-00000-of-00001.jsonl").read_bytes()
    other_model, other_data, other_config = change(model, toy, config, tmp_path)
    with pytest.raises(RunConfigError, match=message) as error:
        evaluate(other_model, processor, str(other_data), str(out), other_config, show_progress=False)
    assert "--overwrite" in str(error.value)
    assert (out / "predictions" / "synthetic" / "shard-00000-of-00001.jsonl").read_bytes() == records
    if other_data is toy:
        return
    # Starting fresh gives what a new folder gives (checked once, on the row with other data).
    fresh = evaluate(
        other_model, processor, str(other_data), str(out), other_config, show_progress=False, overwrite=True
    )
    reference = evaluate(
        other_model, processor, str(other_data), str(tmp_path / "fresh"), other_config, show_progress=False
    )
    assert fresh["tasks"] == reference["tasks"]


def test_resume_with_the_same_inputs_and_a_new_task_is_accepted(tmp_path, toy, tiny):
    config = EvalConfig(tasks="synthetic", limit=2, **FAST)
    first = evaluate(*tiny, str(toy), str(tmp_path / "run"), config, show_progress=False)
    again = evaluate(*tiny, str(toy), str(tmp_path / "run"), config, show_progress=False)
    assert again["tasks"] == first["tasks"]
    more = EvalConfig(**{**vars(config), "tasks": "synthetic,egomcq"})
    both = evaluate(*tiny, str(toy), str(tmp_path / "run"), more, show_progress=False)
    assert both["tasks"]["synthetic"] == first["tasks"]["synthetic"] and "egomcq" in both["tasks"]
    assert set(json.loads((tmp_path / "run" / "run_config.json").read_text())["data"]) == {"synthetic", "egomcq"}


def test_a_refused_setting_leaves_the_folder_usable(tmp_path, toy, saved_model, capsys):
    """`--max-new-tokens 0` used to fail after writing run_config.json, and the corrected rerun was refused."""
    out = tmp_path / "run"
    base = [
        "eval",
        "--model",
        str(saved_model),
        "--data",
        str(toy),
        "--tasks",
        "synthetic",
        "--out",
        str(out),
        "--limit",
        "2",
        "--bootstrap-resamples",
        "20",
        "--no-progress",
        "--scorer",
        "generate_parse",
    ]
    assert main([*base, "--max-new-tokens", "0"]) == 2
    assert not out.exists()
    assert main([*base, "--max-new-tokens", "2"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["max_new_tokens"] == 2


def test_a_complete_results_file_makes_a_report_and_a_card(tmp_path):
    """The rows above change one key of this file, which both commands take as it is."""
    results = _results_file(tmp_path)
    assert main(["eval-report", "--results", str(results), "--out", str(tmp_path / "report")]) == 0
    assert main(["model-card", "--results", str(results), "--out", str(tmp_path / "README.md")]) == 0


def _set(key, value):
    return lambda record: {**record, key: value}


# (id, edit of a kept multiple-choice record, what the refusal says): a resume reused and scored such records
EDITED_RECORD_ROWS = [
    ("prediction-out-of-range", _set("prediction", 7), r"has prediction 7, which is not one of its 5 options"),
    ("prediction-negative", _set("prediction", -1), r"has prediction -1, which is not one of its 5 options"),
    ("prediction-a-letter", _set("prediction", "B"), r"has prediction 'B', which is not one of its 5 options"),
    ("prediction-true", _set("prediction", True), r"has prediction True, which is not one of its 5 options"),
    ("prediction-missing", lambda record: {k: v for k, v in record.items() if k != "prediction"}, "has no prediction"),
]


@pytest.mark.parametrize(
    "edit, message", [row[1:] for row in EDITED_RECORD_ROWS], ids=[row[0] for row in EDITED_RECORD_ROWS]
)
def test_a_hand_edited_record_is_refused_on_resume(tmp_path, toy, tiny, edit, message):
    config = EvalConfig(tasks="synthetic", limit=2, **FAST)
    out = tmp_path / "run"
    evaluate(*tiny, str(toy), str(out), config, show_progress=False)
    shard = out / "predictions" / "synthetic" / "shard-00000-of-00001.jsonl"
    first, *rest = shard.read_text().splitlines(keepends=True)
    shard.write_text(json.dumps(edit(json.loads(first))) + "\n" + "".join(rest))
    with pytest.raises(RunConfigError, match=rf"shard-00000-of-00001\.jsonl line 1: record 'synthetic/\d+' {message}"):
        evaluate(*tiny, str(toy), str(out), config, show_progress=False)


HOLD_THE_LOCK = """
import sys, time
from exo2ego_base.provenance import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_eval_run_into_a_folder_in_use_is_refused(tmp_path, toy, saved_model, capsys):
    context = Context(tmp_path, toy, saved_model, None, None)
    argv = context.eval("--limit", "2", "--max-new-tokens", "4")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(context.out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(argv) == 2
        error = capsys.readouterr().err
        named = rf"\(pid {holder.pid} on {re.escape(socket.gethostname())}, started "
        assert re.search(rf"eval: error: .*/out is in use by another run {named}", error), error
        assert sorted(path.name for path in context.out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves its lock file but no lock: the next run goes ahead, and takes the file away.
    assert main(argv) == 0
    assert (context.out / "results.json").is_file() and not (context.out / LOCK_NAME).exists()


def test_a_push_without_the_hub_says_the_built_folder_is_kept(tmp_path, sources, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "egobench"
    argv = [
        "data",
        "egobench",
        f"--root=egoschema={sources['egoschema']}",
        "--out",
        str(out),
        "--push-to-hub",
        "org/x",
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    error_lines = [line for line in error.splitlines() if "error:" in line]
    kept = (
        rf"could not push to the Hub dataset repo org/x \(OfflineModeIsEnabled: .*\); the built folder {out} is kept"
    )
    assert len(error_lines) == 1 and re.search(kept, error_lines[0]), error
    assert (out / "build_info.json").is_file()


# --------------------------------------------------------------------------------------------- one registry
def test_builder_and_eval_share_one_task_registry():
    from datasets_scripts.egobench.tasks import EGOBENCH_TASKS, builder_tasks
    from eval.tasks import TASKS

    assert builder_tasks() == tuple(name for name, task in EGOBENCH_TASKS.items() if task.reader is not None)
    assert list(TASKS) == list(EGOBENCH_TASKS)
    for name, spec in TASKS.items():
        assert spec.configs is EGOBENCH_TASKS[name]
        for side in (spec.labels_config, spec.classes_config, spec.sentences_config, spec.relevance_config):
            assert side is None or side in EGOBENCH_TASKS[name].side_configs.values()


def test_eval_finds_every_task_the_builder_wrote(tmp_path, sources, capsys):
    out = tmp_path / "egobench"
    roots = {name: sources[name] for name in ("egoschema", "qaego4d", "vlnqa")}
    root_args = [f"--root={name}={path}" for name, path in roots.items()]
    assert main(["data", "egobench", *root_args, "--out", str(out)]) == 0
    written = json.loads((out / "build_info.json").read_text())["counts"]
    assert {"egoschema_full", "egoschema_subset", "qaego4d_closed", "qaego4d_open", "vlnqa"} == set(written)

    task_data = prepare_tasks(str(out), EvalConfig(tasks="all", check_videos=False))
    assert list(task_data) == ["egoschema", "qaego4d", "vlnqa"]
    assert len(task_data["egoschema"].rows) == written["egoschema_full"]  # the full set; labels where public
    assert len(task_data["qaego4d"].rows) == written["qaego4d_closed"] + written["qaego4d_open"]
    assert {row["subset"] for row in task_data["qaego4d"].rows} == {"closed", "open"}
    for name in ("egoschema", "qaego4d"):
        assert list(prepare_tasks(str(out), EvalConfig(tasks=name, check_videos=False))) == [name]
    message = task_selection_message(["qaego4d"], available_configs(str(out)))
    assert message.startswith(
        "tasks found: qaego4d (qaego4d_closed+qaego4d_open); in the folder but not requested: "
        "egoschema, vlnqa; not in the folder: egotaskqa"
    )

    # `--tasks all` says what it found and what it did not (the run then stops at the missing videos).
    assert (
        main(
            [
                "eval",
                "--model",
                "unused",
                "--data",
                str(out),
                "--tasks",
                "all",
                "--out",
                str(tmp_path / "run"),
                "--no-check-videos",
                "--limit",
                "1",
                "--num-frames",
                "1",
                "--bootstrap-resamples",
                "20",
                "--no-progress",
            ]
        )
        == 2
    )
    said = capsys.readouterr()
    assert "tasks found: egoschema (egoschema_full), qaego4d (qaego4d_closed+qaego4d_open), vlnqa (vlnqa)" in said.out
    assert "not in the folder: egotaskqa (egotaskqa_direct+egotaskqa_indirect), charades_ego" in said.out


# --------------------------------------------------------------------------------------------- training counters
def test_failed_video_count_and_budget_survive_resume(tmp_path):
    """Unreadable videos counted before a checkpoint are still counted after resuming from it (issue 14 item 3)."""
    import copy

    import numpy as np
    import torch

    from exo2ego_base.tiny import build_tiny_model
    from train.arguments import StageArguments
    from train.collator import Exo2EgoCollator
    from train.model_setup import prepare_model
    from train.stages import resolve_stage
    from train.trainer import Exo2EgoTrainer, Exo2EgoTrainingArguments

    base, processor = build_tiny_model(seed=0)
    rng = np.random.default_rng(0)
    frames = lambda: rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)  # noqa: E731
    # Every sample was produced after skipping one unreadable video.
    samples = [
        {
            "sample_id": f"s{i}",
            "prompt": "Describe.",
            "target": "C picks up the cube.",
            "ego_frames": frames(),
            "exo_frames": frames(),
            "failed_videos": 1,
        }
        for i in range(8)
    ]
    resolved = resolve_stage("stage1")

    def trainer(max_failed_fraction):
        args = Exo2EgoTrainingArguments(
            output_dir=str(tmp_path / "out"),
            use_cpu=True,
            per_device_train_batch_size=2,
            max_steps=4,
            learning_rate=1e-3,
            warmup_steps=0,
            lr_scheduler_type="constant",
            save_strategy="steps",
            save_steps=2,
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            seed=0,
            max_failed_fraction=max_failed_fraction,
        )
        model = prepare_model(copy.deepcopy(base), resolved, StageArguments())
        return Exo2EgoTrainer(
            model=model,
            args=args,
            train_dataset=samples,
            data_collator=Exo2EgoCollator(processor, resolved.branches),
            stage=resolved,
        )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = trainer(1.0)
        full.train()
        assert full.failures.failed == 8
        shutil.rmtree(tmp_path / "out" / "checkpoint-4")  # killed after checkpoint-2: 4 samples counted
        resumed = trainer(1.0)
        resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
        assert resumed.failures.failed == 8 and resumed.failed_videos_total == 8
        # The budget counts the failures before the checkpoint too: 4 + 2 > 0.6 * 8 stops on the first new batch.
        shutil.rmtree(tmp_path / "out" / "checkpoint-4")
        from train.data import VideoDecodeError

        with pytest.raises(VideoDecodeError, match="6 samples had unreadable videos"):
            trainer(0.6).train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    finally:
        torch.set_num_threads(threads)


def _two_process_lock(rank: int, folder: str, port: int, outcomes) -> None:
    """One rank of a 2-process run entering `run_folder_lock` (gloo on CPU)."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ["WORLD_SIZE"] = "2"
    from accelerate import PartialState

    from eval.runner import run_folder_lock
    from exo2ego_base.provenance import FolderLockedError

    state = PartialState(cpu=True)
    try:
        with run_folder_lock(Path(folder), state):
            outcomes.put((rank, "ran"))
    except FolderLockedError:
        outcomes.put((rank, "refused"))


def test_every_process_of_a_run_learns_that_its_folder_is_in_use(tmp_path):
    """With another run holding the folder, both processes of a 2-process eval refuse: none waits for the other."""
    import multiprocessing

    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    context = multiprocessing.get_context("spawn")
    outcomes, ranks = context.Queue(), []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        assert holder.stdout.readline().strip() == "held"
        ranks = [context.Process(target=_two_process_lock, args=(r, str(folder), port, outcomes)) for r in (0, 1)]
        for process in ranks:
            process.start()
        for process in ranks:
            process.join(timeout=120)
        assert not any(process.is_alive() for process in ranks), "a process is still waiting"
        assert sorted(outcomes.get(timeout=5) for _ in ranks) == [(0, "refused"), (1, "refused")]
    finally:
        holder.kill()
        holder.wait()
        for process in ranks:
            process.kill()
