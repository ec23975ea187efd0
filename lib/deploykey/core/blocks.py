"""Marked blocks in a user's own file (`~/.gitconfig`): added at the end, removed byte for byte.

The kit keeps the user's content as it is: a block is appended between marker lines, a re-run
replaces it (idempotent), and removal restores the exact bytes, including a missing final newline
the block had to add and a file the block had to create. Files are replaced atomically (a temp file
in the same directory, renamed over), never written through a symbolic link.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from deploykey.core.errors import UserError

BEGIN = "# >>> deploykey"
BEGIN_TAIL = ">>> written for one build; removed by the post_compile hook"
END = "# <<< deploykey <<<"
CREATED = "created-file"
NEWLINE = "added-newline"


def _split(text: str) -> tuple[str, str | None, set[str], str]:
    """(before, block body or None, flags, after) of the first marked block in text."""
    lines = text.splitlines(keepends=True)
    for start, line in enumerate(lines):
        if line.startswith(BEGIN + " ") and BEGIN_TAIL in line:
            for end in range(start + 1, len(lines)):
                if lines[end].rstrip("\n") == END:
                    flags = set(line[len(BEGIN) : line.index(BEGIN_TAIL)].split())
                    body = "".join(lines[start + 1 : end])
                    return "".join(lines[:start]), body, flags, "".join(lines[end + 1 :])
    return text, None, set(), ""


def _read(path: Path) -> str | None:
    if path.is_symlink():
        raise UserError("path::symlink", path=path)
    if not path.exists():
        return None
    # Bytes as they are: no newline translation, and any encoding survives (surrogateescape).
    return path.read_bytes().decode("utf-8", "surrogateescape")


def read(path: Path) -> str | None:
    """The body of the kit's block in path, if there is one."""
    text = _read(path)
    return None if text is None else _split(text)[1]


def insert(path: Path, body: str) -> None:
    original = _read(path)
    flags = [] if original is not None else [CREATED]
    text = original or ""
    before, old, old_flags, after = _split(text)
    if old is not None:
        # A block left by an earlier run: take it out first, as remove() would.
        text = _restore(before, old_flags, after)
        flags = [CREATED] if CREATED in old_flags else []
    if text and not text.endswith("\n"):
        text += "\n"
        flags.append(NEWLINE)
    head = " ".join([BEGIN, *flags, BEGIN_TAIL])
    _write(path, text + head + "\n" + body + ("" if body.endswith("\n") else "\n") + END + "\n")


def remove(path: Path) -> str | None:
    """Take the kit's block out of path; returns its body, or None when there was none."""
    text = _read(path)
    if text is None:
        return None
    before, body, flags, after = _split(text)
    if body is None:
        return None
    restored = _restore(before, flags, after)
    if CREATED in flags and restored == "":
        path.unlink()
    else:
        _write(path, restored)
    return body


def _restore(before: str, flags: set[str], after: str) -> str:
    if NEWLINE in flags and before.endswith("\n") and not after:
        before = before[:-1]
    return before + after


def _write(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, temp = tempfile.mkstemp(prefix=".deploykey-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as file:
            file.write(text)
        Path(temp).chmod(mode)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
