"""The ``glorot`` command line of glorot_core: help text, JSON errors that point at the line, and a
progress bar whose clock starts with training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glorot_core.cli import JSONFileError, _Bar, build_parser, load_json, main
from glorot_core.progress import Progress


def test_help_describes_the_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "Glorot & Bengio" in out and "layer by layer" in out and "glorot run" in out
    assert "The ``glorot`` command line." not in out


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, glorot_core.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_json_syntax_error_shows_the_line_with_a_caret(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{\n  "train": {"steps": 10}} x\n}\n')
    with pytest.raises(JSONFileError) as err:
        load_json(str(spec))
    assert isinstance(err.value, json.JSONDecodeError)  # callers catching JSONDecodeError still do
    assert main(["validate", str(spec)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{spec}:2:27: not JSON: Extra data (line 2, column 27)"
    assert lines[1] == '    "train": {"steps": 10}} x'
    assert lines[2].index("^") == lines[1].index("x")


def test_a_missing_spec_file_is_an_error_not_a_traceback(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_the_bar_estimates_from_training_time_only(capsys: pytest.CaptureFixture[str]) -> None:
    bar = _Bar(1000)
    bar(Progress(0.0, 0, 1000, "setup", ""))
    bar(Progress(0.0, 0, 1000, "diagnose", ""))
    created = bar.bar.start_t
    bar.bar.start_t = created - 120.0  # as if set-up and the first snapshot took two minutes
    bar(Progress(0.01, 10, 1000, "train", ""))
    restarted = bar.bar.start_t
    bar.close()
    # the clock restarted when training began: its start is no earlier than the bar's creation, so the
    # two minutes of set-up are not in the rate (no wall-clock bound: a busy machine cannot fail this)
    assert restarted >= created
    assert bar.bar.n == 10
