"""The `exo2ego` command shows the project's INFO lines without cutting them off from the rest of logging."""

import logging
import subprocess
import sys

from exo2ego.cli import main


def test_project_logs_print_once_and_still_reach_other_handlers(tmp_path, capsys, caplog):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["tiny-model", "--out", str(a_file)]) == 2  # any command; this one stops at once
    main(["tiny-model", "--out", str(a_file)])  # a second call adds no second handler
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="train.pipeline"):
        logging.getLogger("train.pipeline").info("a progress note")
    assert capsys.readouterr().out.count("a progress note") == 1
    assert "a progress note" in caplog.text  # pytest's handler on the root logger (or a user's) still sees it


def test_app_prints_its_log_line_once(tmp_path):
    """`exo2ego app` (like `serve`) relies on the command's project log handler; a root handler of its own
    printed every project line a second time."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "exo2ego",
            "app",
            "--model",
            "org/exo2ego",
            "--write-space",
            str(tmp_path),
            "--examples",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (completed.stdout + completed.stderr).count("wrote the Space to") == 1
