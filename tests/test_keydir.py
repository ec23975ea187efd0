"""The key dir: private, outside the kept directories, refusing planted links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploykey import keydir
from deploykey.errors import UserError


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
