"""The only module that starts subprocesses (through `sh`), each with an explicit environment.

Children get the environment `childenv.child_env()` builds from an allow-list. Key material reaches
children only through a pipe (stdin of ssh-keygen and ssh-add, a pipe openssl reads as /dev/fd/N),
never as an argument (/proc/<pid>/cmdline is world-readable) and never as a file. (The bootstrap, which installs `sh` itself, is the one other
place that starts a process; `capture()` runs short tools without `sh`, see there.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykey.childenv import child_env
from deploykey.errors import UserError

__all__ = ["Result", "child_env", "run", "which"]


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    status: int
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


MISSING_FIX = {
    "ssh": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client); with "
    "Cloud Native Buildpacks, use a build image that has it (heroku/builder, a Paketo full builder)",
    "ssh-keygen": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)",
    "ssh-agent": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)",
    "ssh-add": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)",
    "git": "install git (Debian/Ubuntu: apt-get install git)",
}


def which(tool: str, purpose: str) -> str:
    """The absolute path of `tool` on PATH, or a clear error naming the package to install.
    (shutil, not `sh`: a lookup should not cost the import of sh and asyncio.)"""
    found = shutil.which(tool)
    if found is None:
        raise UserError(
            "tool::missing",
            tool=tool,
            purpose=purpose,
            fix=MISSING_FIX.get(tool, f"install {tool}"),
        )
    return str(Path(found).absolute())


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Result:
    """Run argv to completion, stdout and stderr merged; never raises for a non-zero exit.

    The child is stopped (SIGTERM, then SIGKILL) if this process is interrupted while waiting, so
    that the scrub which follows never races a running pip or ssh.
    """
    import sh

    lines: list[str] = []

    def collect(line: str) -> None:
        line = line.rstrip("\n")
        lines.append(line)
        if on_line is not None:
            on_line(line)

    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound:
        tool = Path(argv[0]).name
        raise UserError(
            "tool::missing",
            tool=tool,
            purpose="build",
            fix=MISSING_FIX.get(tool, f"install {tool}"),
        ) from None
    process = command(
        *argv[1:],
        _env=dict(env),
        _in=stdin if stdin is not None else b"",
        _cwd=None if cwd is None else os.fspath(cwd),
        _out=collect,
        _err_to_out=True,
        _tty_out=False,
        _bg=True,
        _bg_exc=False,
        _ok_code=list(range(-64, 256)),
        _encoding="utf-8",
        _decode_errors="replace",
        # Its own process group, so that an interruption stops its children too.
        _new_session=True,
    )
    _running[id(process)] = process
    try:
        process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        _running.pop(id(process), None)
    return Result(tuple(argv), int(process.exit_code), tuple(lines))


_running: dict[int, Any] = {}  # children waited for in any thread (checks run several at once)


def stop_all() -> None:
    """Stop every child still running, in every thread: called when the build is interrupted."""
    for process in list(_running.values()):
        with contextlib.suppress(Exception):
            process.process.signal_group(signal.SIGTERM)


def _stop(process: Any) -> None:
    """Stop the child and everything it started (pip's build backends run in their own
    processes): SIGTERM to its process group, SIGKILL after 5 s."""
    try:
        process.process.signal_group(signal.SIGTERM)
        process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - already exiting; make sure it is gone
        with contextlib.suppress(Exception):
            process.process.kill_group()


def capture(argv: Sequence[str], *, env: Mapping[str, str], stdin: bytes) -> Result:
    """Run a short tool to completion (ssh-keygen reading a key on stdin), stdout and stderr
    merged, like `run`. Not through `sh`: importing it costs 30-40 ms (asyncio, importlib.metadata),
    and every command starts by validating its keys; `deploykey scan` needs nothing else of it."""
    completed = subprocess.run(  # noqa: S603 - argv is the kit's own, never user text
        list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env)
    )
    text = completed.stdout.decode("utf-8", "replace")
    return Result(tuple(argv), completed.returncode, tuple(text.splitlines()))


PIPED = "@piped@"  # in binary()'s argv: the path the tool reads `secret` from (/dev/fd/N)


def binary(
    argv: Sequence[str], *, env: Mapping[str, str], stdin: bytes, secret: bytes | None = None
) -> tuple[int, bytes, str]:
    """Run a short tool whose output is bytes (openssl's signature): its exit status, its stdout
    as it is, and its stderr as text. `secret` (a key) reaches it through a pipe, which argv names
    as PIPED (`/dev/fd/N` then): never a file, an argument or an environment variable."""
    fds: tuple[int, ...] = ()
    if secret is not None:
        # The whole key fits in the pipe's buffer (64 KiB on Linux, pipe(7); an RSA key is a
        # few KB), so it is written, and the write end closed, before the tool starts.
        read_end, write_end = os.pipe()
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(secret)
        fds = (read_end,)
    named = [f"/dev/fd/{fds[0]}" if fds and arg == PIPED else arg for arg in argv]
    try:
        completed = subprocess.run(  # noqa: S603 - argv is the kit's own, never user text
            named, input=stdin, capture_output=True, env=dict(env), check=False, pass_fds=fds
        )
    finally:
        for fd in fds:
            os.close(fd)
    return completed.returncode, completed.stdout, completed.stderr.decode("utf-8", "replace")


def start(argv: Sequence[str], *, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a child that outlives this call (deploykey's own ssh-agent): stdin a pipe this
    process holds (closed when it exits, also on SIGKILL), stdout a pipe to read what it says,
    stderr merged into it. In a session of its own: a Ctrl-C on the terminal reaches this
    process, whose cleanup stops the child, not the child first."""
    return subprocess.Popen(  # noqa: S603 - argv is the kit's own, never user text
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
