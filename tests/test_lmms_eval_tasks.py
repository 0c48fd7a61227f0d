"""EgoBench as lmms-eval tasks (`eval/lmms_eval_tasks/`), checked without lmms-eval: the YAMLs parse and name
functions that exist, the rows of a tiny synthetic world (and of the toy EgoBench) come out as `exo2ego eval`
reads them, the question's window reaches the request as `exo2ego serve` reads it, and the scores agree with
`eval.metrics` / `eval.task_metrics` on the same predictions. The slow tests run lmms-eval itself (its task
loader, then a whole run against `exo2ego serve`) in the separate environment of `scripts/lmms_eval_venv.sh`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

from datasets_scripts.egobench.tasks import EGOBENCH_TASKS
from datasets_scripts.schema import OPTION_LETTERS
from eval import metrics
from eval.data import EvalDataError, load_task
from eval.parsing import parse_choice
from eval.prompts import get_prompt, user_text
from eval.task_metrics import compute_task_metrics
from eval.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "eval" / "lmms_eval_tasks"
LMMS_VENV = Path(os.environ.get("LMMS_EVAL_VENV", REPO / ".lmms-venv"))


def load_utils():
    """utils.py loaded the way lmms-eval loads it: from its path, under the module name `utils`."""
    spec = importlib.util.spec_from_file_location("utils", TASK_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


utils = load_utils()


class FunctionTag(str):
    """The name a `!function utils.NAME` tag gives."""


def _function_tag(loader, node):
    return FunctionTag(loader.construct_scalar(node))


class TaskLoader(yaml.SafeLoader):
    pass


TaskLoader.add_constructor("!function", _function_tag)


def read_yaml(path: Path) -> dict:
    """A task YAML with its `include` merged in (the included file first, as lmms-eval does)."""
    config = yaml.load(path.read_text(), Loader=TaskLoader)
    if "include" in config:
        config = {**read_yaml(path.parent / config.pop("include")), **config}
    return config


def task_yamls() -> dict[str, dict]:
    return {path.stem: read_yaml(path) for path in sorted(TASK_DIR.glob("*.yaml"))}


def row_configs(keep=lambda task: True) -> list[str]:
    """The row configs of the declared EgoBench tasks (those ``keep`` accepts)."""
    return [config for task in EGOBENCH_TASKS.values() if keep(task) for group in task.row_configs for config in group]


# --------------------------------------------------------------------------------------------- the YAMLs
def test_one_task_per_row_config_except_retrieval():
    """Every row config of a declared task has its YAML (and its docs_<config>), except retrieval tasks'."""
    configs = {name.removeprefix("egobench_") for name in task_yamls()}
    assert configs == set(row_configs()) - set(utils.CONFIGS_WITHOUT_TASK)
    assert set(utils.CONFIGS_WITHOUT_TASK) == set(row_configs(lambda task: task.scoring.retrieval)) == {"epic_mir"}
    assert all(callable(getattr(utils, f"docs_{config}", None)) for config in configs)


@pytest.mark.parametrize("name", sorted(task_yamls()))
def test_yaml_parses_and_names_existing_functions(name):
    config = task_yamls()[name]
    assert config["task"] == name
    config_name = name.removeprefix("egobench_")
    assert config["process_docs"] == f"utils.docs_{config_name}"
    functions = [value for value in config.values() if isinstance(value, FunctionTag)]
    functions += [metric["aggregation"] for metric in config["metric_list"]]
    for function in functions:
        module, _, attribute = function.partition(".")
        assert module == "utils" and callable(getattr(utils, attribute)), function
    # The metrics are the ones process_results emits for this config, aggregated by the declared functions.
    declared = [
        (m["metric"], m["aggregation"].partition(".")[2], m["higher_is_better"]) for m in config["metric_list"]
    ]
    assert declared == utils.config_metrics(config_name)
    # lmms-eval resolves a relative data_file against the YAML's folder: the pointer file is there.
    assert config["dataset_path"] == "json" and config["test_split"] == "test"
    assert (TASK_DIR / config["dataset_kwargs"]["data_files"]["test"]).is_file()
    assert config["output_type"] == "generate_until"
    budget = 64 if config_name == "qaego4d_open" else 16  # exo2ego eval's open / generate_parse budgets
    assert config["generation_kwargs"]["max_new_tokens"] == budget and config["generation_kwargs"]["temperature"] == 0
    window = config["lmms_eval_specific_kwargs"]
    assert window["default"]["window"] == "fields"
    assert all(window[model]["window"] == "fragment" for model in ("openai", "openai_compatible"))


def test_tags():
    tags = {name: config.get("tag") for name, config in task_yamls().items()}
    # The tasks the synthetic world writes (declared without a reader).
    world = set(row_configs(lambda task: not task.built_by_egobench))
    assert {name for name, tag in tags.items() if tag == "egobench_synthetic_world"} == {
        f"egobench_{config}" for config in world
    }
    # `--tasks egobench`: every config `exo2ego data egobench` writes, EgoSchema once (its full set).
    assert tags["egobench_egoschema_subset"] is None
    assert {name for name, tag in tags.items() if tag == "egobench"} == {
        f"egobench_{config}"
        for config in row_configs(lambda task: task.built_by_egobench)
        if config not in ("egoschema_subset", *utils.CONFIGS_WITHOUT_TASK)
    }


# --------------------------------------------------------------------------------------------- rows of a world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny synthetic world (as `exo2ego data synth --takes 4`, smaller frames): its EgoBench folder."""
    from datasets_scripts.synthetic import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("lmms") / "world"
    generate_world(root, WorldConfig(num_takes=4, seed=1, actions_per_take=3, height=64, downscaled_height=32))
    return root / "egobench"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from eval.toy import write_toy_egobench

    return write_toy_egobench(tmp_path_factory.mktemp("lmms") / "toy")


@pytest.fixture
def egobench_dir(monkeypatch):
    def use(folder):
        monkeypatch.setenv("EGOBENCH_DIR", str(folder))
        for name in ("EGOBENCH_WINDOW", "EGOBENCH_PROMPT", "EGOBENCH_VIDEO_ROOT"):
            monkeypatch.delenv(name, raising=False)

    return use


@pytest.mark.parametrize("config", ["synthetic", "synthetic_pattern"])
def test_docs_are_the_rows_exo2ego_eval_reads(world, egobench_dir, config):
    egobench_dir(world)
    docs = getattr(utils, f"docs_{config}")(None).to_list()
    rows = load_task(TASKS[config], str(world)).rows
    assert [doc["sample_id"] for doc in docs] == [row["sample_id"] for row in rows] and docs
    for doc, row in zip(docs, rows):
        assert doc["video_path"] == row["video_path"] and Path(doc["video_path"]).is_file()
        assert json.loads(doc["meta"]) == row["meta"]
        assert doc["start_sec"] is not None and doc["end_sec"] > doc["start_sec"]


def test_window_reaches_the_request_as_the_server_reads_it(world, egobench_dir):
    from exo2ego.serve.media import media_fragment_window

    egobench_dir(world)
    docs = utils.docs_synthetic(None).to_list()
    for doc in docs:
        # fragment (the OpenAI-compatible models): a file:// URL whose #t= is the window.
        (url,) = utils.doc_to_visual(doc, {"window": "fragment"})
        parsed = urlparse(url)
        assert parsed.scheme == "file" and unquote(parsed.path) == doc["video_path"]
        assert media_fragment_window(url) == pytest.approx((doc["start_sec"], doc["end_sec"]), abs=1e-6)
        messages = utils.doc_to_messages(doc, {"window": "fragment", "prompt": "egocentric"})
        assert messages[-1]["content"][0]["url"] == url
        # fields (every other model): the plain path, the window in the chat video part.
        (path,) = utils.doc_to_visual(doc, {"window": "fields"})
        assert path == doc["video_path"]
        video = utils.doc_to_messages(doc, {"window": "fields"})[-1]["content"][0]
        assert video == {"type": "video", "url": path, "start_time": doc["start_sec"], "end_time": doc["end_sec"]}


def test_fragment_forms_and_awkward_paths():
    from exo2ego.serve.media import media_fragment_window

    assert utils.media_fragment(None, None) == ""
    assert utils.media_fragment(2.0, 6.5) == "#t=2,6.5"
    assert utils.media_fragment(1.25, None) == "#t=1.25"
    assert utils.media_fragment(None, 3.0) == "#t=,3"
    doc = {"video_path": "/data/my clips/50%#1?.mp4", "start_sec": 0.457, "end_sec": 2.381}
    url = utils.video_reference(doc, "fragment")
    assert unquote(urlparse(url).path) == doc["video_path"]
    assert media_fragment_window(url) == (0.457, 2.381)
    whole = utils.video_reference({**doc, "start_sec": None, "end_sec": None}, "fragment")
    assert "#" not in whole.replace("%23", "") and media_fragment_window(whole) == (None, None)


def test_settings_from_the_environment(world, egobench_dir, monkeypatch):
    egobench_dir(world)
    doc = utils.docs_synthetic(None)[0]
    assert utils.window_mode(None) == "fields"
    assert utils.window_mode({"window": "fragment"}) == "fragment"
    monkeypatch.setenv("EGOBENCH_WINDOW", "fields")
    assert utils.window_mode({"window": "fragment"}) == "fields"
    monkeypatch.setenv("EGOBENCH_WINDOW", "frames")
    with pytest.raises(utils.EgoBenchSetupError, match="fragment"):
        utils.doc_to_visual(doc)
    monkeypatch.delenv("EGOBENCH_WINDOW")
    # The prompt is exo2ego eval's: system turn of the variant, question, lettered options, letter instruction.
    template = get_prompt("egocentric")
    assert utils.doc_to_text(doc) == user_text(template, doc["question"], doc["options"], "letters")
    messages = utils.doc_to_messages(doc)
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": template.system}]}
    monkeypatch.setenv("EGOBENCH_PROMPT", "none")
    assert [message["role"] for message in utils.doc_to_messages(doc)] == ["user"]
    assert utils.doc_to_target(doc) == OPTION_LETTERS[doc["answer_idx"]]


def test_setup_errors(toy, egobench_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("EGOBENCH_DIR", raising=False)
    with pytest.raises(utils.EgoBenchSetupError, match="set EGOBENCH_DIR"):
        utils.docs_synthetic(None)
    egobench_dir(toy)
    with pytest.raises(EvalDataError, match="no config 'egoschema_subset'.*egobench_egoschema_subset"):
        utils.docs_egoschema_subset(None)
    # The project's checks run: a missing video is named with the row and the way out.
    monkeypatch.setenv("EGOBENCH_VIDEO_ROOT", str(tmp_path))
    with pytest.raises(EvalDataError, match="videos not found"):
        utils.docs_synthetic(None)


# --------------------------------------------------------------------------------------------- scoring
def responses_for(docs, seed=0):
    """Generated answers of every kind the parser meets: the right letter, text that names no option, a wrong
    letter, an option's text, 'The answer is X'."""
    rng = np.random.default_rng(seed)
    out = []
    for index, doc in enumerate(docs):
        options, answer = doc["options"], doc["answer_idx"] if doc["answer_idx"] is not None else 0
        wrong = (answer + 1) % len(options)
        kind = index % 5
        out.append(
            [
                OPTION_LETTERS[answer],
                "I cannot tell from the video",
                f"({OPTION_LETTERS[wrong]}) {options[wrong]}",
                f"I think it is {options[int(rng.integers(len(options)))]}.",
                f"The answer is {OPTION_LETTERS[answer]}",
            ][kind]
        )
    return out


def lmms_metrics(docs, responses):
    """What lmms-eval does with process_results and the metric_list's aggregations."""
    items: dict[str, list] = {}
    for doc, response in zip(docs, responses):
        for key, item in utils.process_results(doc, [response]).items():
            items.setdefault(key, []).append(item)
    aggregations = {key: getattr(utils, name) for key, name, _ in utils.config_metrics(config_of(docs[0]))}
    assert set(items) <= set(aggregations)
    return {key: aggregations[key](values) for key, values in items.items()}


def config_of(doc) -> str:
    if doc["task"] == "qaego4d":
        return "qaego4d_open" if not doc["options"] else "qaego4d_closed"
    return {"egoschema": "egoschema_full"}.get(doc["task"], doc["task"])


def official(task, folder, config, docs, responses, **kwargs):
    """eval.task_metrics on the same predictions (parsed by generate_parse's parser)."""
    data = load_task(TASKS[task], str(folder), configs=[config])
    records = {}
    for doc, response in zip(docs, responses):
        if doc["options"]:
            records[doc["sample_id"]] = {"prediction": parse_choice(response, doc["options"]).index}
            records[doc["sample_id"]]["scorer"] = "generate_parse"
        else:
            records[doc["sample_id"]] = {"prediction_text": response}
    return {
        key: entry["value"]
        for key, entry in compute_task_metrics(data, records, resamples=5, **kwargs)["metrics"].items()
    }


@pytest.mark.parametrize("config", ["synthetic", "synthetic_pattern"])
def test_scores_agree_with_eval_metrics_on_the_world(world, egobench_dir, config):
    egobench_dir(world)
    docs = getattr(utils, f"docs_{config}")(None).to_list()
    responses = responses_for(docs)
    ours = lmms_metrics(docs, responses)
    reference = official(config, world, config, docs, responses)
    assert ours.keys() == reference.keys()
    for key in ours:
        assert ours[key] == pytest.approx(reference[key]), key
    predictions = [parse_choice(response, doc["options"]).index for doc, response in zip(docs, responses)]
    assert ours["accuracy"] == pytest.approx(100 * metrics.accuracy(predictions, [doc["answer_idx"] for doc in docs]))
    assert 0 < ours["invalid_rate"] < 100 and 0 < ours["accuracy"] < 100


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ("egoschema_full", "egoschema"),
        ("qaego4d_closed", "qaego4d"),
        ("charades_ego", "charades_ego"),
        ("egomcq", "egomcq"),
    ],
)
def test_scores_agree_with_eval_metrics_on_the_toy_benchmark(toy, egobench_dir, config, task):
    egobench_dir(toy)
    docs = getattr(utils, f"docs_{config}")(None).to_list()
    responses = responses_for(docs, seed=1)
    ours = lmms_metrics(docs, responses)
    reference = official(task, toy, config, docs, responses)
    if task == "qaego4d":  # one config of a task split over two: its closed rows are exo2ego eval's Closed subset
        assert ours["accuracy"] == pytest.approx(reference["accuracy_closed"])
        reference.pop("accuracy_closed")
    assert ours.keys() == reference.keys()
    for key in ours:
        assert ours[key] == pytest.approx(reference[key]), key
    if task == "egoschema":  # hidden labels: predicted and counted as answered or not, never scored
        hidden = [doc for doc in docs if doc["answer_idx"] is None]
        assert hidden and all("accuracy" not in utils.process_results(doc, ["A"]) for doc in hidden)
    if task == "egomcq":
        assert {"accuracy_inter", "accuracy_intra"} <= ours.keys()


def test_open_answers_agree_with_eval_metrics(toy, egobench_dir, monkeypatch):
    class Encoder:  # deterministic stand-in for MiniLM: a bag of letters
        def encode(self, texts, **kwargs):
            vectors = np.array([[text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for text in texts], float) + 1e-3
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    monkeypatch.setattr(metrics, "load_sentence_encoder", lambda *args, **kwargs: Encoder())
    egobench_dir(toy)
    docs = utils.docs_qaego4d_open(None).to_list()
    responses = ["The red cup.", "a spoon"]
    assert [utils.doc_to_target(doc) for doc in docs] == ["the red cup", "a knife"]
    assert utils.doc_to_text(docs[0]) == user_text(get_prompt("egocentric"), docs[0]["question"], None, "open")
    ours = lmms_metrics(docs, responses)
    reference = official("qaego4d", toy, "qaego4d_open", docs, responses, sentence_encoder=Encoder())
    assert ours.keys() == reference.keys() == {"exact_match_open", "rouge_l_open", "sentence_similarity_open"}
    for key in ours:
        assert ours[key] == pytest.approx(reference[key]), key
    assert ours["exact_match_open"] == 50.0


# --------------------------------------------------------------------------------------------- lmms-eval itself
def lmms_python() -> Path:
    python = LMMS_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(
            f"no lmms-eval environment at {LMMS_VENV} (make one with scripts/lmms_eval_venv.sh; LMMS_EVAL_VENV)"
        )
    return python


LOADER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from lmms_eval.protocol import ChatMessages
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager("ERROR", include_path=sys.argv[1], model_name="openai_compatible")
    out = {"indexed": sorted(name for name in manager.all_tasks if name.startswith("egobench"))}
    for task_type in ("chat", "simple"):
        tasks = get_task_dict(["egobench_synthetic", "egobench_synthetic_pattern"], manager, task_type)
        for name, task in tasks.items():
            docs = task.test_docs()
            entry = {"class": type(task).__name__, "n": len(docs), "visual": task.doc_to_visual(docs[0])}
            entry["aggregations"] = sorted(task.aggregation())
            entry["scored"] = {key: value["score"] for key, value in task.process_results(docs[0], ["A"]).items()}
            if task_type == "chat":
                messages = ChatMessages(messages=task.doc_to_messages(docs[0]))
                entry["request"] = messages.to_openai_messages(pass_video_url=True)
            out[f"{task_type}/{name}"] = entry
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_lmms_eval_task_manager_loads_the_tasks(world, tmp_path, egobench_dir):
    python = lmms_python()
    egobench_dir(world)  # EGOBENCH_DIR set, the other EGOBENCH_* settings unset
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    result = subprocess.run(
        [str(python), "-c", LOADER_SCRIPT, str(TASK_DIR)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert {f"egobench_{config}" for config in row_configs()} - set(out["indexed"]) == {"egobench_epic_mir"}
    assert {"egobench", "egobench_synthetic_world"} <= set(out["indexed"])
    docs = {config: getattr(utils, f"docs_{config}")(None).to_list() for config in ("synthetic", "synthetic_pattern")}
    for task_type, expected_class in (("chat", "ConfigurableMessagesTask"), ("simple", "ConfigurableTask")):
        for config in ("synthetic", "synthetic_pattern"):
            entry = out[f"{task_type}/egobench_{config}"]
            assert entry["class"] == expected_class and entry["n"] == len(docs[config])
            first = docs[config][0]
            assert entry["visual"] == [utils.video_reference(first, "fragment")]
            assert entry["aggregations"] == sorted(key for key, _, _ in utils.config_metrics(config))
            assert entry["scored"]["accuracy"] == 100.0 * (first["answer_idx"] == 0)
    # What lmms-eval's openai_compatible model sends with pass_video_url=True: the video URL with its window.
    request = out["chat/egobench_synthetic"]["request"]
    first = docs["synthetic"][0]
    assert request[0]["role"] == "system"
    assert request[1]["content"][0] == {
        "type": "video_url",
        "video_url": {"url": utils.video_reference(first, "fragment")},
    }
    assert request[1]["content"][1] == {"type": "text", "text": utils.doc_to_text(first)}


FRAMES_SCRIPT = textwrap.dedent(
    """
    import base64, io, json, sys
    import numpy as np
    from PIL import Image
    from lmms_eval.protocol import ChatMessages
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager("ERROR", include_path=sys.argv[1], model_name="openai_compatible")
    (task,) = get_task_dict(["egobench_synthetic"], manager, "chat").values()
    out = []
    for doc in list(task.test_docs())[: int(sys.argv[2])]:
        messages = ChatMessages(messages=task.doc_to_messages(doc))
        # What openai_compatible sends without pass_video_url: frames decoded and sampled by lmms-eval itself.
        sent = messages.to_openai_messages(video_kwargs={"nframes": 4}, pass_video_url=False)
        urls = [part["image_url"]["url"] for turn in sent for part in turn["content"] if part["type"] == "image_url"]
        images = [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB") for url in urls]
        out.append({"sample_id": doc["sample_id"], "frames": [np.asarray(image).tolist() for image in images]})
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_lmms_eval_default_mode_sends_frames_of_the_window(world, tmp_path, egobench_dir, monkeypatch):
    """lmms-eval's default openai_compatible mode decodes the video itself: with EGOBENCH_WINDOW=fields, every frame
    it sends is a frame of the question's window (matched against every decoded frame of the video)."""
    import av
    from PIL import Image

    python = lmms_python()
    egobench_dir(world)
    monkeypatch.setenv("EGOBENCH_WINDOW", "fields")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    result = subprocess.run(
        [str(python), "-c", FRAMES_SCRIPT, str(TASK_DIR), "6"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sent = {entry["sample_id"]: entry["frames"] for entry in json.loads(result.stdout.split("RESULT ", 1)[1])}
    docs = {doc["sample_id"]: doc for doc in utils.docs_synthetic(None).to_list()}
    assert len(sent) == 6
    for sample_id, frames in sent.items():
        doc = docs[sample_id]
        with av.open(doc["video_path"]) as container:
            step = 1 / float(container.streams.video[0].average_rate)
            decoded = [(frame.time, frame.to_image()) for frame in container.decode(video=0)]
        assert len(frames) == 4
        for frame in frames:
            frame = np.asarray(frame, dtype=np.float32)
            size = (frame.shape[1], frame.shape[0])
            errors = [
                np.square(np.asarray(image.resize(size, Image.BILINEAR), np.float32) - frame).mean()
                for _, image in decoded
            ]
            time = decoded[int(np.argmin(errors))][0]
            assert doc["start_sec"] - step <= time <= doc["end_sec"] + step, (sample_id, time, doc["start_sec"])


@pytest.mark.slow
@pytest.mark.parametrize("video_url", [True, False], ids=["pass_video_url", "frames"])
def test_lmms_eval_run_against_exo2ego_serve(world, tmp_path, egobench_dir, video_url):
    """eval/README.md's commands, end to end on a tiny untrained model, in both of lmms-eval's modes: every request
    answered (none refused), the metrics in lmms-eval's results, the samples scored by this folder's
    process_results; with `pass_video_url=True` the answers are word for word those of `exo2ego eval --scorer
    generate_parse` with the same prompt, frames and window (without it lmms-eval samples and resizes the frames)."""
    python = lmms_python()
    egobench_dir(world)
    model_args = "model_version=tiny,base_url={},max_frames_num=4,max_retries=1"
    if video_url:
        model_args += ",pass_video_url=True"
    pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")
    from exo2ego.serve.process import ServerProcess
    from exo2ego.tiny import save_tiny_model

    save_tiny_model(str(tmp_path / "model"), seed=0)
    limit = 3
    with ServerProcess(
        ["--model", str(tmp_path / "model"), "--served-model-name", "tiny", "--media-root", str(world.parent)]
    ) as server:
        env = {
            **os.environ,
            "EGOBENCH_DIR": str(world),
            "HF_DATASETS_CACHE": str(tmp_path / "hf"),
            "OPENAI_API_KEY": "unused",
            **({} if video_url else {"EGOBENCH_WINDOW": "fields"}),
        }
        command = [
            str(python.parent / "lmms-eval"),
            "--model",
            "openai_compatible",
            "--model_args",
            model_args.format(server.base_url),
            "--tasks",
            "egobench_synthetic_world",
            "--include_path",
            str(TASK_DIR),
            "--limit",
            str(limit),
            "--output_path",
            str(tmp_path / "out"),
            "--log_samples",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        import httpx

        counters = httpx.get(f"{server.url}/metrics", timeout=30).text
    answered = [line for line in counters.splitlines() if line.startswith('exo2ego_requests_total{path="/v1/chat')]
    assert answered and all('code="200"' in line for line in answered), answered
    assert f"{2 * limit}" == answered[0].rsplit(" ", 1)[1]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    said_by_lmms_eval = {}
    for task in ("egobench_synthetic", "egobench_synthetic_pattern"):
        assert {"accuracy,none", "invalid_rate,none"} <= results[task].keys()
        (samples_file,) = (tmp_path / "out").rglob(f"*_samples_{task}.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        assert len(samples) == limit
        predictions = [sample["invalid_rate"]["prediction"] for sample in samples]
        answers = [sample["invalid_rate"]["answer_idx"] for sample in samples]
        assert results[task]["accuracy,none"] == pytest.approx(100 * metrics.accuracy(predictions, answers))
        said_by_lmms_eval.update({sample["invalid_rate"]["sample_id"]: sample["filtered_resps"] for sample in samples})
    if not video_url:
        return
    # The same model scored by exo2ego eval's generate_parse (same prompt, frames and budget) says the same words.
    evaluated = tmp_path / "eval"
    argv = ["--model", str(tmp_path / "model"), "--data", str(world), "--tasks", "synthetic,synthetic_pattern"]
    argv += ["--scorer", "generate_parse", "--num-frames", "4", "--limit", str(limit), "--out", str(evaluated)]
    run = subprocess.run(
        [sys.executable, "-m", "exo2ego", "eval", *argv, "--no-progress"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for path in (evaluated / "predictions").rglob("*.jsonl") for line in path.open()]
    assert {record["sample_id"]: record["raw_output"].strip() for record in records} == said_by_lmms_eval


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
