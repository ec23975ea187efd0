"""The leak scan: every copy of the key found, the public half never mistaken for it."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from conftest import GeneratedKey, make_key
from deploykey import keys, scan


def load(key: GeneratedKey) -> keys.Key:
    return keys.load(key.path.read_bytes(), "DEPLOY_KEY", "test")


def der_of(key: GeneratedKey) -> bytes:
    body = "".join(line for line in key.text.splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)


COPIES = {
    "as is": lambda text: text.encode(),
    "CRLF": lambda text: text.replace("\n", "\r\n").encode(),
    "JSON string": lambda text: json.dumps({"key": text}).encode(),
    "newlines as spaces": lambda text: text.replace("\n", " ").encode(),
    "in a .env file": lambda text: b'DEPLOY_KEY="' + text.encode() + b'"\n',
    "base64": lambda text: base64.b64encode(text.encode()),
    "base64 wrapped at 76": lambda text: base64.encodebytes(text.encode()),
    "base64 urlsafe": lambda text: base64.urlsafe_b64encode(text.encode()),
    "base64 at offset 1": lambda text: base64.b64encode(b"x" + text.encode()),
    "base64 at offset 2": lambda text: base64.encodebytes(b"xy" + text.encode()),
    "base64 of CRLF text": lambda text: base64.b64encode(text.replace("\n", "\r\n").encode()),
}


@pytest.mark.parametrize(
    ("kind", "fmt"), [("ed25519", None), ("rsa", "PEM"), ("ecdsa", "PKCS8"), ("rsa", None)]
)
@pytest.mark.parametrize("copy", sorted(COPIES))
def test_finds_every_copy(
    tmp_path: Path, keys_dir: Path, kind: str, fmt: str | None, copy: str
) -> None:
    key = make_key(keys_dir, kind, fmt=fmt)
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "er" / "leak.txt").write_bytes(
        b"prefix " + COPIES[copy](key.text) + b" suffix"
    )
    report = scan.scan([tree], [load(key)])
    assert [hit.path.name for hit in report.hits] == ["leak.txt"]
    assert report.hits[0].label == key.fingerprint


def test_finds_the_raw_key_bytes(tmp_path: Path, keys_dir: Path) -> None:
    key = make_key(keys_dir, "rsa", fmt="PEM")
    (tmp_path / "key.der").write_bytes(der_of(key))
    report = scan.scan([tmp_path / "key.der"], [load(key)])
    assert [hit.kind for hit in report.hits] == ["private key bytes"]


def test_finds_copies_across_chunk_boundaries(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan, "CHUNK", 64)
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    for offset in range(0, 64, 7):
        (tree / f"f{offset}").write_bytes(b"." * offset + key.text.encode())
    report = scan.scan([tree], [load(key)])
    assert len({hit.path for hit in report.hits}) == len(list(range(0, 64, 7)))


@pytest.mark.parametrize(("kind", "fmt"), [("ed25519", None), ("rsa", "PEM"), ("ecdsa", "PKCS8")])
def test_public_half_is_no_leak(tmp_path: Path, keys_dir: Path, kind: str, fmt: str | None) -> None:
    key = make_key(keys_dir, kind, fmt=fmt)
    tmp_path = tmp_path / "tree"
    tmp_path.mkdir()
    public = key.path.with_suffix(".pub").read_bytes()
    (tmp_path / "id.pub").write_bytes(public)
    (tmp_path / "authorized_keys").write_bytes(b"restrict " + public)
    (tmp_path / "pub.b64").write_bytes(base64.b64encode(public))
    blob = base64.b64decode(public.split()[1])
    (tmp_path / "pub.bin").write_bytes(blob)
    (tmp_path / "other.key").write_bytes(make_key(keys_dir, kind, fmt=fmt).path.read_bytes())
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(key.path)], capture_output=True, text=True
    ).stdout
    (tmp_path / "log.txt").write_text(fingerprint)
    assert scan.scan([tmp_path], [load(key)]).hits == ()


def test_links_are_not_followed_and_counts_are_reported(tmp_path: Path, keys_dir: Path) -> None:
    key = make_key(keys_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "copy").write_text(key.text)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside / "copy")
    (tree / "dirlink").symlink_to(outside)
    (tree / "a.txt").write_text("hello")
    report = scan.scan([tree], [load(key)])
    assert report.hits == ()
    assert (report.files, report.size) == (1, 5)


def test_needles_hold_no_public_bytes(keys_dir: Path) -> None:
    key = make_key(keys_dir)
    loaded = load(key)
    public_b64 = key.public.split()[1].encode()
    public_blob = base64.b64decode(public_b64)
    for needle in scan.needles(loaded):
        assert needle.data not in public_b64
        assert needle.data not in public_blob
        assert len(needle.data) >= 12
