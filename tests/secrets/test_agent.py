"""ssh agents. `deploykey install --agent` (Dockerfile.ssh's `RUN --mount=type=ssh`) asks the agent for
its keys first: built without `docker build --ssh default`, the error blames the agent, never the
key. And the agent of deploykey's own that holds the deploy keys during the fetch (agent.Own)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, files_with_key, make_key
from deploykey.core.errors import UserError
from deploykey.secrets import agent, keydir, keys
from support.nonroot import NonRoot


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent, in the foreground (-D) on a socket of the test's own; no key yet."""
    path = tmp_path / "agent.sock"
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(100):
            if path.is_socket():
                break
            time.sleep(0.05)
        assert path.is_socket(), "ssh-agent did not start"
        yield str(path)
    finally:
        process.terminate()
        process.wait(timeout=10)


def install(build: Build, tmp_path: Path, sock: str | None) -> subprocess.CompletedProcess[str]:
    env = build.environ(**({"SSH_AUTH_SOCK": sock} if sock is not None else {}))
    return subprocess.run(
        [str(BIN / "deploykey"), "install", "--agent", "--venv", str(tmp_path / "venv")],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


FIX = (
    " !     Fix: Start an agent that holds the deploy key, check it, and pass it to the build:\n"
    ' !          eval "$(ssh-agent -s)" && ssh-add deploy_key\n'
    " !          ssh-add -l    # must list the key\n"
    " !          docker build --ssh default -f Dockerfile.ssh .    (buildah: --ssh default)\n"
)


def assert_blames_the_agent(
    result: subprocess.CompletedProcess[str], sock: str, problem: str
) -> None:
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert f" !     The ssh agent at SSH_AUTH_SOCK={sock} cannot be used: {problem}\n" in err
    assert "This is not about the deploy key" in err
    assert FIX in err
    assert "(agent::unusable: README.md#agent-unusable)" in err
    for blame in ("refused the deploy key", "not registered", "doctor::failed", "(key::"):
        assert blame not in err, blame
    assert "Fetching" not in result.stdout  # nothing was tried with it


def test_nothing_at_the_socket_path(build: Build, tmp_path: Path) -> None:
    """BuildKit without `--ssh default`: SSH_AUTH_SOCK names a path where nothing is."""
    sock = str(tmp_path / "ssh_agent.0")
    assert_blames_the_agent(install(build, tmp_path, sock), sock, "nothing is there")


def test_a_regular_file_at_the_socket_path(build: Build, tmp_path: Path) -> None:
    path = tmp_path / "ssh_agent.0"
    path.write_text("")
    result = install(build, tmp_path, str(path))
    assert_blames_the_agent(result, str(path), "it is a regular file, not a socket")


def test_a_socket_no_agent_listens_on(build: Build, tmp_path: Path) -> None:
    """An agent that exited and left its socket file: connecting is refused."""
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))  # bound, never listening, then closed: the file stays
    result = install(build, tmp_path, str(path))
    assert_blames_the_agent(result, str(path), "no agent is listening on it (connection refused)")


def test_an_agent_with_no_key(build: Build, tmp_path: Path, ssh_agent: str) -> None:
    result = install(build, tmp_path, ssh_agent)
    assert_blames_the_agent(result, ssh_agent, "the agent holds no key")


def test_no_agent_at_all(build: Build, tmp_path: Path) -> None:
    result = install(build, tmp_path, None)
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert " !     --agent was given, but SSH_AUTH_SOCK is not set\n" in err
    assert "`ssh-add deploy_key`; `ssh-add -l` lists it" in err


def test_an_agent_with_the_key_installs(
    build: Build, tmp_path: Path, ssh_agent: str, utils_key: GeneratedKey
) -> None:
    subprocess.run(
        ["ssh-add", "-q", str(utils_key.path)], env={"SSH_AUTH_SOCK": ssh_agent}, check=True
    )
    result = install(build, tmp_path, ssh_agent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ssh agent {ssh_agent}: ssh-ed25519 {utils_key.fingerprint}\n" in result.stdout
    assert "via the ssh agent" in result.stdout + result.stderr
    assert list((tmp_path / "venv").glob("lib/python3*/site-packages/private_utils"))
    assert files_with_key([tmp_path / "venv", build.app], utils_key.text) == []


# ---------------------------------------------------------------- deploykey's own agent (agent.Own)

# A build that starts its own agent in a key dir of the test's own places, then waits to be killed.
KILLED_BUILD = """\
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from deploykey.secrets import agent, keydir
keydir.TMPFS, tempfile.tempdir = Path(sys.argv[2]), sys.argv[2]
own = agent.start(keydir.create([]).path)
print(own.pid, own.socket, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_builds_own_agent_holds_the_key_and_goes_with_the_key_dir(
    tmp_path: Path, keys_dir: Path
) -> None:
    """The key reaches the agent over a pipe (`ssh-add -`): no file in the key dir holds it; the
    agent lists exactly it; removing the key dir stops the agent and removes its socket."""
    generated = make_key(keys_dir)
    key = keys.load(generated.path.read_bytes(), "DEPLOY_KEY", "test")
    directory = keydir.create([tmp_path])
    try:
        own = agent.start(directory.path)
        directory.on_remove(own.stop)
        own.add(key)
        listed = subprocess.run(
            ["ssh-add", "-L"], env={"SSH_AUTH_SOCK": str(own.socket)}, capture_output=True
        )
        assert [b" ".join(line.split()[:2]) for line in listed.stdout.splitlines()] == [
            key.public.encode()
        ]
        assert files_with_key([directory.path], generated.text) == []
        assert alive(own.pid) and own.socket == directory.path / "agent.sock"
    finally:
        directory.remove()
    assert not alive(own.pid)
    assert not own.socket.exists() and not directory.path.exists()


def test_a_key_the_agent_refuses_is_a_clear_error(tmp_path: Path, keys_dir: Path) -> None:
    key = keys.load(make_key(keys_dir).path.read_bytes(), "DEPLOY_KEY", "test")
    directory = keydir.create([tmp_path])
    try:
        own = agent.start(directory.path)
        directory.on_remove(own.stop)
        own.stop()  # nothing listens any more
        with pytest.raises(UserError) as caught:
            own.add(key)
    finally:
        directory.remove()
    assert caught.value.slug == "agent::own"
    assert caught.value.title.startswith(
        f"deploykey could not hand the deploy keys to an ssh agent of its own: ssh-add refused "
        f"DEPLOY_KEY ({key.fingerprint}): "
    )


def test_the_agent_of_a_killed_build_exits_on_its_own(tmp_path: Path) -> None:
    """SIGKILL leaves the build no chance to stop its agent: the agent's command (`cat` on a pipe
    the build held) ends, and ssh-agent, which checks every 10 s that its command still runs,
    exits and removes its socket."""
    places = tmp_path / "shm"
    places.mkdir()
    lib = Path(__file__).resolve().parents[2] / "lib"
    argv = [sys.executable, "-I", "-c", KILLED_BUILD, str(lib), str(places)]
    build = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert build.stdout is not None
    pid, path = build.stdout.readline().split()
    try:
        assert alive(int(pid)) and Path(path).is_socket()
        build.kill()
        build.wait(timeout=30)
        for _ in range(1200):  # a bound, not a measure: it exits within 10 s
            if not alive(int(pid)):
                break
            time.sleep(0.05)
        assert not alive(int(pid))
        assert not Path(path).exists()
    finally:
        if alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)


def test_ssh_agent_makes_itself_undumpable(nonroot: NonRoot) -> None:
    """platform_disable_tracing() (ssh-agent.c main()): a process of the same user, not root,
    cannot read the agent's environ, memory or fds through /proc, nor ptrace it; a plain process
    of that user it can. Run from a copy of the binary without Debian's setgid bit, which alone
    would make it undumpable, so that this is the agent's own doing."""
    copy = nonroot.root / "ssh-agent"
    shutil.copyfile(shutil.which("ssh-agent") or "/usr/bin/ssh-agent", copy)
    copy.chmod(0o755)
    run_dir = nonroot.mkdir("run", owner=nonroot.uid, mode=0o700)
    as_user = ["setpriv", f"--reuid={nonroot.uid}", f"--regid={nonroot.gid}", "--clear-groups"]
    socket_path = run_dir / "agent.sock"
    own = subprocess.Popen([*as_user, str(copy), "-D", "-a", str(socket_path)])
    plain = subprocess.Popen([*as_user, "sleep", "120"])
    try:
        for _ in range(200):
            if socket_path.is_socket():
                break
            time.sleep(0.05)
        assert socket_path.is_socket()

        def read(pid: int, what: str) -> subprocess.CompletedProcess[str]:
            argv = [*as_user, "sh", "-c", f"ls /proc/{pid}/fd; head -c1 /proc/{pid}/{what}"]
            return subprocess.run(argv, capture_output=True, text=True)

        for what in ("environ", "mem"):
            assert read(plain.pid, "environ").returncode == 0
            refused = read(own.pid, what)
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, what
    finally:
        for process in (own, plain):
            process.kill()
            process.wait(timeout=10)


def test_an_agent_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """A socket path longer than a Unix socket address holds (108 bytes, unix(7)): ssh-agent
    refuses to start, and says why."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with pytest.raises(UserError) as caught:
        agent.start(deep)
    assert caught.value.slug == "agent::own"
    assert caught.value.title.startswith(
        "deploykey could not hand the deploy keys to an ssh agent of its own: "
    )
    assert "agent.sock" in caught.value.title
