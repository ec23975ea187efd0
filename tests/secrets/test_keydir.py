"""The key dir: private, outside the kept directories, refusing planted links."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WITHOUT_PROC
from deploykey.core.errors import UserError
from deploykey.secrets import keydir

LIB = Path(__file__).resolve().parents[2] / "lib"


def test_never_inside_the_app_or_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = tmp_path / "app"
    app.mkdir()
    monkeypatch.setattr(keydir, "TMPFS", app / "shm")  # a tmpfs inside the app: not used
    monkeypatch.setenv("TMPDIR", str(app / "tmp"))
    (app / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(UserError) as caught:
        keydir.create([app])
    assert caught.value.slug == "path::unsafe"
    assert f"{app / 'tmp'} is inside {app}" in caught.value.why


def test_private_and_exclusive(tmp_path: Path) -> None:
    directory = keydir.create([tmp_path])
    try:
        assert directory.path.name.startswith("deploykey-")
        assert oct(directory.path.stat().st_mode & 0o777) == "0o700"
        directory.write("id", b"secret")
        assert oct((directory.path / "id").stat().st_mode & 0o777) == "0o600"
        (directory.path / "planted").symlink_to(tmp_path / "target")
        with pytest.raises(FileExistsError):
            directory.write("planted", b"secret")
        assert not (tmp_path / "target").exists()
        with pytest.raises(FileExistsError):
            directory.write("id", b"again")
    finally:
        directory.remove()
    assert not directory.path.exists()


def test_prefers_tmpfs() -> None:
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        assert keydir.candidates()[0] == Path("/dev/shm")


def test_falls_back_to_tmpdir_when_tmpfs_cannot_hold_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setattr(keydir, "TMPFS", tmp_path / "not-a-dir")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    directory = keydir.create([tmp_path / "app"])
    try:
        assert directory.path.parent == tmp_path / "tmp"
        assert directory.passed_over == (
            f"{tmp_path / 'not-a-dir'} cannot hold the key (Not a directory)",
        )
        assert sorted(p.name for p in directory.path.iterdir()) == [keydir.OWNER]
    finally:
        directory.remove()


def test_neither_place_can_hold_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(keydir, "TMPFS", tmp_path / "no-shm")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp"))
    with pytest.raises(UserError) as caught:
        keydir.create([tmp_path / "app"])
    assert caught.value.slug == "path::no-room"
    assert caught.value.title == "No temporary directory can hold the key"
    assert caught.value.why.startswith(
        f"{tmp_path / 'no-shm'} cannot hold the key (No such file or directory); "
        f"{tmp_path / 'no-tmp'} cannot hold the key (No such file or directory). "
    )


def test_filling_up_while_written_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reserve written when the dir is made passes over a nearly full /dev/shm; should it
    fill up later all the same (the app's build writes there too), the error says so."""
    import errno

    directory = keydir.create([tmp_path / "app"])
    try:

        def full(target: Path, data: bytes, mode: int = 0o600) -> Path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(keydir, "write_new", full)
        with pytest.raises(UserError) as caught:
            directory.write("id", b"secret")
        assert caught.value.slug == "path::no-room"
        assert caught.value.why.startswith(
            f"{directory.path.parent} filled up while the key dir was written "
            "(No space left on device). "
        )
    finally:
        directory.remove()


# A build's key dir (keydir.create, as open_access makes it), and a later build's sweep, both in
# temp places of the test's own (never the machine's /dev/shm, where other builds keep theirs).
IN_OWN_PLACES = """\
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from deploykey.secrets import keydir
keydir.TMPFS, tempfile.tempdir = Path(sys.argv[2]), sys.argv[3]
"""
MAKING_BUILD = (
    IN_OWN_PLACES
    + """\
import time
print(keydir.create([]).path, flush=True)
time.sleep(600)
"""
)
SWEEPING_BUILD = (
    IN_OWN_PLACES
    + """\
for path, reason in keydir.sweep():
    print(path, reason)
"""
)


@pytest.mark.parametrize("case", ["with-proc", "without-proc", "running-in-a-pid-namespace"])
def test_the_sweep_removes_a_killed_builds_key_dir_and_never_a_running_ones(
    tmp_path: Path, case: str
) -> None:
    """The build holds a lock on its key dir's owner file, which the kernel drops when it dies
    (SIGKILL too): the sweep needs no /proc to tell. Before, it judged by /proc: with none visible
    it kept a killed build's key dir, and it removed the key dir of a build running in another
    pid namespace that shares the temp dir (a container with docker's --ipc=host), whose pid it
    could not find."""
    places = [str(LIB), str(tmp_path / "shm"), str(tmp_path / "tmp")]
    for place in places[1:]:
        os.mkdir(place)

    def making(prefix: list[str]) -> tuple[subprocess.Popen[str], Path]:
        argv = [*prefix, sys.executable, "-I", "-c", MAKING_BUILD, *places]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        return process, Path(process.stdout.readline().strip())

    killed, stale = making([])
    own_pids = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]
    running, live = making(own_pids if case == "running-in-a-pid-namespace" else [])
    try:
        killed.kill()
        killed.wait(timeout=30)
        argv = [sys.executable, "-I", "-c", SWEEPING_BUILD, *places]
        swept = subprocess.run(
            WITHOUT_PROC + argv if case == "without-proc" else argv,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert swept.stdout == (
            f"{stale} left by a build that ended without cleaning up (pid {killed.pid}, killed?)\n"
        )
        assert not stale.exists()
        assert sorted(p.name for p in live.iterdir()) == [keydir.OWNER]
    finally:
        running.kill()
        running.wait(timeout=30)


def test_what_another_process_changes_in_the_key_dir_is_named(tmp_path: Path) -> None:
    """A process of the same user can write a 0700 dir of that user; deploykey cannot stop it,
    but sees it: each file it wrote is remembered by inode, ctime, mode and digest (a rewrite in
    place with its mtime set back, a file renamed over it, a removal, a chmod)."""
    directory = keydir.create([tmp_path])
    try:
        for name in ("ssh_config", "routes", "known_hosts", "ssh", "tokens"):
            directory.write(name, name.encode())
        (directory.path / "slot.0").write_bytes(b"")  # the router's locks: not deploykey's
        assert directory.changed() == []
        config = directory.path / "ssh_config"
        before = config.stat()
        config.write_bytes(b"LocalCommand x\n")  # in place, same inode
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back
        (directory.path / "routes.new").write_bytes(b"routes")
        (directory.path / "routes.new").replace(directory.path / "routes")
        (directory.path / "known_hosts").unlink()
        (directory.path / "ssh").chmod(0o644)
        assert directory.changed() == ["known_hosts (removed)", "routes", "ssh", "ssh_config"]
    finally:
        directory.remove()
    assert directory.changed() == []
