"""Heroku compiles of lockfile apps (uv.lock, poetry.lock, Pipfile.lock) with no package index:
the compile's environment, the installers' tools linked in, the commands each runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BIN, Build, key_dirs
from support import installers
from support.installers import Tools

SHOWN = {"uv": "uv", "poetry": "Poetry", "pipenv": "Pipenv"}


COMMANDS = {
    "uv": "uv sync --locked --no-default-groups --no-progress",
    "poetry": "poetry sync --only main --no-interaction --no-ansi",
    "pipenv": "pipenv install --deploy",
}


def tool_links(
    tools: Tools, scratch: Path, names: tuple[str, ...] = ("uv", "poetry", "pipenv")
) -> Path:
    """A directory holding only the pinned tools (not their venvs' pythons), to put first on PATH:
    deploykey takes a uv, Poetry or Pipenv found on PATH before installing one from PyPI."""
    links = scratch / "tool-links"
    links.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = links / name
        if not link.exists():
            link.symlink_to(tools.executable(name))
    return links


def compile_env(
    build: Build, tools: Tools, path_first: Path | None = None, **extra: str
) -> dict[str, str]:
    """A Heroku build's environment (tests/support/installers.py `heroku_environ`: STACK, no index, no
    network, a stray GIT_SSH_COMMAND, the ssh guard first on PATH), installing into a venv."""
    scratch = build.root / "scratch"
    env = installers.heroku_environ(build.environ(), tools, scratch)
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    env.update(DEPLOYKEY_APP_PATH=str(build.app_path), DEPLOYKEY_INSTALL="venv", **extra)
    return env


def compile_with_key(
    build: Build, tools: Tools, key: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The key set, then bin/compile into a venv with the pinned tools first on PATH; and the key
    dirs there were before it ran."""
    build.set_key(key)
    before = key_dirs()
    return run_compile(
        build, compile_env(build, tools, tool_links(tools, build.root / "scratch"))
    ), before


def run_compile(build: Build, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def break_lockfile(build: Build, manager: str) -> None:
    """Change the manifest after locking, as tests/installers/test_installers_heroku.py `break_app` does."""
    if manager == "pipenv":
        path = build.app / "Pipfile"
        path.write_text(path.read_text() + 'no-such-package-anywhere = "==1.0"\n')
        return
    path = build.app / "pyproject.toml"
    path.write_text(path.read_text().replace('">=3.10"', '">=3.11"'))
