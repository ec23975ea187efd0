"""pip, uv, Poetry and Pipenv, in their current releases, install a private git dependency with
deploykey: handed off by bin/compile before heroku/python (mode a), through the app hooks (mode
b), and in a CI job (`deploykey setup --shell` / `cleanup --shell`). Each installer runs exactly as
heroku-buildpack-python v351 runs it (tests/installers.py), against the real sshd git server,
with no package index and no network, and every build ends with no key anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import installers
from conftest import (
    BIN,
    KIT,
    Build,
    GeneratedKey,
    files_with_key,
    key_dirs,
    key_fragments,
    make_key,
    snapshot,
    text_has_key,
)
from gitserver import GitServer
from installers import GREETING, LOCKFILES, MANAGERS, REPO, Tools

IMPORT = "import noindex_lib, sys; print(noindex_lib.hello()); print(noindex_lib.__file__)"


@pytest.fixture(scope="session")
def tools() -> Tools:
    return installers.install_tools()


@pytest.fixture(scope="module")
def lib_key(git_server: GitServer, tmp_path_factory: pytest.TempPathFactory) -> GeneratedKey:
    """acme/noindex-lib on the server, and a deploy key that opens it (and nothing else)."""
    installers.serve_noindex(git_server)
    key = make_key(tmp_path_factory.mktemp("keys"))
    git_server.grant(key.label, key.public, [REPO])
    return key


@pytest.fixture(scope="module")
def locked(
    git_server: GitServer,
    lib_key: GeneratedKey,
    tools: Tools,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, str]]:
    """Each manager's app files, its lockfile made as a developer would (see `lock`)."""
    apps: dict[str, dict[str, str]] = {"pip": installers.manifests("pip")}
    for manager in installers.LOCK_COMMANDS:
        root = tmp_path_factory.mktemp(f"lock-{manager}")
        apps[manager] = lock(
            git_server, lib_key, tools, root, manager, installers.manifests(manager)
        )
    return apps


def lock(
    git_server: GitServer,
    key: GeneratedKey,
    tools: Tools,
    root: Path,
    manager: str,
    files: dict[str, str],
    repos: tuple[str, ...] = (REPO,),
) -> dict[str, str]:
    """The app's `files` and the lockfile `manager` makes for them, as a developer makes it: the
    tool's own lock command between `deploykey setup --shell --key-file KEY` and `deploykey
    cleanup --shell`, against the sshd git server (the lockfile then records each of `repos`)."""
    app, home = root / "app", root / "home"
    app.mkdir()
    home.mkdir()
    for name, text in files.items():
        (app / name).write_text(text)
    (app / "deploykey.yml").write_text(git_server.deploykey_yml())
    before = key_dirs()
    env = installers.tool_env(tools, home, root / "scratch")
    env["SETUP_EXPORTS"] = str(root / "exports")
    script = installers.with_deploykey(installers.LOCK_COMMANDS[manager], f"--key-file {key.path}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=app, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", "cleanup --shell left variables set: " + done.stdout
    assert key_dirs_with(key, before) == []
    assert installers.ssh_calls(root / "scratch" / "ssh-guard") == []
    lockfile = LOCKFILES[manager]
    assert lockfile is not None
    text = (app / lockfile).read_text()
    # The lockfile records the repository's real URL, never the mirror git fetched it from.
    mirrors = (root / "exports").read_text()
    assert "file://" in mirrors and "insteadOf" in mirrors
    for repo in repos:
        assert f"ssh://git@github.com/{repo}" in text, text
    assert "file:" not in text and "mirrors" not in text and str(root) not in text, text
    assert not text_has_key(done.stdout + done.stderr + text, key.text)
    assert files_with_key([app, home], key.text) == []
    return {**files, lockfile: text}


def write_app(build: Build, files: dict[str, str]) -> None:
    """The app as it is pushed: its manifests, lockfile and deploykey.yml, nothing else."""
    (build.app / "requirements.txt").unlink()
    for name, text in files.items():
        (build.app / name).write_text(text)


def assert_installed(compiled: installers.Compiled) -> None:
    assert compiled.result.returncode == 0, compiled.output
    ran = compiled.python(IMPORT)
    assert ran.returncode == 0, ran.stderr
    greeting, where = ran.stdout.splitlines()
    assert greeting == GREETING
    assert Path(where).is_relative_to(compiled.python_home), where


def key_dirs_with(key: GeneratedKey, before: set[str]) -> list[str]:
    """The key dirs made since `before` that hold this key. Another developer's test run on this
    machine has key dirs of its own, with its own keys (a GitHub App's .pem too), at any moment:
    only this key counts (not conftest's "any private key" check)."""
    fragments = key_fragments(key.text)
    found = []
    for directory in sorted(key_dirs() - before):
        try:
            files = [p for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink()]
            for path in files:
                data = path.read_bytes()
                flat = data.replace(b"\r", b"").replace(b"\n", b"")
                if any(f in data or f in flat for f in fragments):
                    found.append(str(path))
        except FileNotFoundError:  # removed while we looked: another run's, gone
            continue
    return found


def assert_no_key(build: Build, key: GeneratedKey, output: str, before: set[str]) -> None:
    """No key left anywhere, and no ssh after deploykey's fetch (the installers had none)."""
    assert installers.ssh_calls(build.root / "scratch" / "ssh-guard") == []
    assert key_dirs_with(key, before) == []
    assert files_with_key([build.app, build.cache, build.home], key.text) == []
    assert not text_has_key(output, key.text)


@pytest.fixture
def buildpack(tmp_path: Path) -> Iterator[Path]:
    """The kit as the platform checks a buildpack out for a build: a copy of its bin/ and lib/.
    bin/compile writes the handoff to BUILDPACK_DIR/export; in the working tree's own kit, other
    test runs on this machine (tests/test_heroku.py) write and remove that file at the same time.
    The export file is removed after each test, as tests/test_heroku.py does."""
    copy = tmp_path / "buildpack"
    for part in ("bin", "lib"):
        shutil.copytree(KIT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        yield copy
    finally:
        (copy / "export").unlink(missing_ok=True)


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
    assert all(line.startswith(("[url ", "insteadOf = ", "#")) for line in settings if line), left

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
