"""The private directory of a build's access (key dir), for the length of the fetch, outside the app
and the cache.

It holds no private key: the deploy keys are in deploykey's own ssh agent (agent.py), the dir has
their public halves, the agent's socket, the ssh config and known_hosts, the router, and the HTTPS
tokens of git's credential helper. Deleting is not erasing on overlay and copy-on-write
filesystems, so it is kept off every path that is persisted from the start: a fresh 0700
directory from mkdtemp, preferably on tmpfs (/dev/shm: memory, never a disk), files created with
O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 under umask 077, never inside BUILD_DIR or CACHE_DIR (nor
under a HOME that equals them, as in Heroku CI).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deploykey.core.errors import UserError

PREFIX = "deploykey-"
# Who keeps this dir alive: a stamp() ("held PID"). A key dir never outlives its process (the
# fetch ends before anything else runs; CI `setup` keeps only mirrors for the job's shell, and the
# agent holding the keys ends with the process): "until EPOCH" is read only in dirs that earlier
# versions kept for a later step.
OWNER = ".owner"
NAME = re.compile(r"^deploykey-[a-z0-9_]{8}$")  # mkdtemp's names
TMPFS = Path("/dev/shm")
# More than a key dir ever holds (keys, known_hosts, ssh config, router, routes, helper: a few pages
# of tmpfs): written once and removed when the dir is made, so that a nearly full /dev/shm (Docker
# gives 64 MB, shared with the app's build) is passed over then, not in the middle of the fetch.
RESERVE = 64 * 1024
# Why a base cannot hold the key: full (tmpfs has a size, a disk a quota), read-only, not ours to
# write, missing. Anything else is not about the place, and stays an error.
NO_ROOM = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
    }
)


@dataclass(frozen=True)
class KeyDir:
    path: Path
    passed_over: tuple[str, ...] = ()  # the better places that could not hold it, and why

    def write(self, name: str, data: bytes) -> Path:
        """Create `name` with mode 0600; refuse if anything (a planted link) is already there."""
        try:
            return watch(write_new(self.path / name, data))
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(
                "path::no-room",
                tried=f"{self.path.parent} filled up while the key dir was written "
                f"({error.strerror})",
            ) from None

    def changed(self) -> list[str]:
        """The files this process wrote here (watch()) that something else has changed since:
        written, replaced, moved, linked or removed. The key dir is 0700, but a process of the
        same user (one left running by an earlier build's code) can still do all of that while
        the fetch runs, to make ssh or git run its commands or fetch from a host of its own. It
        cannot do it unseen: a replaced file is another inode, other bytes another digest, and
        every change to an inode sets its ctime, which only the superuser can set back
        (utimensat(2) sets atime and mtime, never ctime). (ctime has the kernel's clock-tick
        granularity: a change undone within the tick of deploykey's own write goes unseen.)"""
        found = []
        for name, state in sorted(_WATCHED.get(self.path, {}).items()):
            try:
                now = _state(self.path / name)
            except OSError:
                found.append(f"{name} (removed)")
                continue
            if now != state:
                found.append(name)
        return found

    def on_remove(self, what: Callable[[], None]) -> None:
        """Run `what` first when the dir is removed (deploykey's own ssh agent, stopped before
        its socket goes), however the build ends (scrub.guarded)."""
        _BEFORE_REMOVE.setdefault(self.path, []).append(what)

    def remove(self) -> None:
        for stop in reversed(_BEFORE_REMOVE.pop(self.path, [])):
            stop()
        _WATCHED.pop(self.path, None)
        if self.path.is_symlink():
            self.path.unlink()
        elif self.path.exists():
            shutil.rmtree(self.path)
        _let_go(self.path)  # after: while the dir exists, its owner file stays locked


# The locks this process holds on the owner files of the key dirs it made (write_held): while they
# are held, no other build's sweep() removes those dirs.
_HELD: dict[Path, IO[bytes]] = {}
_BEFORE_REMOVE: dict[Path, list[Callable[[], None]]] = {}
# What this process wrote in each key dir, as it left it: name -> _state().
_WATCHED: dict[Path, dict[str, tuple[int, int, int, bytes]]] = {}


def watch(target: Path) -> Path:
    """Remember `target`, a file this process has just written (or replaced) in a key dir, as it
    is now: KeyDir.changed() names it if anything else changes it."""
    _WATCHED.setdefault(target.parent, {})[target.name] = _state(target)
    return target


def _state(target: Path) -> tuple[int, int, int, bytes]:
    """Inode, ctime (ns), mode and a digest of the content (a socket: none)."""
    info = target.lstat()
    digest = b""
    if stat.S_ISREG(info.st_mode):
        with open(target, "rb", opener=_no_follow) as file:
            digest = hashlib.sha256(file.read()).digest()
    return info.st_ino, info.st_ctime_ns, info.st_mode, digest


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _let_go(path: Path) -> None:
    held = _HELD.pop(path, None)
    if held is not None:
        held.close()


def _open_new(target: Path, mode: int) -> IO[bytes]:
    """A new file (never an existing one, never through a link), with `mode`, open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(target, flags, mode), "wb")


def write_new(target: Path, data: bytes, mode: int = 0o600) -> Path:
    """A new file (never an existing one, never through a link), with `mode`."""
    with _open_new(target, mode) as file:
        file.write(data)
    return target


def write_held(target: Path, data: bytes, mode: int = 0o600) -> IO[bytes]:
    """write_new, and an exclusive flock(2) on the new file that lasts until the returned file is
    closed or this process dies: the kernel drops the lock then, on SIGKILL too, so a later build
    tells a live writer from a dead one by trying the lock (if_ended()), with no need for /proc,
    which a container may not show. The lock is taken before the data is written: whoever reads
    the data finds it locked while its writer lives. O_CLOEXEC keeps the lock from the children
    that exec (git, pip), which may outlive a killed build."""
    file = _open_new(target, mode)
    try:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(data)
        file.flush()
    except BaseException:
        file.close()
        raise
    return file


def _released(file: IO[str], path: Path) -> bool:
    """Whether the writer of `file`, opened from `path` and written by write_held, has ended (closed
    it or died): this process then holds the lock until it closes `file`. False while the writer
    lives, or when `path` is no longer that file (removed, or made again, since it was opened)."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now = path.lstat()
    except OSError:  # BlockingIOError: the writer holds it; or no locks here, or the file is gone
        return False
    opened = os.fstat(file.fileno())
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _inside(path: Path, others: Sequence[Path]) -> Path | None:
    resolved = path.resolve()
    for other in others:
        other = other.resolve()
        if resolved == other or other in resolved.parents:
            return other
    return None


def candidates() -> list[Path]:
    """Where a key dir may go, best first: tmpfs, then the system temp dir."""
    found = [TMPFS] if TMPFS.is_dir() and os.access(TMPFS, os.W_OK | os.X_OK) else []
    found.append(Path(tempfile.gettempdir()))
    return found


def create(outside: Sequence[Path]) -> KeyDir:
    """A fresh private directory in the best temp location outside the kept directories that can
    hold it: tmpfs, else the system temp dir ($TMPDIR), as the README promises."""
    passed_over: list[str] = []
    unsafe: list[str] = []
    for base in dict.fromkeys([TMPFS, Path(tempfile.gettempdir())]):
        inside = _inside(base, outside)
        if inside is not None:
            unsafe.append(f"{base} is inside {inside}, which is kept after the build.")
            continue
        try:
            directory = _make(base)
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            passed_over.append(f"{base} cannot hold the key ({error.strerror})")
            continue
        return KeyDir(directory.path, tuple(passed_over))
    if passed_over:
        raise UserError("path::no-room", tried="; ".join(passed_over + unsafe))
    raise UserError("path::unsafe", path=candidates()[-1], reason=" ".join(unsafe))


def where(outside: Sequence[Path]) -> KeyDir:
    """Where create() would make a key dir now, and the places it would pass over: for a plan that
    says what the build will do. It makes one and removes it, because only writing shows that a
    tmpfs is full (access() says yes), so the answer is create()'s own decision, not a guess."""
    directory = create(outside)
    directory.remove()
    return directory


def _make(base: Path) -> KeyDir:
    previous = os.umask(0o077)
    try:
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    finally:
        os.umask(previous)
    try:
        directory = _checked(path)
        _HELD[path] = write_held(path / OWNER, f"{stamp()}\n".encode())
        write_new(path / ".reserve", bytes(RESERVE)).unlink()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        _let_go(path)
        raise
    return directory


def at(path: Path, outside: Sequence[Path]) -> KeyDir:
    """A private directory at a given path (a CNB build layer), which must not exist yet."""
    inside = _inside(path.parent, outside)
    if inside is not None:
        raise UserError("path::unsafe", path=path, reason=f"It is inside {inside}, which is kept.")
    previous = os.umask(0o077)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        raise UserError(
            "path::unsafe", path=path, reason="It exists already; a key dir is always new."
        ) from None
    finally:
        os.umask(previous)
    return _checked(path)


def _checked(path: Path) -> KeyDir:
    info = os.lstat(path)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) != 0o700
    ):
        raise UserError(
            "path::unsafe", path=path, reason="The new directory is not a private 0700 directory."
        )
    return KeyDir(path)


def named_in(command: str) -> Path | None:
    """The key dir named in an ssh command the kit wrote (`sh DIR/ssh`), or a key dir's path, if
    it is one of ours: a `deploykey-` directory of this user in a temp location. Anything else
    (a tampered .gitconfig naming another directory) is never removed."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    bases = {base.resolve() for base in candidates()}
    for word in words:
        for directory in (Path(word), Path(word).parent):
            if not directory.name.startswith(PREFIX) or directory.parent.resolve() not in bases:
                continue
            try:
                info = directory.lstat()
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                return directory
    return None


def stamp() -> str:
    """This process, as the last line of a file it writes with write_held: "held PID". The lock,
    not the pid, tells whether it still runs (if_ended); the pid is for messages."""
    return f"held {os.getpid()}"


@contextmanager
def if_ended(path: Path) -> Iterator[tuple[list[str], int] | None]:
    """The lines of `path`, a file whose last line is a stamp(), and the pid that wrote it, if that
    process has ended; its lock is then held here, so that no other build judges the file, until
    the caller has removed what it left. None while the writer runs, and for a file that is not
    there, not stamped, or a link (planted: never ours to judge)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    with os.fdopen(fd, errors="replace") as file:  # closing it drops the lock _released() took
        lines = file.read(4096).splitlines()
        pid = _ended(lines[-1].split(), file, path) if lines else None
        yield None if pid is None else (lines, pid)


def _ended(words: Sequence[str], file: IO[str], path: Path) -> int | None:
    """The pid of a stamp's process if that process has ended (killed), else None."""
    if words[:1] == ["held"] and len(words) == 2 and words[1].isdigit():
        return int(words[1]) if _released(file, path) else None
    # "pid PID START": a stamp of deploykey before the lock, whose build may still run beside this
    # one (another version, on a shared CI machine): judged by /proc as it was then (without /proc
    # that cannot be told, and it stays).
    if words[:1] != ["pid"] or len(words) != 3 or not words[1].isdigit():
        return None
    pid, start = int(words[1]), words[2]
    if not Path("/proc/self/stat").exists() or start == "?" or _started(pid) == start:
        return None
    return pid


def _started(pid: int) -> str:
    """A process's start time (ticks since boot, /proc/PID/stat field 22): with the pid, it names
    one process even after the pid is reused."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat_line.rsplit(")", 1)[1].split()[19]


def _expired(directory: Path) -> str | None:
    """Why a key dir an earlier version kept for a later step ("until EPOCH") can go, or None while
    it may still be needed."""
    try:
        owner = (directory / OWNER).read_text().split()
    except OSError:
        return None  # being created right now, or not ours to judge
    if owner[:1] == ["until"] and len(owner) == 2 and time.time() > int(owner[1]):
        return f"kept for a later step until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(int(owner[1])))} UTC"
    return None


def sweep() -> list[tuple[Path, str]]:
    """Remove this user's key dirs whose build is gone (SIGKILL leaves no chance to clean up);
    a running build's dir is never touched, so builds at once on one machine are safe."""
    removed = []
    for base in candidates():
        for directory in sorted(base.glob(PREFIX + "*")):
            if not NAME.match(directory.name):
                continue
            try:
                info = directory.lstat()
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            with if_ended(directory / OWNER) as left:
                if left is not None:
                    reason: str | None = (
                        f"left by a build that ended without cleaning up (pid {left[1]}, killed?)"
                    )
                else:
                    reason = _expired(directory)
                if reason is not None:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed.append((directory, reason))
    return removed
