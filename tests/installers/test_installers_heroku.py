"""pip, uv, Poetry and Pipenv, in their current releases, install a private git dependency with
deploykey: handed off by bin/compile before heroku/python (mode a), through the app hooks (mode
b), and in a CI job (`deploykey setup --shell` / `cleanup --shell`). Each installer runs exactly as
heroku-buildpack-python v351 runs it (tests/support/installers.py), against the real sshd git server,
with no package index and no network, and every build ends with no key anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (
    BIN,
    Build,
    GeneratedKey,
    files_with_key,
    key_dirs,
    snapshot,
    text_has_key,
)
from support import heroku_apps, installers
from support.gitserver import GitServer
from support.heroku_apps import IMPORT, key_dirs_with, write_app
from support.installers import GREETING, MANAGERS, REPO, Tools

# fixtures, used by name
buildpack = heroku_apps.buildpack
lib_key = heroku_apps.lib_key
locked = heroku_apps.locked
tools = heroku_apps.tools


def assert_installed(compiled: installers.Compiled) -> None:
    assert compiled.result.returncode == 0, compiled.output
    ran = compiled.python(IMPORT)
    assert ran.returncode == 0, ran.stderr
    greeting, where = ran.stdout.splitlines()
    assert greeting == GREETING
    assert Path(where).is_relative_to(compiled.python_home), where


def assert_no_key(build: Build, key: GeneratedKey, output: str, before: set[str]) -> None:
    """No key left anywhere, and no ssh after deploykey's fetch (the installers had none)."""
    assert installers.ssh_calls(build.root / "scratch" / "ssh-guard") == []
    assert key_dirs_with(key, before) == []
    assert files_with_key([build.app, build.cache, build.home], key.text) == []
    assert not text_has_key(output, key.text)


def users_own_files(build: Build) -> dict[str, tuple[str, str]]:
    """A user's own git and ssh settings in HOME (hostile ones), which must come out of the build
    byte for byte. (OpenSSH reads ~/.ssh from the passwd entry, not $HOME: the file only has
    to be left alone.)"""
    (build.home / ".gitconfig").write_text("[user]\n\tname = Dev\n[core]\n\tsshCommand = false\n")
    (build.home / ".ssh").mkdir()
    (build.home / ".ssh" / "config").write_text("Host *\n  IdentityFile ~/.ssh/id_other\n")
    return snapshot(build.home / ".gitconfig", build.home / ".ssh")


# ---------------------------------------------------------------- mode a: handoff through export


@pytest.mark.parametrize("manager", MANAGERS)
def test_handoff_to_heroku_python(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    buildpack: Path,
    manager: str,
) -> None:
    """deploykey before heroku/python: bin/compile fetches, removes the key, and writes only git
    settings into its export file; v351's installer then installs from the mirrors."""
    write_app(build, locked[manager])
    build.set_key(lib_key.text)
    build.set_key("off", name="DEPLOYKEY_INSTALL")
    before = key_dirs()
    user_files = users_own_files(build)
    home = snapshot(build.home)
    env = installers.heroku_environ(build.environ(), tools, build.root / "scratch")
    compiled = subprocess.run(
        [str(buildpack / "bin" / "compile"), str(build.app), str(build.cache), str(build.env_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    export = buildpack / "export"
    assert f"wrote {export}" in compiled.stdout
    # The key is gone before the next buildpack starts: only the mirrors' settings are handed on.
    assert key_dirs_with(lib_key, before) == []
    assert snapshot(build.home) == home
    handed = export.read_text()
    assert "GIT_CONFIG_COUNT" in handed and "GIT_SSH_COMMAND" not in handed
    assert f"file://{build.cache}/deploykey/mirrors/github.com/{REPO}" in handed

    python = installers.python_buildpack(
        build.app, build.cache, build.env_dir, env, tools, build.root / "scratch", export=export
    )
    assert python.manager == manager
    assert_installed(python)
    assert snapshot(build.home / ".gitconfig", build.home / ".ssh") == user_files
    assert_no_key(build, lib_key, compiled.stdout + compiled.stderr + python.output, before)


# ---------------------------------------------------------------- mode b: the app hooks


def write_hooks(build: Build) -> None:
    written = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)],
        capture_output=True,
        text=True,
        env=build.environ(),
    )
    assert written.returncode == 0, written.stderr


@pytest.mark.parametrize("manager", MANAGERS)
def test_app_hooks(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    """bin/pre_compile fetches and writes the mirrors' settings into $HOME/.gitconfig, the
    installer (another process) reads them there, bin/post_compile takes them out again."""
    write_app(build, locked[manager])
    write_hooks(build)
    build.set_key(lib_key.text)
    before = key_dirs()
    user_files = users_own_files(build)
    env = installers.heroku_environ(build.environ(), tools, build.root / "scratch")
    python = installers.python_buildpack(
        build.app, build.cache, build.env_dir, env, tools, build.root / "scratch"
    )
    assert python.manager == manager
    assert_installed(python)
    assert "-----> Running bin/post_compile hook" in python.result.stdout
    assert snapshot(build.home / ".gitconfig", build.home / ".ssh") == user_files
    assert_no_key(build, lib_key, python.output, before)


def break_app(build: Build, manager: str) -> str:
    """Make the install fail after pre_compile (a requirement no index has; a lockfile that no
    longer matches its manifest), and return what the installer says about it."""
    if manager == "pip":
        path = build.app / "requirements.txt"
        path.write_text(path.read_text() + "no-such-package-anywhere==1.0\n")
        return "No matching distribution found for no-such-package-anywhere==1.0"
    if manager == "pipenv":
        path = build.app / "Pipfile"
        path.write_text(path.read_text() + 'no-such-package-anywhere = "==1.0"\n')
        return "DeployException"  # Pipfile.lock is out of date
    path = build.app / "pyproject.toml"
    path.write_text(path.read_text().replace('">=3.10"', '">=3.11"'))
    if manager == "uv":
        return "needs to be updated, but `--locked` was provided"
    return "pyproject.toml changed significantly since poetry.lock was last generated"


@pytest.mark.parametrize("manager", MANAGERS)
def test_app_hooks_failed_install(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    """v351 exits when the install fails, before post_compile: pre_compile must have left no key,
    only its marked .gitconfig block (no key in it), which the next build's hooks take out."""
    write_app(build, locked[manager])
    pushed = {p.name: p.read_bytes() for p in build.app.iterdir() if p.is_file()}
    write_hooks(build)
    build.set_key(lib_key.text)
    before = key_dirs()
    user_files = users_own_files(build)
    gitconfig = (build.home / ".gitconfig").read_text()
    said = break_app(build, manager)
    env = installers.heroku_environ(build.environ(), tools, build.root / "scratch")
    failed = installers.python_buildpack(
        build.app, build.cache, build.env_dir, env, tools, build.root / "scratch"
    )
    assert failed.result.returncode == 1, failed.output
    assert said in failed.output, failed.output
    assert "-----> Running bin/pre_compile hook" in failed.result.stdout
    assert "-----> Running bin/post_compile hook" not in failed.result.stdout
    assert_no_key(build, lib_key, failed.output, before)
    # What is left: the user's .gitconfig as it was, then deploykey's block of mirror settings.
    left = (build.home / ".gitconfig").read_text()
    assert left.startswith(gitconfig)
    block = left[len(gitconfig) :].splitlines()
    assert block[0].startswith("# >>> deploykey") and block[-1] == "# <<< deploykey <<<", left
    mirror = f"file://{build.cache}/deploykey/mirrors/github.com/{REPO}"
    settings = [line.strip() for line in block[1:-1]]
    assert any(line.startswith(f'[url "{mirror}') for line in settings), left
    # The mirror rules, and each mirrored URL as a promisor remote (mirrors.Mirrors.promisors).
    ours = ("[url ", "insteadOf = ", "[remote ", "promisor = ", "partialCloneFilter = ", "#")
    assert all(line.startswith(ours) for line in settings if line), left

    # The next build: a fresh checkout and config vars, the same cache and HOME. Its pre_compile
    # takes the block out before anything else, and post_compile leaves .gitconfig as it was.
    shutil.rmtree(build.app)
    build.app.mkdir()
    for name, data in pushed.items():
        (build.app / name).write_bytes(data)
    write_hooks(build)
    build.set_key(lib_key.text)
    fixed = installers.python_buildpack(
        build.app, build.cache, build.env_dir, env, tools, build.root / "scratch"
    )
    assert_installed(fixed)
    assert snapshot(build.home / ".gitconfig", build.home / ".ssh") == user_files
    assert_no_key(build, lib_key, fixed.output, before)


# ---------------------------------------------------------------- CI: setup --shell / cleanup


@pytest.mark.parametrize("manager", MANAGERS)
def test_ci_setup_and_cleanup(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    """A CI job: `eval "$(deploykey setup --shell)"` with DEPLOY_KEY from the job's secrets, the
    tool's own install command, `eval "$(deploykey cleanup --shell)"`."""
    write_app(build, locked[manager])
    before = key_dirs()
    user_files = users_own_files(build)
    env = installers.tool_env(tools, build.home, build.root / "scratch")
    env["SETUP_EXPORTS"] = str(build.root / "exports")
    script = installers.with_deploykey(installers.CI_COMMANDS[manager], secret=lib_key.path)
    done = subprocess.run(
        ["bash", "-c", script], cwd=build.app, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", "cleanup --shell left variables set: " + done.stdout
    exports = (build.root / "exports").read_text()
    mirrors = exports.split("DEPLOYKEY_MIRRORS=")[1].split()[0].strip("'")
    assert f"file://{mirrors}/github.com/{REPO}" in exports
    assert not Path(mirrors).exists()  # cleanup removed the temporary mirrors
    venv = build.app / ".venv"
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT], capture_output=True, text=True, cwd="/"
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == GREETING
    assert Path(ran.stdout.splitlines()[1]).is_relative_to(venv)
    assert snapshot(build.home / ".gitconfig", build.home / ".ssh") == user_files
    assert_no_key(build, lib_key, done.stdout + done.stderr, before)


# ---------------------------------------------------------------- why mirrors, not GIT_SSH_COMMAND


def test_pip_replaces_a_handed_over_git_ssh_command(
    git_server: GitServer, lib_key: GeneratedKey, tools: Tools, tmp_path: Path
) -> None:
    """Why deploykey hands the installer mirrors, not an ssh command: pip (>= 25.1, here the
    pinned one) replaces GIT_SSH_COMMAND with `ssh -oBatchMode=yes` under --no-input, which v351
    always passes (lib/pip.sh). The same install without --no-input shows the command works."""
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{git_server.port} {git_server.host_key_public}\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host 127.0.0.1\n  IdentityFile {lib_key.path}\n  IdentitiesOnly yes\n"
        f"  IdentityAgent none\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
    )
    # The server by address: an ssh that is not this one fails on its unknown host key, offline.
    url = f"ssh://git@127.0.0.1:{git_server.port}/{REPO}.git"
    (tmp_path / "requirements.txt").write_text(f"noindex-lib @ git+{url}@v1.0\n")
    python = installers.venv_with_pip(tools, tmp_path / "venv")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GIT_SSH_COMMAND": f"ssh -F {config}",
        **installers.NO_NETWORK,
    }
    pip = [str(python / "bin" / "pip"), "install", "--no-cache-dir", "-r", "requirements.txt"]

    def install(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pip, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    refused = install("--no-input")
    assert refused.returncode == 1
    assert "Host key verification failed." in refused.stderr
    worked = install()
    assert worked.returncode == 0, worked.stdout + worked.stderr
    assert "Successfully installed noindex-lib-1.0" in worked.stdout
