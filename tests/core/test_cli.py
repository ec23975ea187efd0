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
    from deploykey.platforms import heroku

    def broken(_build_dir: str) -> int:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(heroku, "release", broken)
    assert cli.main(["release", "."]) == 3
    err = capsys.readouterr().err
    assert "deploykey failed unexpectedly: ZeroDivisionError: boom" in err
    assert "This is a bug in deploykey; please report it" in err


# As nobody (setpriv; the tests run as root, whom nothing stops): the kit's entry point, or not,
# then another process of the same user, as a package's build code would be, opens the kit's
# /proc files.
PEEKED = """\
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from deploykey import cli
if sys.argv[2] == "main":
    cli.main(["--version"])
peek = '''
import sys
for what in ("environ", "mem", "fd/0"):
    try:
        open(f"/proc/{sys.argv[1]}/{what}", "rb").close()
        print(what, "read")
    except PermissionError:
        print(what, "refused")
'''
argv = [sys.executable, "-I", "-c", peek, str(os.getpid())]
print(subprocess.run(argv, capture_output=True, text=True, check=True).stdout, end="")
"""


@pytest.mark.parametrize("entered", [True, False], ids=["after-main", "without-main"])
def test_build_code_of_the_same_user_cannot_read_the_kits_process(entered: bool) -> None:
    """main() makes the process undumpable (PR_SET_DUMPABLE): its environment, memory and open
    files, where the key is while it runs, are closed to other processes of its user. Without
    main() the same reader reads them all: the test can tell."""
    from support.nonroot import SYSTEM_PYTHON, nobody

    user = nobody()
    result = subprocess.run(
        [
            *("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"),
            *(SYSTEM_PYTHON, "-I", "-c", PEEKED, str(BIN.parent / "lib")),
            "main" if entered else "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    said = "refused" if entered else "read"
    assert result.stdout.splitlines()[-3:] == [f"{f} {said}" for f in ("environ", "mem", "fd/0")]
