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
