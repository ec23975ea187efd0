"""Marked blocks in a user's file: whatever the file holds, removal gives back the exact bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykey.core import blocks
from deploykey.core.errors import UserError

BODY = '[core]\n\tsshCommand = "/usr/bin/ssh -F /dev/shm/deploykey-x/ssh_config"\n'


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=80)
    | st.text(alphabet=st.sampled_from("ab[]=\t #><\n\r"), max_size=60).map(str.encode)
)
def test_insert_then_remove_restores_every_byte(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, ".gitconfig")
        path.write_bytes(data)
        blocks.insert(path, BODY)
        blocks.insert(path, BODY)  # a re-run replaces, never duplicates
        assert path.read_bytes().count(blocks.BEGIN.encode()) == 1
        assert blocks.read(path) == BODY
        assert blocks.remove(path) == BODY
        assert path.read_bytes() == data


def test_absent_file_is_created_then_removed(tmp_path: Path) -> None:
    path = tmp_path / ".gitconfig"
    blocks.insert(path, BODY)
    assert path.read_text().startswith("# >>> deploykey created-file >>>")
    blocks.remove(path)
    assert not path.exists()


def test_user_content_added_meanwhile_is_kept(tmp_path: Path) -> None:
    path = tmp_path / ".gitconfig"
    path.write_text("[user]\n\tname = x\n")
    blocks.insert(path, BODY)
    path.write_text(path.read_text() + "[alias]\n\tst = status\n")
    blocks.remove(path)
    assert path.read_text() == "[user]\n\tname = x\n[alias]\n\tst = status\n"


def test_mode_is_kept(tmp_path: Path) -> None:
    path = tmp_path / ".gitconfig"
    path.write_text("[user]\n")
    path.chmod(0o600)
    blocks.insert(path, BODY)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    blocks.remove(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("[user]\n")
    link = tmp_path / ".gitconfig"
    link.symlink_to(target)
    with pytest.raises(UserError) as caught:
        blocks.insert(link, BODY)
    assert caught.value.slug == "path::symlink"
    assert target.read_text() == "[user]\n"
    assert os.path.islink(link)


def test_remove_without_block_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / ".gitconfig"
    path.write_text("[user]")
    assert blocks.remove(path) is None
    assert path.read_text() == "[user]"
