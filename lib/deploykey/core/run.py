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
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykey.core import permissions
from deploykey.core.childenv import child_env, secret_env, trusted_path
from deploykey.core.errors import UserError

__all__ = ["Result", "child_env", "run", "secret_env", "which"]


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
    """The absolute path of `tool` in a directory of PATH that build code cannot have written
    (childenv.trusted_path: every tool looked up here runs with a secret, or reads a mirror), or a
    clear error: where it was found instead, or the package to install. (shutil, not `sh`: a
    lookup should not cost the import of sh and asyncio.)"""
    path = os.environ.get("PATH", os.defpath)
    found = shutil.which(tool, path=trusted_path(path))
    if found is None:
        anywhere = shutil.which(tool, path=path)
        if anywhere is not None:
            raise UserError(
                "tool::writable",
                tool=tool,
                where=Path(anywhere).parent,
                user=permissions.user_name(),
                uid=os.getuid(),
                purpose=purpose,
            )
        raise UserError(
            "tool::missing",
            tool=tool,
            purpose=purpose,
            fix=MISSING_FIX.get(tool, f"install {tool}"),
        )
    return str(Path(found).absolute())


def preload() -> None:
    """Import `sh` in a thread of its own, for a caller that will soon `run` a command and waits on
    other children meanwhile (the fetch: its first git comes after the agent's start and ssh-add,
    which this thread only waits on). The import costs 40-60 ms (asyncio, importlib.metadata
    scanning sys.path for sh's version) on every cold fetch's critical path; `run`'s own `import
    sh` then finds it done, or waits for it (the import lock). A failure is `run`'s to report."""
    if "sh" in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            import sh  # noqa: F401

    threading.Thread(target=load, name="deploykey-import-sh", daemon=True).start()


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    on_line: Callable[[str], None] | None = None,
    source: tuple[str, str] | None = None,
) -> Result:
    """Run argv to completion, stdout and stderr merged; never raises for a non-zero exit.

    The child is stopped (SIGTERM, then SIGKILL) if this process is interrupted while waiting, so
    that the scrub which follows never races a running pip or ssh. Inside `bounded()` (the fetch)
    it is also stopped at the deadline, or when its host has sent too much: `source` is (host,
    what it fetches), whose bytes count against that host; either raises the bound's UserError.
    """
    import sh

    bounds = _bounds
    if bounds is not None:
        bounds.check()

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
    if bounds is not None:
        bounds.watch(process, source)
    try:
        process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        _running.pop(id(process), None)
        if bounds is not None:
            bounds.sources.pop(process.pid, None)
    if bounds is not None:
        bounds.check()
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


# ---------------------------------------------------------------- the fetch's bounds

# The processes that receive what a host sends: ssh (its stdout is the host's git data) and git's
# HTTPS helper (git-remote-https; /proc/PID/comm keeps 15 characters: git-remote-http).
RECEIVERS = ("ssh", "git-remote-http")
POLL = 0.25  # seconds between two looks at the clock and at /proc


@dataclass
class Bounds:
    """A deadline for the whole fetch and a limit on what one host may send. A watcher thread
    looks every POLL seconds; past either, it stops every child (SIGTERM to its process group,
    SIGKILL 5 s later) and every run() raises the UserError. Bytes are counted from /proc for
    the receiving processes in each child's session (run() starts each child in a session of its
    own; see _read_bytes): what the host sent, plus the few kilobytes ssh reads from its config
    and git's requests. Without /proc (not Linux) only the deadline holds."""

    seconds: int
    max_bytes: int
    started: float = field(default_factory=time.monotonic)
    sources: dict[int, tuple[Any, tuple[str, str] | None]] = field(default_factory=dict)
    received: dict[tuple[str, int], int] = field(default_factory=dict)  # (host, pid) -> bytes
    exceeded: UserError | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def watch(self, process: Any, source: tuple[str, str] | None) -> None:
        self.sources[process.pid] = (process, source)

    def check(self) -> None:
        if self.exceeded is not None:
            raise self.exceeded

    def host_bytes(self, host: str) -> int:
        return sum(count for (name, _pid), count in self.received.items() if name == host)

    def look(self) -> None:
        """Count, then stop everything if a bound is passed (the watcher's one step)."""
        live = dict(self.sources)  # run() drops each child once it has ended
        for session, pid, comm in _receivers(set(live)) if live else []:
            source = live[session][1]
            if source is not None:
                key = (source[0], pid)
                self.received[key] = max(self.received.get(key, 0), _read_bytes(pid, comm))
                if self.host_bytes(source[0]) > self.max_bytes and self.exceeded is None:
                    self.exceeded = UserError(
                        "fetch::too-much",
                        host=source[0],
                        what=source[1],
                        size=describe_size(self.host_bytes(source[0])),
                        limit=describe_size(self.max_bytes),
                    )
        if self.exceeded is None and time.monotonic() - self.started > self.seconds:
            running = [entry[1] for entry in live.values() if entry[1] is not None]
            self.exceeded = UserError(
                "fetch::deadline",
                seconds=self.seconds,
                running=", ".join(f"{what} on {host}" for host, what in running) or "nothing",
                hosts=", ".join(sorted({host for host, _ in running})) or "the host",
            )
        if self.exceeded is not None:
            for process, _source in live.values():
                with contextlib.suppress(Exception):
                    process.process.signal_group(signal.SIGTERM)
            if not self.done.wait(5):
                for process, _source in live.values():
                    with contextlib.suppress(Exception):
                        process.process.kill_group()

    def watcher(self) -> None:
        while not self.done.wait(POLL) and self.exceeded is None:
            self.look()


_bounds: Bounds | None = None


@contextlib.contextmanager
def bounded(seconds: int, max_bytes: int) -> Iterator[Bounds]:
    """Every run() inside: stopped at the deadline, or when its host sent more than max_bytes."""
    global _bounds
    bounds = Bounds(seconds, max_bytes)
    thread = threading.Thread(target=bounds.watcher, name="deploykey-fetch-bounds", daemon=True)
    _bounds = bounds
    thread.start()
    try:
        yield bounds
    finally:
        _bounds = None
        bounds.done.set()
        thread.join()


def _receivers(sessions: set[int]) -> list[tuple[int, int, str]]:
    """(session, pid, comm) of every ssh or git-remote-https in these sessions."""
    found = []
    try:
        pids = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            stat = Path("/proc", pid, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if comm in RECEIVERS and len(fields) > 3 and int(fields[3]) in sessions:
            found.append((int(fields[3]), int(pid), comm))
    return found


def _read_bytes(pid: int, comm: str) -> int:
    """What a receiver got from its host, from /proc: ssh reads the socket with read() (`rchar`
    in /proc/PID/io). git-remote-https reads it with recv(), which no counter of /proc/PID/io
    counts: it writes a pack on to git through a pipe (`wchar`), and holds a ref advertisement in
    memory, whole, before git sees any of it (an endless one grew it to 24 GB in 100 s here), so
    its anonymous memory (`RssAnon` in /proc/PID/status) counts too. The largest of these."""
    try:
        io = dict(_fields(Path("/proc", str(pid), "io")))
        memory = 0
        if comm != "ssh":
            status = dict(_fields(Path("/proc", str(pid), "status")))
            memory = int(status.get("RssAnon", "0 kB").split()[0]) * 1024
        return max(int(io.get("rchar", 0)), int(io.get("wchar", 0)), memory)
    except (OSError, ValueError):
        return 0


def _fields(path: Path) -> list[tuple[str, str]]:
    """`name: value` lines of a /proc file."""
    pairs = (line.partition(":") for line in path.read_text().splitlines())
    return [(name, value.strip()) for name, _, value in pairs]


def describe_size(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


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
