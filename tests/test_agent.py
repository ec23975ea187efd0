"""`deploykey install --agent` (Dockerfile.ssh's `RUN --mount=type=ssh`) asks the agent for its keys
first: built without `docker build --ssh default`, the error blames the agent, never the key."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, files_with_key


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
