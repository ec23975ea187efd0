"""Who may read and write what, when the build runs as a user other than root.

A Dockerfile's `USER app` makes every later `RUN` run as that user, but BuildKit makes its mounts
as root: a secret (`--mount=type=secret`) is a root-owned file of mode 0400 unless the mount sets
`uid=`, `gid=` or `mode=`, and a cache (`--mount=type=cache`) is a root-owned directory of mode
0755 unless it sets `uid=`, `gid=` or `mode=`, which apply only when the cache is first made: a
cache a root build made keeps root as its owner, so a non-root build needs a cache `id` of its own
(Dockerfile reference, `RUN --mount`). Directories made by root in earlier steps (`/opt`) are
not this user's either. These checks turn the PermissionError such a build meets into the error
that names the path, its owner, and the mount option or the step that fixes it.

Standard library only: the bootstrap checks the cache dir before it installs the kit's own
dependencies there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from deploykey.core.errors import UserError


def user_name(uid: int | None = None) -> str:
    """The name of a uid (the current one by default), or the uid itself when it has none (a
    Dockerfile's `USER 10001` need not be in /etc/passwd)."""
    import pwd

    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _facts(path: Path, blocker: Path) -> dict[str, object]:
    """The real values an error names: who runs, who owns what stands in the way, its mode."""
    info = blocker.stat()
    return {
        "path": path,
        "blocker": blocker,
        "owner": f"{user_name(info.st_uid)} (uid {info.st_uid})",
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "uid": os.getuid(),
        "user": user_name(),
    }


def read_regular(path: Path, largest: int) -> bytes | None:
    """The bytes of a file build code could have written or swapped (in the build cache, the temp
    dir): None for a link, a FIFO (reading one would wait forever), anything but a regular file,
    a file this user cannot read, or one bigger than `largest`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > largest:
            return None
        return file.read(largest)


def write_private(file: Path, data: bytes) -> bool:
    """Best effort: `data` as `file` (mode 0600), written beside it and renamed into place, in a
    directory made if need be (0700) that must be this user's own and no link (build code's
    cache: a link there would send the file elsewhere). False when nothing was written."""
    staging = file.with_name(f".{file.name}.{os.getpid()}")
    try:
        file.parent.mkdir(mode=0o700, exist_ok=True)
        info = file.parent.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(staging, flags, 0o600), "wb") as out:
            out.write(data)
        staging.replace(file)
    except OSError:
        staging.unlink(missing_ok=True)
        return False
    return True


def read_secret(path: Path) -> bytes:
    """A key file: a BuildKit secret in /run/secrets, or one given with --key-file. One that exists
    but that this user may not read is a mount without `uid=`, never a bug."""
    try:
        return path.read_bytes()
    except PermissionError:
        raise UserError("secret::unreadable", id=path.name, **_facts(path, path)) from None


def check_secrets(paths: list[Path]) -> None:
    """Every key file that exists can be read by this user (the bootstrap asks before it installs
    anything: a missing `uid=` is the first thing a non-root build meets)."""
    for path in paths:
        if path.is_file() and not os.access(path, os.R_OK):
            raise UserError("secret::unreadable", id=path.name, **_facts(path, path))


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: the directory a new one is made in."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _writable(path: Path) -> Path | None:
    """None when this user can make or write `path`; else what stands in the way."""
    blocker = _existing(path)
    if blocker.is_dir() and not os.access(blocker, os.W_OK | os.X_OK):
        return blocker
    return None


def read_only(path: Path) -> Path | None:
    """The directory `path` is (or would be made in) when it is on a read-only file system (a
    `readonly` cache mount, a `:ro` volume): no user, root included, can write there."""
    existing = _existing(path)
    try:
        return existing if os.statvfs(existing).f_flag & os.ST_RDONLY else None
    except OSError:
        return None


def unusable_cache(path: Path) -> str | None:
    """Why this user cannot make or write the cache dir `path`, or None when it can."""
    mount = read_only(path)
    if mount is not None:
        return f"is on a read-only file system ({mount})"
    blocker = _writable(path)
    if blocker is not None:
        facts = _facts(path, blocker)
        return (
            f"cannot be written by {facts['user']} ({blocker} is owned by {facts['owner']} "
            f"with mode {facts['mode']})"
        )
    return None


def check_cache(path: Path) -> None:
    """The cache dir (`--cache-dir`, a BuildKit cache mount) can be written by this user: where
    it must be kept (the mirrors `install --fetched` reads, a CI cache), it cannot be replaced."""
    mount = read_only(path)
    if mount is not None:
        raise UserError("cache::read-only", path=path, mount=mount)
    blocker = _writable(path)
    if blocker is not None:
        raise UserError("cache::unwritable", **_facts(path, blocker))


def check_target(path: Path, what: str) -> None:
    """The directory deploykey installs into (--venv, --target) can be made or written."""
    blocker = _writable(path)
    if blocker is not None:
        raise UserError("install::unwritable", what=what, **_facts(path, blocker))
