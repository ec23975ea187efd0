"""The environment a uv.lock or poetry.lock install made is kept in the build cache and restored
by the next build while nothing it was made from changed (lib/deploykey/installers/keptvenv.py): with the
real uv and Poetry, the real sshd git server, no index and no network. A changed manifest still
runs the tool (and an outdated lockfile still fails the build); a lockfile with a package from a
local path is never kept. A rotated key drops the copy: test_next_build_installers.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Build, GeneratedKey, files_with_key
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors
from deploykey.installers import install, keptvenv
from deploykey.installers.installer import Installer
from support.heroku_apps import IMPORT, lib_key, locked, tools, write_app
from support.installers import GREETING, LOCKFILES, Tools
from support.lockfile_apps import break_lockfile, compile_env, run_compile, tool_links

__all__ = ["lib_key", "locked", "tools"]  # fixtures, from tests/support/heroku_apps.py

SHOWN = {"uv": "uv", "poetry": "Poetry"}


def ran_the_tool(stdout: str, manager: str) -> bool:
    return any(
        line.startswith("       $ ") and f"/{manager} sync " in line for line in stdout.splitlines()
    )


def built_once(
    build: Build, lib_key: GeneratedKey, files: dict[str, str], tools: Tools
) -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
    """The app with `files`, built once with an empty cache: the environment for the next build
    and what the first one said."""
    write_app(build, files)
    build.set_key(lib_key.text)
    env = compile_env(build, tools, tool_links(tools, build.root / "scratch"))
    first = run_compile(build, env)
    assert first.returncode == 0, first.stdout + first.stderr
    return env, first


@pytest.mark.parametrize("manager", ["uv", "poetry"])
def test_a_warm_build_restores_the_environment_without_running_the_tool(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    env, first = built_once(build, lib_key, locked[manager], tools)
    assert ran_the_tool(first.stdout, manager)
    [kept] = [p for p in (build.cache / "deploykey" / keptvenv.DIR).iterdir() if p.is_dir()]
    assert (
        f"       kept {build.app_path}/.venv in {kept}: the next build restores it" in first.stdout
    )
    shutil.rmtree(build.app / ".venv")  # a fresh checkout of the app, the same build cache
    build.set_key(lib_key.text)  # compile removed it from the env dir (STACK=heroku-24)
    second = run_compile(build, env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert not ran_the_tool(second.stdout, manager), second.stdout
    assert (
        f"       restored {build.app_path}/.venv from {kept}: {SHOWN[manager]} made it from "
        "exactly these inputs"
    ) in second.stdout
    # Found before any fetch: no ssh-agent, no ssh, no git with the key (build.kept_first).
    assert (
        f"-----> Restoring {build.app_path}/.venv (venv; DEPLOYKEY_INSTALL=venv) as "
        f"{SHOWN[manager]} made it from {LOCKFILES[manager]} in an earlier build: nothing to "
        "fetch, nothing runs\n"
    ) in second.stdout
    assert "Fetching" not in second.stdout and "ssh ready" not in second.stdout
    ran = build.run_app(IMPORT)
    greeting, where = ran.stdout.splitlines()
    assert greeting == GREETING
    assert Path(where).is_relative_to(build.app_path / ".venv"), where
    assert files_with_key([build.app, build.cache], lib_key.text) == []


@pytest.mark.parametrize("manager", ["uv", "poetry"])
def test_a_changed_manifest_runs_the_tool_and_an_outdated_lockfile_still_fails(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    env, _first = built_once(build, lib_key, locked[manager], tools)
    shutil.rmtree(build.app / ".venv")
    break_lockfile(build, manager)  # pyproject.toml changed, the lockfile not
    build.set_key(lib_key.text)
    second = run_compile(build, env)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "restored " not in second.stdout
    assert ran_the_tool(second.stdout, manager)
    assert f" !     {LOCKFILES[manager]} is out of date" in second.stderr
    assert not (build.app / ".venv").exists()  # nothing half-written


UV_EDITABLE = """\
version = 1
[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
"""
POETRY_PATH = """\
[[package]]
name = "lib"
version = "1.0"
[package.source]
type = "directory"
url = "libs/lib"
"""
POETRY_GIT = """\
[[package]]
name = "lib"
version = "1.0"
[package.source]
type = "git"
url = "ssh://git@github.com/acme/lib.git"
resolved_reference = "0123456789abcdef0123456789abcdef01234567"
"""
POETRY_VIRTUAL = '[project]\nname = "app"\n\n[tool.poetry]\npackage-mode = false\n'


@pytest.mark.parametrize(
    ("manager", "lockfile", "pyproject", "why"),
    [
        (
            "uv",
            UV_EDITABLE,
            '[project]\nname = "app"\n',
            "uv.lock installs a package from a local path",
        ),
        ("poetry", POETRY_PATH, POETRY_VIRTUAL, "poetry.lock installs a package from a local path"),
        ("poetry", POETRY_GIT, '[project]\nname = "app"\n', "Poetry installs the project itself"),
        ("poetry", POETRY_GIT, POETRY_VIRTUAL, None),
    ],
)
def test_only_an_environment_made_from_pinned_sources_alone_is_kept(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    manager: str,
    lockfile: str,
    pyproject: str,
    why: str | None,
) -> None:
    name = str(LOCKFILES[manager])
    (tmp_path / name).write_text(lockfile)
    (tmp_path / "pyproject.toml").write_text(pyproject)
    installer = Installer(manager, tmp_path / "cache", None, name, ("/bin/true",))
    where = tmp_path / ".venv"
    kept = keptvenv.of(installer, [manager, "sync"], {"HOME": str(tmp_path)}, tmp_path, where)
    said = capsys.readouterr().out
    if why is None:
        assert kept is not None and kept.root == tmp_path / "cache" / keptvenv.DIR, said
        return
    assert kept is None
    assert f"{where} is not kept for the next build: {why}" in said


def test_every_input_changes_the_digest(tmp_path: Path) -> None:
    (tmp_path / "poetry.lock").write_text(POETRY_GIT)
    (tmp_path / "pyproject.toml").write_text(POETRY_VIRTUAL)
    installer = Installer("poetry", tmp_path / "cache", None, "poetry.lock", ("/bin/true",))
    where, env = tmp_path / ".venv", {"HOME": str(tmp_path / "home"), "POETRY_X": "1"}

    def digest(**changed: object) -> str:
        kept = keptvenv.of(
            installer,
            list(changed.get("argv", ["poetry", "sync"])),  # type: ignore[call-overload]
            dict(changed.get("env", env)),  # type: ignore[call-overload]
            tmp_path,
            Path(str(changed.get("where", where))),
        )
        assert kept is not None
        return kept.digest

    first = digest()
    assert digest() == first
    assert digest(env={**env, "HOME": str(tmp_path / "another-home")}) == first  # per build
    assert digest(env={**env, "POETRY_X": "2"}) != first
    # No digest to test guesses of a password against: credentials change nothing installed.
    index = "https://user:{}@pypi.example/simple"
    assert digest(env={**env, "PIP_INDEX_URL": index.format("a")}) == digest(
        env={**env, "PIP_INDEX_URL": index.format("b")}
    )
    assert digest(env={**env, "PIP_INDEX_URL": index.format("a")}) != first
    assert digest(env={**env, "UV_INDEX_X_PASSWORD": "a"}) == digest(
        env={**env, "UV_INDEX_X_PASSWORD": "b"}
    )
    assert digest(argv=["poetry", "sync", "--with", "dev"]) != first
    assert digest(where=tmp_path / "elsewhere") == first  # moved when restored
    assert digest(env={**env, "VIRTUAL_ENV": str(where)}) == digest(
        env={**env, "VIRTUAL_ENV": str(tmp_path / "elsewhere")},
        where=tmp_path / "elsewhere",
    )
    (tmp_path / "poetry.toml").write_text("[virtualenvs]\nin-project = true\n")
    assert digest() != first
    config = tmp_path / "home" / ".config" / "pypoetry" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[installer]\nno-binary = [':all:']\n")
    second = digest()
    assert second != first
    (tmp_path / "poetry.lock").write_text(POETRY_GIT.replace("0123", "4567"))
    assert digest() != second


def test_a_linked_or_missing_copy_is_not_restored(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "bin").mkdir(parents=True)
    root = tmp_path / "venvs"
    root.mkdir()
    kept = keptvenv.Kept(root, "0" * 64, "uv")
    assert not kept.restore(tmp_path / "a")
    os.symlink(elsewhere, kept.path)
    assert not kept.restore(tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_save_keeps_one_copy_and_restore_moves_it_where_this_build_makes_it(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "build-1" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    (venv / "bin" / "hello").write_text(f"#!{venv}/bin/python\nprint('hello')\n")
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ncommand = python3 -m venv {venv}\n")
    (venv / "lib").mkdir()
    (venv / "lib" / "data.txt").write_text(f"{venv}\n")  # not a script: left as it is
    root = tmp_path / "venvs"
    keptvenv.Kept(root, "1" * 64, "uv").save(venv)
    keptvenv.Kept(root, "2" * 64, "uv").save(venv)
    assert sorted(p.name for p in root.iterdir()) == ["2" * 64, "2" * 64 + ".from"]
    target = tmp_path / "build-2" / ".venv"
    assert keptvenv.Kept(root, "2" * 64, "uv").restore(target)
    assert os.readlink(target / "bin" / "python") == "/usr/bin/python3"
    assert (target / "bin" / "hello").read_text() == f"#!{target}/bin/python\nprint('hello')\n"
    assert (target / "pyvenv.cfg").read_text().endswith(f"-m venv {target}\n")
    assert (target / "lib" / "data.txt").read_text() == f"{venv}\n"
    assert (root / ("2" * 64) / "bin" / "hello").read_text().startswith(f"#!{venv}/")


def test_a_job_that_only_restores_fails_clearly_without_a_copy_and_drops_it(
    tmp_path: Path,
) -> None:
    """A warm build that fetched nothing (build.kept_first) has no mirror to install from: when
    the copy cannot be restored after all, it fails naming why, with nothing run and nothing
    half-written, and drops the copy so that the next build installs."""
    (tmp_path / "poetry.lock").write_text(POETRY_GIT)
    (tmp_path / "pyproject.toml").write_text(POETRY_VIRTUAL)
    ran = tmp_path / "ran"
    tool = ("/bin/sh", "-c", f"touch {ran}")
    installer = Installer("poetry", tmp_path / "cache", None, "poetry.lock", tool)
    nothing = mirrors.Mirrors(tmp_path / "cache" / "mirrors", (), ())
    job = install.Job(installer, tmp_path / "poetry.lock", {}, tmp_path, nothing, None, True, True)
    where = tmp_path / ".venv"
    kept = install.kept_for(where, job)
    assert kept is not None and not kept.present
    kept.path.mkdir(parents=True)
    kept.made_at.write_bytes(b"\xff not a path")  # unreadable: neither present nor restored
    assert not kept.present
    with pytest.raises(UserError) as raised:
        install.into(where, True, job)
    assert raised.value.slug == "install::kept-lost"
    assert f"could not be restored into {where}" in raised.value.title
    assert not ran.exists() and not where.exists()
    assert not kept.path.exists() and not kept.made_at.exists()


def test_a_copy_that_cannot_be_restored_is_fetched_and_installed_instead(
    build: Build, lib_key: GeneratedKey, locked: dict[str, dict[str, str]], tools: Tools
) -> None:
    """A kept copy whose record of where it was made is unreadable is not taken for one before
    the fetch: the warm build fetches and runs uv as a cold one does, and keeps a new copy."""
    env, _first = built_once(build, lib_key, locked["uv"], tools)
    [made_at] = (build.cache / "deploykey" / keptvenv.DIR).glob("*.from")
    made_at.write_bytes(b"\xff")
    shutil.rmtree(build.app / ".venv")
    build.set_key(lib_key.text)
    second = run_compile(build, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "-----> Fetching every private repository" in second.stdout
    assert ran_the_tool(second.stdout, "uv"), second.stdout
    assert "-----> Restoring" not in second.stdout
    assert made_at.read_text() == f"{build.app_path}/.venv"
    assert files_with_key([build.app, build.cache], lib_key.text) == []
