"""deploykey installs uv.lock, poetry.lock and Pipfile.lock apps itself, with the real uv, Poetry
and Pipenv, chosen as heroku-buildpack-python v351 chooses: bin/compile with DEPLOYKEY_INSTALL=venv,
`deploykey install --venv`, the dry run's plan, ambiguous manifests, an outdated lockfile, and
Poetry bootstrapped from PyPI into the build cache. The lockfiles are made by the tools themselves
(tests/support/heroku_apps.py `locked`); the installs run with no package index and no network,
against the real sshd git server, and end with no key anywhere.
"""

from __future__ import annotations

import base64
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, files_with_key, key_dirs, make_key, text_has_key
from support import installers
from support.gitserver import GitServer
from support.heroku_apps import IMPORT, key_dirs_with, lib_key, lock, locked, tools, write_app
from support.installers import GREETING, LOCKFILES, REPO, Tools
from support.lockfile_apps import (
    COMMANDS,
    SHOWN,
    break_lockfile,
    compile_env,
    compile_with_key,
    run_compile,
    tool_links,
)

__all__ = ["lib_key", "locked", "tools"]  # fixtures, from tests/support/heroku_apps.py


def assert_runs_from_the_venv(build: Build) -> None:
    ran = build.run_app(IMPORT)
    assert ran.returncode == 0, ran.stderr
    greeting, where = ran.stdout.splitlines()
    assert greeting == GREETING
    assert Path(where).is_relative_to(build.app_path / ".venv"), where


def assert_no_key(build: Build, key: GeneratedKey, output: str, before: set[str]) -> None:
    """No key left anywhere, and no ssh but deploykey's own (the installers had none to run)."""
    assert installers.ssh_calls(build.root / "scratch" / "ssh-guard") == []
    assert key_dirs_with(key, before) == []
    assert files_with_key([build.app, build.cache, build.home], key.text) == []
    assert not text_has_key(output, key.text)


def fetched_by(server: GitServer, key: GeneratedKey) -> int:
    return sum(1 for line in server.log() if line.startswith(f"{key.label} {REPO} "))


# ---------------------------------------------------------------- compile, DEPLOYKEY_INSTALL=venv


@pytest.mark.parametrize("manager", ["uv", "poetry", "pipenv"])
def test_compile_installs_the_lockfile_with_its_tool(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    write_app(build, locked[manager])
    lockfile = LOCKFILES[manager]
    assert lockfile is not None
    pushed = (build.app / lockfile).read_bytes()
    result, before = compile_with_key(build, tools, lib_key.text)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    how = "uv sync" if manager == "uv" else SHOWN[manager]
    assert (
        f"-----> Installing {lockfile} into {build.app_path}/.venv (venv; DEPLOYKEY_INSTALL=venv) "
        f"with {how} ({lockfile} decides, as heroku-buildpack-python chooses), from the mirrors"
    ) in result.stdout
    commands = [line for line in result.stdout.splitlines() if line.startswith("       $ ")]
    # The venv at its run-time path, then the tool found on PATH: nothing from PyPI (no network).
    # `uv sync` makes the venv itself, with the Python deploykey runs with (UV_PYTHON).
    links = build.root / "scratch" / "tool-links"
    tool = f"       $ {links}/{manager} {COMMANDS[manager].split(' ', 1)[1]}"
    if manager == "uv":
        assert commands == [tool], result.stdout
        assert f"       Using CPython {platform.python_version()} interpreter at: " in out
        assert f"       Creating virtual environment at: {build.app_path}/.venv\n" in out
    else:
        assert len(commands) == 2, result.stdout
        assert commands[0].endswith(f" {build.app_path}/.venv")
        assert commands[1] == tool
    assert "(once: the build cache keeps it)" not in out
    assert_runs_from_the_venv(build)
    assert (build.app / lockfile).read_bytes() == pushed
    assert f"removed DEPLOY_KEY from {build.env_dir}" in result.stdout
    assert_no_key(build, lib_key, out, before)


def test_dry_run_names_the_package_manager_and_what_runs(
    build: Build, lib_key: GeneratedKey, locked: dict[str, dict[str, str]], tools: Tools
) -> None:
    write_app(build, locked["poetry"])
    build.set_key(lib_key.text)
    links = tool_links(tools, build.root / "scratch")
    result = run_compile(build, compile_env(build, tools, links), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    at = lines.index(f"       Install: {build.app_path}/.venv (venv; DEPLOYKEY_INSTALL=venv)")
    assert lines[at + 1 : at + 3] == [
        "         package manager: Poetry (poetry.lock decides, as heroku-buildpack-python "
        "chooses)",
        f"         runs: {COMMANDS['poetry']} (poetry on PATH ({links}/poetry))",
    ]
    assert not (build.app / ".venv").exists() and not any(build.cache.iterdir())

    # A requirements file: the plan says uv or pip as the build will run it.
    (build.app / "poetry.lock").unlink()
    (build.app / "requirements.txt").write_text(installers.REQUIREMENT + "\n")
    env = compile_env(build, tools, links, DEPLOYKEY_INSTALLER="auto")
    result = run_compile(build, env, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    at = lines.index(f"       Install: {build.app_path}/.venv (venv; DEPLOYKEY_INSTALL=venv)")
    assert lines[at + 1 : at + 3] == [
        "         package manager: uv or pip, for a requirements file (requirements.txt decides)",
        f"         runs: uv pip install --requirement {build.app}/requirements.txt, each checked "
        f"ref pinned to its commit (uv on PATH ({links}/uv))",
    ]
    (build.app / "requirements.txt").write_text(f"-e git+{installers.URL}@v1.0#egg=noindex-lib\n")
    result = run_compile(build, env, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"         runs: pip install --requirement {build.app}/requirements.txt (not uv: uv does "
        "not install `-e` VCS requirements: requirements.txt:1)"
    ) in result.stdout


# ---------------------------------------------------------------- deploykey install (Docker)


def test_install_venv_with_pipenv_and_refused_with_target(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    tmp_path: Path,
) -> None:
    """`deploykey install --venv` as a Dockerfile's RUN line runs it, with no -r: Pipfile.lock
    decides. --target has no place for Pipenv's environment: refused before any fetch."""
    write_app(build, locked["pipenv"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(lib_key.text)
    before, fetches = key_dirs(), fetched_by(build.server, lib_key)
    env = compile_env(build, tools, tool_links(tools, build.root / "scratch", ("pipenv",)))
    del env["STACK"], env["DEPLOYKEY_INSTALL"]
    cache = tmp_path / "cache"
    install = [
        str(BIN / "deploykey"),
        "install",
        "--env-dir",
        str(secrets),
        "--cache-dir",
        str(cache),
    ]

    refused = subprocess.run(
        [*install, "--target", str(tmp_path / "target")],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f" !     Pipfile.lock is installed with Pipenv into a virtual environment, not "
        f"{tmp_path}/target (pip --target)"
    ) in refused.stderr
    assert "(install::needs-venv: README.md#install-needs-venv)" in refused.stderr
    assert "Fetching" not in refused.stdout
    assert fetched_by(build.server, lib_key) == fetches
    assert not (tmp_path / "target").exists()

    venv = tmp_path / "venv"
    result = subprocess.run(
        [*install, "--venv", str(venv)],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        "package manager: Pipenv (Pipfile.lock decides, as heroku-buildpack-python chooses)" in out
    )
    assert f"-----> Installing Pipfile.lock into the virtual environment {venv} with Pipenv" in out
    assert f"$ {build.root}/scratch/tool-links/pipenv install --deploy" in out
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT], capture_output=True, text=True, cwd="/"
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == GREETING
    assert Path(ran.stdout.splitlines()[1]).is_relative_to(venv)
    assert fetched_by(build.server, lib_key) > fetches
    assert installers.ssh_calls(build.root / "scratch" / "ssh-guard") == []
    assert key_dirs_with(lib_key, before) == []
    assert files_with_key([build.app, venv, cache, build.home], lib_key.text) == []
    assert not text_has_key(out + refused.stdout + refused.stderr, lib_key.text)


# ---------------------------------------------------------------- refused before the fetch


def test_ambiguous_manifests_fail_before_any_fetch(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    tmp_path: Path,
) -> None:
    write_app(build, locked["uv"])
    (build.app / "requirements.txt").write_text(installers.REQUIREMENT + "\n")
    build.set_key(lib_key.text)
    before, fetches = key_dirs(), fetched_by(build.server, lib_key)
    title = (
        " !     Multiple Python package manager files were found: requirements.txt (pip), "
        "uv.lock (uv)"
    )
    env = compile_env(build, tools)
    for args in ((), ("--dry-run",)):
        result = run_compile(build, env, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert title in result.stderr
        assert "(manifests::ambiguous: README.md#manifests-ambiguous)" in result.stderr
        assert "Fetching" not in result.stdout
    assert fetched_by(build.server, lib_key) == fetches
    assert not any(build.cache.iterdir()) and not (build.app / ".venv").exists()
    assert (build.env_dir / "DEPLOY_KEY").exists()  # nothing was fetched, so nothing forgotten

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(lib_key.text)
    del env["STACK"], env["DEPLOYKEY_INSTALL"]
    result = subprocess.run(
        [
            str(BIN / "deploykey"),
            "install",
            "--venv",
            str(tmp_path / "venv"),
            "--env-dir",
            str(secrets),
        ],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and title in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "venv").exists()
    # The same app with the requirements file named: no ambiguity, the dry run goes ahead.
    result = run_compile(build, {**env, "DEPLOYKEY_REQUIREMENTS": "requirements.txt"}, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "package manager: uv or pip, for a requirements file (DEPLOYKEY_REQUIREMENTS names it)"
    ) in result.stdout
    assert fetched_by(build.server, lib_key) > fetches  # only now
    assert key_dirs_with(lib_key, before) == []


@pytest.mark.parametrize("manager", ["uv", "poetry", "pipenv"])
def test_outdated_lockfile_is_named_with_the_fix(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    write_app(build, locked[manager])
    break_lockfile(build, manager)
    build.set_key(lib_key.text)
    before = key_dirs()
    result = run_compile(
        build, compile_env(build, tools, tool_links(tools, build.root / "scratch"))
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    lockfile = LOCKFILES[manager]
    lock = installers.LOCK_COMMANDS[manager]
    assert (
        f" !     {lockfile} is out of date: {SHOWN[manager]} refused to install from it"
        in result.stderr
    )
    assert f"`{COMMANDS[manager]}` said so above" in result.stderr
    assert f'eval "$(bin/deploykey setup --shell)"; {lock}; eval' in result.stderr
    assert "(install::lock-outdated: README.md#install-lock-outdated)" in result.stderr
    assert not (build.app / ".venv").exists()  # the venv this build made went with the failure
    assert_no_key(build, lib_key, out, before)


# ---------------------------------------------------------------- Poetry from PyPI


def test_poetry_is_installed_from_pypi_once_then_reused(
    build: Build, lib_key: GeneratedKey, locked: dict[str, dict[str, str]], tools: Tools
) -> None:
    """No Poetry on PATH: the first build installs it from PyPI into the build cache (the one
    step of this module that uses the network); the next build of a fresh checkout, offline,
    finds it there."""
    write_app(build, locked["poetry"])
    pushed = {p.name: p.read_bytes() for p in build.app.iterdir() if p.is_file()}
    build.set_key(lib_key.text)
    before = key_dirs()
    env = compile_env(build, tools)
    assert shutil.which("poetry", path=env["PATH"]) is None
    online = {
        k: v
        for k, v in env.items()
        if k not in installers.NO_NETWORK and k not in ("PIP_NO_INDEX", "PIP_FIND_LINKS")
    }
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL"):
        if name in os.environ:  # this machine's way to PyPI
            online[name] = os.environ[name]
    poetry = build.cache / "deploykey" / "poetry"
    runs = f"         runs: {COMMANDS['poetry']} (poetry "
    plan = run_compile(build, env, "--dry-run")
    assert f"{runs}installed from PyPI into {poetry} by this build, kept for the next ones)" in (
        plan.stdout
    ), plan.stdout + plan.stderr
    # Offline (a dead proxy): the install of Poetry fails, named, and leaves nothing half-made.
    failed = run_compile(build, {**env, "PIP_RETRIES": "0"})
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f" !     Could not install poetry>=2.4,<3 into the build cache ({poetry})" in (
        failed.stderr
    )
    assert "(tool::bootstrap: README.md#tool-bootstrap)" in failed.stderr
    assert not [p.name for p in poetry.parent.iterdir() if "poetry" in p.name]
    assert not (build.app / ".venv").exists()
    assert_no_key(build, lib_key, failed.stdout + failed.stderr, before)
    build.set_key(lib_key.text)
    first = run_compile(build, online)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert f"installing poetry>=2.4,<3 into {poetry} (once: the build cache keeps it)" in out
    assert "Poetry (version 2." in out
    assert f"$ {poetry}/bin/python -m poetry sync --only main" in out
    assert_runs_from_the_venv(build)
    assert_no_key(build, lib_key, out, before)

    shutil.rmtree(build.app)
    shutil.rmtree(build.app_path)
    build.app.mkdir()
    for name, data in pushed.items():
        (build.app / name).write_bytes(data)
    build.set_key(lib_key.text)
    plan = run_compile(build, env, "--dry-run")
    assert f"{runs}cached in {poetry})" in plan.stdout, plan.stdout + plan.stderr
    second = run_compile(build, env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "installing poetry" not in out
    assert f"$ {poetry}/bin/python -m poetry sync --only main" in out
    assert_runs_from_the_venv(build)
    assert_no_key(build, lib_key, out, before)


# ---------------------------------------------------------------- a history the app does not need

HISTORY = "acme/uvhistory-lib"


def cold_build_with_history(
    build: Build, tools: Tools, tmp_path_factory: pytest.TempPathFactory, manager: str, repo: str
) -> tuple[GeneratedKey, dict[str, str], dict[str, str], int, int, set[str], str]:
    """An app whose lockfile (`manager`'s) pins `repo` at v1.0, after which the repository grows
    1.2 MB of history the app does not need; its cold build, which must succeed sending less than
    an eighth of that history. The key, the manifests, the build's environment, the bytes the
    cold build cost, the history's size, the key dirs before it and its output."""
    server = build.server
    installers.serve_noindex(server, repo)
    key = make_key(tmp_path_factory.mktemp("keys"))
    server.grant(key.label, key.public, [repo])
    manifests = installers.manifests(manager, (repo,))
    root = tmp_path_factory.mktemp(f"lock-{manager}-history")
    files = lock(server, key, tools, root, manager, manifests, (repo,))
    host = server.root / "repos" / f"{repo}.git"
    if not (host / "refs" / "tags" / "v2.0").exists():  # once a session (add_commit: loose refs)
        for n in (1, 2, 3):
            data = {"data.txt": base64.b64encode(os.urandom(300_000)).decode()}
            server.add_commit(repo, data, f"d{n}")
        server.add_commit(repo, {"data.txt": "small\n"}, "v2.0")
    history = sum(p.stat().st_size for p in (host / "objects").rglob("*") if p.is_file())
    write_app(build, files)
    build.set_key(key.text)
    before, dirs = server.sent(repo), key_dirs()
    env = compile_env(build, tools, tool_links(tools, build.root / "scratch"))
    result = run_compile(build, env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    cold = server.sent(repo) - before
    assert 0 < cold < history / 8, (cold, history)
    return key, manifests, env, cold, history, dirs, out


def test_a_uv_lockfile_app_gets_a_partial_mirror_and_a_warm_build_sends_nothing(
    build: Build, tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """uv.lock pins v1.0; the repository then grows 1.2 MB of history the app does not need (on
    main, past the pin). The cold build's host sends about what pip's `clone --filter=blob:none`
    would (commits and trees, the files of what is checked out), not the history; the mirror kept
    is partial; uv installs from it with no network (its lazy fetches reach the mirror); the warm
    build sends nothing."""
    from deploykey.fetch import mirrors

    server = build.server
    key, manifests, env, cold, history, dirs, out = cold_build_with_history(
        build, tools, tmp_path_factory, "uv", HISTORY
    )
    before = server.sent(HISTORY) - cold
    [mirror] = build.cache.glob("**/acme/uvhistory-lib.git")
    assert mirrors.is_partial(mirror), out
    ran = build.run_app("import uvhistory_lib; print(uvhistory_lib.hello())")
    assert ran.stdout == "hello from uvhistory-lib\n", ran.stderr
    assert_no_key(build, key, out, dirs)
    shutil.rmtree(build.app / ".venv")
    shutil.rmtree(build.app_path)  # the slug run_app extracted
    build.set_key(key.text)
    result = run_compile(build, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-----> Restoring" in result.stdout  # the kept environment: no fetch at all
    assert server.sent(HISTORY) - before == cold  # the warm build: not one byte
    # Without the kept environment, uv installs again from the partial mirror it left.
    [kept] = build.cache.glob("**/deploykey/venvs")
    shutil.rmtree(kept)
    shutil.rmtree(build.app / ".venv")
    build.set_key(key.text)
    result = run_compile(build, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-----> Restoring" not in result.stdout
    assert "(in the mirror, no network)" in result.stdout
    assert server.sent(HISTORY) - before == cold


POETRY_HISTORY = "acme/poetryhistory-lib"


def test_a_poetry_lockfile_app_gets_a_shallow_mirror_and_a_new_commit_costs_its_own(
    build: Build, tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """poetry.lock pins v1.0's commit; the repository then grows 1.2 MB of history. The cold
    build's host sends the commits asked for with their trees (a shallow mirror), not the
    history; Poetry's own clone of the mirror installs with no network; the warm build sends
    nothing; a lock moved to a later release costs about that release's own tree."""
    from deploykey.fetch import mirrors

    server = build.server
    repos = (POETRY_HISTORY,)
    key, manifests, env, cold, history, dirs, out = cold_build_with_history(
        build, tools, tmp_path_factory, "poetry", POETRY_HISTORY
    )
    before = server.sent(POETRY_HISTORY) - cold
    host = server.root / "repos" / f"{POETRY_HISTORY}.git"
    [mirror] = build.cache.glob("**/acme/poetryhistory-lib.git")
    assert mirrors.is_shallow(mirror) and not mirrors.is_partial(mirror), out
    ran = build.run_app("import poetryhistory_lib; print(poetryhistory_lib.hello())")
    assert ran.stdout == "hello from poetryhistory-lib\n", ran.stderr
    assert_no_key(build, key, out, dirs)
    shutil.rmtree(build.app / ".venv")
    shutil.rmtree(build.app_path)  # the slug run_app extracted
    # Without the kept venv (installers/keptvenv.py restores it, and nothing is fetched): the
    # mirror alone serves Poetry.
    shutil.rmtree(build.cache / "deploykey" / "venvs")
    build.set_key(key.text)
    result = run_compile(build, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(in the mirror, no network)" in result.stdout, result.stdout
    assert server.sent(POETRY_HISTORY) - before == cold  # the warm build: not one byte
    # A release after these builds, and the developer moves the lock to it: one depth-1 fetch
    # into the same mirror, about the new tree's size (the default branch's v2.0 came cold).
    if not (host / "refs" / "tags" / "v3.0").exists():
        data = {"data.txt": base64.b64encode(os.urandom(30_000)).decode()}
        server.add_commit(POETRY_HISTORY, data, "v3.0")
    newer = {name: text.replace("v1.0", "v3.0") for name, text in manifests.items()}
    root = tmp_path_factory.mktemp("lock-poetry-history-v2")
    for name, text in lock(server, key, tools, root, "poetry", newer, repos).items():
        (build.app / name).write_text(text)
    shutil.rmtree(build.app / ".venv")
    shutil.rmtree(build.app_path, ignore_errors=True)
    build.set_key(key.text)
    sent = server.sent(POETRY_HISTORY)
    result = run_compile(build, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 30_000 < server.sent(POETRY_HISTORY) - sent < history / 8
    assert mirrors.is_shallow(mirror) and "discarded" not in result.stdout + result.stderr
