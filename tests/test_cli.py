"""The command line: usage errors exit 2, user errors 1, bugs 3 with a report request."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from deploykey import cli


def test_version_and_help() -> None:
    result = subprocess.run([str(BIN / "deploykey"), "--version"], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "deploykey 0.1.0\n")
    result = subprocess.run([str(BIN / "deploykey"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "pre-compile" in result.stdout


def test_python_dash_m(tmp_path: Path) -> None:
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(BIN.parent / "lib")}
    result = subprocess.run(
        [sys.executable, "-m", "deploykey", "detect", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1 and "no private git dependency" in result.stdout


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_bug_exits_3(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykey import heroku

    def broken(_build_dir: str) -> int:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(heroku, "release", broken)
    assert cli.main(["release", "."]) == 3
    err = capsys.readouterr().err
    assert "deploykey failed unexpectedly: ZeroDivisionError: boom" in err
    assert "This is a bug in deploykey; please report it" in err
