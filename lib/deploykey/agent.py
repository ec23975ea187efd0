"""The ssh agent a Docker build mounts (`RUN --mount=type=ssh`), asked for its keys before use.

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
import hashlib
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from deploykey import permissions
from deploykey.errors import UserError

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
