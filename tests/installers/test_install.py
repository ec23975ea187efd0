"""Where requirements are installed, by DEPLOYKEY_INSTALL and what the app dir holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WITHOUT_PROC
from deploykey.core import sources
from deploykey.core.errors import UserError
from deploykey.installers import install
from deploykey.secrets import config, keydir

LIB = Path(__file__).resolve().parents[2] / "lib"


def choose(tmp_path: Path, mode: str | None = None, stack: str = "") -> install.Target:
    environ = {"DEPLOYKEY_INSTALL": mode} if mode else {}
    env_dir = tmp_path / "env"
    env_dir.mkdir(exist_ok=True)
    settings = config.load(tmp_path, sources.read(env_dir), environ)
    return install.choose(tmp_path, settings, {"STACK": stack} if stack else {})


def test_auto(tmp_path: Path) -> None:
    assert choose(tmp_path).kind == "venv"
    assert choose(tmp_path, stack="heroku-24").kind == "off"
    python = tmp_path / ".heroku" / "python" / "bin"
    python.mkdir(parents=True)
    (python / "python").touch()
    assert choose(tmp_path, stack="heroku-24").kind == "python"


def test_explicit(tmp_path: Path) -> None:
    assert choose(tmp_path, "venv", stack="heroku-24").relative == Path(".venv")
    assert choose(tmp_path, "off").relative is None
    with pytest.raises(UserError) as caught:
        choose(tmp_path, "python")
    assert "the Python buildpack has not run yet" in caught.value.title


# A build that links APP_PATH -> BUILD_DIR for its venv the way install does, then waits: the
# test kills it (SIGKILL: no cleanup runs, the link stays) or leaves it running.
LINKING_BUILD = """\
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from deploykey.installers import install
from deploykey.leak.scrub import Cleanup
app_dir, app_path = Path(sys.argv[2]), Path(sys.argv[3])
with install.at_run_time_path(app_dir, app_path, Path(".venv"), Cleanup(), create=True):
    print("linked", flush=True)
    time.sleep(600)
"""

# The next build's check.
NEXT_BUILD = """\
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from deploykey.installers import install
for app_path in sys.argv[2:]:
    install._remove_stale_link(Path(app_path))
"""


def _linking_build(tmp_path: Path, name: str) -> tuple[subprocess.Popen[str], Path]:
    app_dir = tmp_path / name / "build"
    app_dir.mkdir(parents=True)
    app_path = tmp_path / name / "run" / "app"
    app_path.parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", LINKING_BUILD, str(LIB), str(app_dir), str(app_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "linked\n"
    assert app_path.is_symlink() and install._mark(app_path).exists()
    return process, app_path


def _killed(process: subprocess.Popen[str]) -> int:
    process.kill()
    process.wait(timeout=30)
    return process.pid


def _next_build(*app_paths: Path, proc: bool = True) -> str:
    argv = [sys.executable, "-I", "-c", NEXT_BUILD, str(LIB), *map(str, app_paths)]
    if not proc:
        argv = WITHOUT_PROC + argv
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("proc", [True, False], ids=["with-proc", "without-proc"])
def test_a_link_a_killed_build_left_is_removed_and_a_running_builds_stays(
    tmp_path: Path, proc: bool
) -> None:
    """Whether the build that made the link still runs is told by its lock on the mark, which the
    kernel drops when it dies: with no /proc visible (a container), the link a killed build left
    was never removed and every later build failed path::symlink."""
    killed, stale = _linking_build(tmp_path, "killed")
    running, live = _linking_build(tmp_path, "running")
    try:
        pid = _killed(killed)
        out = _next_build(stale, live, proc=proc)
        assert out == (
            f"       removed the link {stale} -> {tmp_path / 'killed' / 'build'}, left by a build "
            f"that ended without cleaning up (pid {pid}, killed?)\n"
        )
        assert list(stale.parent.iterdir()) == []
        assert live.is_symlink() and install._mark(live).exists()
    finally:
        _killed(running)


def test_a_link_the_mark_does_not_name_stays(tmp_path: Path) -> None:
    killed, app_path = _linking_build(tmp_path, "killed")
    _killed(killed)
    app_path.unlink()
    app_path.symlink_to(tmp_path / "the-users-choice")
    _next_build(app_path)
    assert app_path.readlink() == tmp_path / "the-users-choice"
    assert not install._mark(app_path).exists()  # the mark of a build that ended


def _mark_left(tmp_path: Path, stamp: str) -> Path:
    target = tmp_path / "old-build"
    app_path = tmp_path / "run" / "app"
    app_path.parent.mkdir(parents=True)
    app_path.symlink_to(target)
    install._mark(app_path).write_text(f"{target}\n{stamp}\n")
    return app_path


def test_a_mark_without_its_lock_is_of_an_ended_build(tmp_path: Path) -> None:
    """The lock, not the pid, decides: a mark whose pid runs (this very process) but that no one
    holds is of a build that ended."""
    app_path = _mark_left(tmp_path, keydir.stamp())
    install._remove_stale_link(app_path)
    assert list(app_path.parent.iterdir()) == []


def test_a_mark_from_before_the_lock_is_judged_by_proc(tmp_path: Path) -> None:
    """ "pid PID START", as deploykey wrote it before the lock (its build may run beside a newer
    one): removed only when /proc shows that process gone."""
    running = _mark_left(tmp_path / "running", f"pid {os.getpid()} {keydir._started(os.getpid())}")
    install._remove_stale_link(running)
    assert running.is_symlink() and install._mark(running).exists()
    child = subprocess.Popen(["sleep", "0"])
    started = keydir._started(child.pid)
    child.wait()
    ended = _mark_left(tmp_path / "ended", f"pid {child.pid} {started}")
    install._remove_stale_link(ended)
    assert list(ended.parent.iterdir()) == []
