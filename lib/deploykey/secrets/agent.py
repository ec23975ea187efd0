"""ssh agents: the one a Docker build mounts, asked for its keys before use; and deploykey's own.

deploykey's own agent (`Own`) holds the deploy keys while the fetch runs, so that no key is ever a
file a process of the same user could copy (a daemon left by an earlier build's code, polling
/dev/shm): ssh-agent is started with its socket in the key dir, each key is fed to it by
`ssh-add -` on a pipe, and ssh finds it through `IdentityAgent` with `IdentityFile` naming the
key's public half (sshconfig.py). ssh-agent makes itself undumpable (platform_disable_tracing()
in ssh-agent.c main(); Debian's binary is setgid too), so its memory cannot be read by the same
user; what such a process can still do is connect to the socket and ask for signatures while the
agent lives (SECURITY.md). The agent runs with a command (`sh -c 'echo $SSH_AGENT_PID; exec cat'`)
whose stdin is a pipe this process holds: ssh-agent checks every 10 s that its command still runs
and exits when it does not (check_parent_exists() in ssh-agent.c), so an agent outlives a
SIGKILLed build by 10 s at most; `stop()` ends it at once.

The Docker build's agent (`identities`):

Built without `docker build --ssh default`, the RUN still gets SSH_AUTH_SOCK, but nothing (or no
agent) is at that path; an agent started without `ssh-add` holds no key. ssh then fails with
`Permission denied (publickey)`, which reads as a key the git host does not know. So with
`--agent` deploykey asks the agent first, as `ssh-add -l` does: SSH_AGENTC_REQUEST_IDENTITIES
(11), answered by SSH_AGENT_IDENTITIES_ANSWER (12) with a count and, per key, its public blob and
a comment (draft-miller-ssh-agent, section 3.5). Only public keys cross the socket; the comments
are not shown.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploykey.core import permissions, run
from deploykey.core.errors import UserError
from deploykey.secrets.keys import Key

REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
TIMEOUT = 10.0  # seconds: an agent answers at once; a stuck socket must not hang the build
MAX_ANSWER = 256 * 1024  # OpenSSH's own limit on an agent message


@dataclass(frozen=True)
class Identity:
    keytype: str
    fingerprint: str  # SHA256:..., as `ssh-add -l` and the git hosts show it

    def describe(self) -> str:
        return f"{self.keytype} {self.fingerprint}"


def identities(path: str) -> list[Identity]:
    """The agent's keys; a UserError that blames the agent (not the key) when there are none."""
    try:
        answer = _ask(path)
        keys = _parse(answer)
    except _Unusable as problem:
        raise UserError(
            "agent::unusable",
            socket=path,
            problem=str(problem),
            uid=os.getuid(),
            user=permissions.user_name(),
        ) from None
    return keys


class _Unusable(Exception):
    """What is wrong with the agent, in words for the error's title."""


def _ask(path: str) -> bytes:
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        raise _Unusable("nothing is there") from None
    except OSError as exc:
        raise _Unusable(f"it cannot be looked at ({exc.strerror or exc})") from None
    if not stat.S_ISSOCK(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a regular file"
        raise _Unusable(f"it is {kind}, not a socket") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(TIMEOUT)
        try:
            connection.connect(path)
            connection.sendall(struct.pack(">IB", 1, REQUEST_IDENTITIES))
            length = struct.unpack(">I", _read(connection, 4))[0]
            if not 0 < length <= MAX_ANSWER:
                raise _Unusable(f"it answered with a message of {length} bytes, not an agent's")
            return _read(connection, length)
        except ConnectionRefusedError:
            raise _Unusable("no agent is listening on it (connection refused)") from None
        except PermissionError:
            raise _Unusable("this user may not connect to it (permission denied)") from None
        except (OSError, struct.error) as exc:
            raise _Unusable(f"it did not answer as an agent ({exc})") from None


def _read(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise _Unusable("it closed the connection without answering")
        data += chunk
    return data


def _parse(answer: bytes) -> list[Identity]:
    if answer[0] != IDENTITIES_ANSWER:
        raise _Unusable(f"it refused to list its keys (answer type {answer[0]})")
    try:
        count = struct.unpack_from(">I", answer, 1)[0]
        offset, found = 5, []
        for _ in range(count):
            blob, offset = _string(answer, offset)
            _comment, offset = _string(answer, offset)
            keytype, _ = _string(blob, 0)
            digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            found.append(Identity(keytype.decode("ascii", "replace"), f"SHA256:{digest}"))
    except (struct.error, IndexError):
        raise _Unusable("its list of keys is cut short") from None
    if not found:
        raise _Unusable("the agent holds no key")
    return found


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    """An SSH `string` (RFC 4251 section 5): uint32 length, then the bytes."""
    length = struct.unpack_from(">I", data, offset)[0]
    end = offset + 4 + length
    if end > len(data):
        raise IndexError("string past the end")
    return data[offset + 4 : end], end


SOCKET = "agent.sock"  # in the key dir, removed with it
# ssh-add -t: a backstop, should the agent somehow outlive the fetch that fed it.
LIFETIME = 3600
# ssh-agent's command: tells the agent's pid (SSH_AGENT_PID, set for the command), then waits for
# EOF on the pipe this process holds; when it exits, the agent follows within 10 s.
COMMAND = ("/bin/sh", "-c", 'echo "$SSH_AGENT_PID"; exec cat >/dev/null')
GONE_WAIT = 5.0  # seconds for the agent to exit after SIGTERM (it does at once)


@dataclass(frozen=True)
class Own:
    """deploykey's own ssh-agent for one key dir."""

    socket: Path
    pid: int
    watched: subprocess.Popen[bytes]  # the agent's command, whose end ends the agent

    def add(self, key: Key) -> None:
        """Hand `key` to the agent over a pipe (`ssh-add -` reads the key from stdin)."""
        ssh_add = run.which("ssh-add", "hand the deploy key to deploykey's own ssh agent")
        argv = [ssh_add, "-q", "-t", str(LIFETIME), "-"]
        result = run.capture(
            argv, env=run.secret_env({"SSH_AUTH_SOCK": str(self.socket)}), stdin=key.material
        )
        if not result.ok:
            raise UserError(
                "agent::own",
                problem=f"ssh-add refused {key.name} ({key.fingerprint}): "
                + (result.text.strip() or f"exit {result.status}"),
            )

    def stop(self) -> None:
        """End the agent (SIGTERM: it removes its socket and exits) and its command; return once
        the agent is gone."""
        if _is_agent(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        if self.watched.stdin is not None:
            with contextlib.suppress(OSError):
                self.watched.stdin.close()
        try:
            self.watched.wait(timeout=GONE_WAIT)
        except subprocess.TimeoutExpired:
            self.watched.kill()
            self.watched.wait()
        if self.watched.stdout is not None:
            self.watched.stdout.close()
        deadline = time.monotonic() + GONE_WAIT
        while _is_agent(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _is_agent(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start(key_dir: Path) -> Own:
    """ssh-agent with its socket in `key_dir` (a 0700 dir: only this user can reach it)."""
    ssh_agent = run.which("ssh-agent", "hold the deploy keys in memory during the fetch")
    path = key_dir / SOCKET
    watched = run.start([ssh_agent, "-a", str(path), "--", *COMMAND], env=run.secret_env())
    assert watched.stdout is not None
    said = watched.stdout.readline().decode("utf-8", "replace").strip()
    if not said.isdigit() or not path.is_socket():
        # What ssh-agent said (stderr is merged): it exits at once when it cannot start.
        watched.kill()
        said += " " + watched.stdout.read().decode("utf-8", "replace")
        watched.wait()
        raise UserError("agent::own", problem=" ".join(said.split()) or "it did not start")
    return Own(path, int(said), watched)


def _is_agent(pid: int) -> bool:
    """Whether `pid` is still a live ssh-agent (not a zombie, not a reused pid): /proc/PID/stat
    is readable for every process, also an undumpable one. Without /proc, whether the pid is
    there at all."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or another user's since
            return False
        return True
    name, state = stat_line.split("(", 1)[1].rsplit(")", 1)
    return name == "ssh-agent" and state.split()[0] != "Z"
