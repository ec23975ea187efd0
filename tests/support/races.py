"""Planting a key while the incremental leak check reads: the timing stand-ins the races use."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import GeneratedKey
from deploykey import build as build_module
from deploykey.leak import scan
from deploykey.secrets import keys


def load(key: GeneratedKey) -> keys.Key:
    return keys.load(key.path.read_bytes(), "DEPLOY_KEY", "test")


# The filesystem's clock has the granularity of the kernel's coarse clock: a test that changes a
# file right after a scan first waits for it to move on (see scan.RACY_NS), as any later build is.
TICK_NS = 50_000_000


RACY_NS = scan.RACY_NS  # what a build (another process) uses


def settle(where: Path, margin: int = TICK_NS) -> None:
    """Waits until a file written now gets a ctime more than `margin` past every file's under
    `where`: the files there are then old enough to be recorded, and any change to them later
    gets another ctime."""
    newest = max(os.lstat(path).st_ctime_ns for path, _ in scan.walk([where], []))
    probe = where.parent / ".clock"
    while True:
        probe.write_bytes(b"")
        if os.lstat(probe).st_ctime_ns > newest + margin:
            probe.unlink()
            return


def recorded_paths(record: scan.Record) -> set[str]:
    status, entries = record.load()
    assert status == scan.VERIFIED
    return {entry.split(" ", 5)[5] for entry in entries if not entry.startswith(scan.ARCHIVE)}


def same_size_copy(text: str, size: int) -> bytes:
    """The key text padded to `size` bytes: a copy that leaves the file's size as it was."""
    data = text.encode()
    assert len(data) <= size
    return data + b"#" * (size - len(data))


def plant_in_place(path: Path, text: str) -> None:
    """Build code's copy of the key, written into a file in place (same size, same inode) with
    its mtime set back: only the ctime tells."""
    before = os.lstat(path)
    with open(path, "r+b") as stream:
        stream.write(same_size_copy(text, before.st_size))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def twice_then_planted(
    run: Callable[[], subprocess.CompletedProcess[str]],
    where: Path,
    kept: Path,
    record: Path,
    key: GeneratedKey,
) -> subprocess.CompletedProcess[str]:
    """Runs twice (the second reads only what changed: the record verified, `kept` in it), then
    plants the key in `kept` and runs again: that run's result."""
    for _ in range(2):
        settle(where, RACY_NS)  # as a later build: what the one before wrote is recorded
        result = run()
        assert result.returncode == 0, result.stdout + result.stderr
    assert f"({record}): not read again" in result.stdout, result.stdout
    sealed = build_module.scan_record([load(key).material], record.parent, record.name)
    assert sealed is not None and str(kept) in recorded_paths(sealed)
    plant_in_place(kept, key.text)
    return run()
