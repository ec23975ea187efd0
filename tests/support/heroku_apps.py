"""Apps for the installers on Heroku: a private library served by sshd, the manifests and
lockfiles of pip/uv/Poetry/Pipenv, the Python buildpack's tools, key dirs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    KIT,
    Build,
    GeneratedKey,
    files_with_key,
    key_dirs,
    key_fragments,
    make_key,
    text_has_key,
)
from support import installers
from support.gitserver import GitServer
from support.installers import LOCKFILES, REPO, Tools

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


@pytest.fixture
def buildpack(tmp_path: Path) -> Iterator[Path]:
    """The kit as the platform checks a buildpack out for a build: a copy of its bin/ and lib/.
    bin/compile writes the handoff to BUILDPACK_DIR/export; in the working tree's own kit, other
    test runs on this machine (tests/platforms/test_heroku.py) write and remove that file at the same time.
    The export file is removed after each test, as tests/platforms/test_heroku.py does."""
    copy = tmp_path / "buildpack"
    for part in ("bin", "lib"):
        shutil.copytree(KIT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        yield copy
    finally:
        (copy / "export").unlink(missing_ok=True)
