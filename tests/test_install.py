"""Where requirements are installed, by DEPLOYKEY_INSTALL and what the app dir holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykey import config, install, sources
from deploykey.errors import UserError


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


def _link_left(tmp_path: Path, stamp: str) -> tuple[Path, Path]:
    target = tmp_path / "old-build"
    app_path = tmp_path / "run" / "app"
    app_path.parent.mkdir()
    app_path.symlink_to(target)
    install._mark(app_path).write_text(f"{target}\n{stamp}\n")
    return app_path, target


def _a_ended_stamp() -> str:
    import subprocess

    from deploykey import keydir

    child = subprocess.Popen(["sleep", "0"])
    started = keydir._started(child.pid)
    child.wait()
    return f"pid {child.pid} {started}"


def test_a_link_a_killed_build_left_is_removed(tmp_path: Path) -> None:
    app_path, _ = _link_left(tmp_path, _a_ended_stamp())
    install._remove_stale_link(app_path)
    assert list(app_path.parent.iterdir()) == []


def test_a_link_a_running_build_uses_stays(tmp_path: Path) -> None:
    from deploykey import keydir

    app_path, _ = _link_left(tmp_path, keydir.stamp())
    install._remove_stale_link(app_path)
    assert app_path.is_symlink() and install._mark(app_path).exists()


def test_a_link_the_mark_does_not_name_stays(tmp_path: Path) -> None:
    app_path, _ = _link_left(tmp_path, _a_ended_stamp())
    app_path.unlink()
    app_path.symlink_to(tmp_path / "the-users-choice")
    install._remove_stale_link(app_path)
    assert app_path.readlink() == tmp_path / "the-users-choice"
    assert not install._mark(app_path).exists()  # the mark of a build that ended
