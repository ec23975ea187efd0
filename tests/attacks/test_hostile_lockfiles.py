"""A hostile private dependency pinned by uv.lock or poetry.lock: uv or Poetry runs its build backend
while deploykey installs the lockfile (bin/compile, DEPLOYKEY_INSTALL=venv), and the backend
searches the machine for the key as tests/attacks/test_hostile.py's does for pip: its environment,
every process's cmdline and environ, the env dir, /dev/shm, TMPDIR, HOME, git's credential helpers
and settings, an ssh agent. It finds nothing: the fetch came first, and the key was gone before the
tool started. The package builds with no index (tests/support/installers.py's in-tree backend), as
the lockfile installs run with no network; the lockfiles are made by the tools themselves.
"""

from __future__ import annotations

import pytest

from conftest import Build, GeneratedKey, make_key
from support import installers
from support.gitserver import GitServer
from support.heroku_apps import lock, tools, write_app
from support.hostile import SEARCH, assert_found_nothing
from support.installers import Tools
from support.lockfile_apps import compile_with_key

__all__ = ["tools"]  # a fixture, from tests/support/heroku_apps.py

REPO = "acme/hostile-lib"
MANAGERS = ("uv", "poetry")


def hostile_package() -> dict[str, str]:
    """hostile-lib: the no-index test package whose backend searches before it builds a wheel."""
    files = installers.noindex_package(REPO.rpartition("/")[2])
    files["backend.py"] += SEARCH + (
        "\n_build_wheel = build_wheel\n\n\n"
        "def build_wheel(*args, **kwargs):\n    _loot()\n    return _build_wheel(*args, **kwargs)\n"
    )
    return files


@pytest.fixture(scope="module")
def hostile_locked(
    git_server: GitServer, tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> tuple[GeneratedKey, dict[str, dict[str, str]]]:
    """The repository, a deploy key that opens it, and each tool's app locked on it."""
    if not (git_server.root / "repos" / f"{REPO}.git").is_dir():
        git_server.add_repo(REPO, hostile_package())
    key = make_key(tmp_path_factory.mktemp("hostile-keys"))
    git_server.grant(key.label, key.public, [REPO])
    apps = {
        manager: lock(
            git_server,
            key,
            tools,
            tmp_path_factory.mktemp(f"hostile-lock-{manager}"),
            manager,
            installers.manifests(manager, (REPO,)),
            (REPO,),
        )
        for manager in MANAGERS
    }
    return key, apps


@pytest.mark.parametrize("manager", MANAGERS)
def test_a_hostile_locked_dependency_finds_no_key(
    build: Build,
    hostile_locked: tuple[GeneratedKey, dict[str, dict[str, str]]],
    tools: Tools,
    manager: str,
) -> None:
    key, apps = hostile_locked
    write_app(build, apps[manager])
    result, before = compile_with_key(build, tools, key.text)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"removed DEPLOY_KEY from {build.env_dir}" in result.stdout
    assert (build.home / "loot").is_file(), "the backend did not run: " + out
    assert_found_nothing(build, key, out, before)
