"""Tokens for HTTPS-only setups, handed to git by a credential helper that asks deploykey for them.

A token never goes into a URL: pip would keep it in `direct_url.json`, git in the `.git/config` of
an editable checkout, and older pip printed it in its "Collecting" line. Nor is it a file: a
process of the same user left running by an earlier build's code could copy a file in the key dir
(SECURITY.md). deploykey keeps the tokens in its own memory and serves them on a Unix socket in
the key dir, only to processes that descend from it (git, and the helper git runs): the peer's pid
comes from the kernel (SO_PEERCRED, unix(7)) and its ancestry from /proc/PID/stat. git asks
through `credential.helper`, a shell script that finds the token's name for the host in the index
(`tokens`, no secret) and asks the socket with the build's own python3. No token is ever an
argument or an environment variable of git, pip or a package's build code. Plain http is answered
only for loopback hosts.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deploykey.core import output
from deploykey.core.sources import EnvSource
from deploykey.secrets.config import Settings

if TYPE_CHECKING:
    # Imported by the token server, which only a fetch with tokens starts: a warm build that
    # restores its environment never does (socket was 1.4% of its instructions, callgrind).
    import socket

HELPER = "git-credential-deploykey"
INDEX = "tokens"
SOCKET = "tokens.sock"
# The helper's client: sends a token's name, writes what comes back (nothing for a refused peer).
CLIENT = (
    "import socket,sys;c=socket.socket(socket.AF_UNIX);c.connect(sys.argv[1]);"
    "c.sendall(sys.argv[2].encode()+b'\\n');c.shutdown(socket.SHUT_WR);"
    "sys.stdout.buffer.write(b''.join(iter(lambda:c.recv(65536),b'')))"
)

HELPER_SCRIPT = r"""#!/bin/sh
# deploykey's git credential helper for one build: answers `get` for the hosts listed in `tokens`
# (HOST USER NAME [PATH]) with the token NAME, asked of deploykey; a line with a PATH (a GitHub App's token, which
# opens only its installation's repositories) answers for that repository only, the first line
# that fits wins. Written by deploykey; removed when the build ends.
set -eu
dir=$(dirname -- "$0")
[ "${1-}" = get ] || exit 0
protocol=""
host=""
path=""
while IFS= read -r line; do
  [ -n "$line" ] || break
  case "$line" in
    protocol=*) protocol=${line#protocol=} ;;
    host=*) host=${line#host=} ;;
    path=*) path=${line#path=} ;;
  esac
done
path=${path%.git}
case "$protocol" in
  https) ;;
  http) case "$host" in 127.0.0.1 | 127.0.0.1:* | localhost | localhost:* | "[::1]"*) ;; *) exit 0 ;; esac ;;
  *) exit 0 ;;
esac
while read -r token_host user file token_path; do
  if [ "$token_host" = "$host" ] && { [ -z "$token_path" ] || [ "$token_path" = "$path" ]; }; then
    token=$(@PYTHON@ -I -S -c "@CLIENT@" "$dir/tokens.sock" "$file") || exit 0
    [ -n "$token" ] || exit 0
    printf 'username=%s\npassword=%s\n' "$user" "$token"
    exit 0
  fi
done <"$dir/tokens"
"""


@dataclass(frozen=True)
class Token:
    name: str
    host: str
    username: str
    value: bytes = field(repr=False)

    @property
    def file_name(self) -> str:
        return "token_" + self.name.lower()

    def describe(self) -> str:
        return f"{self.name} for {self.host} (user {self.username})"


def read(env: EnvSource, settings: Settings) -> list[Token]:
    tokens = []
    for config in settings.token_configs().values():
        text = env.text(config.name)
        if text:
            output.add_secret(text)
            tokens.append(Token(config.name, config.host, config.username, text.encode()))
    return tokens


def index(tokens: list[Token]) -> str:
    return "".join(f"{token.host} {token.username} {token.file_name}\n" for token in tokens)


def helper_script() -> str:
    """The helper, with this python3 (absolute: the build's PATH is not asked) as the client."""
    import shlex

    return HELPER_SCRIPT.replace("@PYTHON@", shlex.quote(sys.executable)).replace(
        "@CLIENT@", CLIENT
    )


@dataclass
class Server:
    """The tokens of one fetch, served from this process's memory to its descendants."""

    path: Path
    listener: socket.socket
    values: dict[str, bytes] = field(default_factory=dict, repr=False)
    refused: list[int] = field(default_factory=list)  # pids of peers that were not descendants
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def add(self, name: str, value: bytes) -> None:
        self.values[name] = value

    def stop(self) -> None:
        self.done.set()
        # A connection of its own wakes the thread in accept() at once, instead of at its next
        # timeout (a warm build waited that long for nothing); it is closed unanswered.
        import socket

        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect(str(self.path))
        if self.thread is not None:
            self.thread.join()
        self.listener.close()
        self.values.clear()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                if self.done.is_set():
                    return
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        import socket

        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        pid = struct.unpack("3i", credentials)[0]
        if not descends(pid, os.getpid()):
            self.refused.append(pid)
            return
        asked = b""
        while not asked.endswith(b"\n") and len(asked) < 256:
            chunk = connection.recv(256)
            if not chunk:
                break
            asked += chunk
        connection.sendall(self.values.get(asked.strip().decode("ascii", "replace"), b""))


def serve(key_dir: Path) -> Server:
    """A Unix socket in the key dir (0700: this user only), answered by a thread of this process."""
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = key_dir / SOCKET
    previous = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    listener.listen(16)
    listener.settimeout(0.2)  # how soon the thread sees stop()
    server = Server(path, listener)
    server.thread = threading.Thread(target=server._serve, name="tokens", daemon=True)
    server.thread.start()
    return server


def descends(pid: int, ancestor: int) -> bool:
    """Whether process `pid` is `ancestor` or one of its descendants, by the parent pids in
    /proc/PID/stat (field 4, proc(5)). A process left by an earlier build is not: its parent is
    init or a subreaper. Without /proc (a container that shows none) this cannot be told, and
    the peer is trusted as any process of this user (the socket is in a 0700 dir)."""
    if not Path("/proc/self/stat").exists():
        return True
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat_line.rsplit(")", 1)[1].split()[1])
    return False
