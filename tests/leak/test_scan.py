"""The leak scan: every copy of the key found, the public half never mistaken for it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from conftest import GeneratedKey, make_key
from deploykey.leak import scan
from deploykey.secrets import keys
from support.nonroot import NonRoot


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
    "base64 of base64": lambda text: base64.b64encode(base64.b64encode(text.encode())),
    "base64 of base64, offsets 1 and 2": lambda text: base64.b64encode(
        b"x" + base64.b64encode(b"yz" + text.encode())
    ),
    "URL-encoded": lambda text: urllib.parse.quote_plus(text).encode(),
    "JSON with escaped slashes": lambda text: json.dumps({"k": text}).replace("/", "\\/").encode(),
    "UTF-16 (PowerShell)": lambda text: text.encode("utf-16"),
    "hex": lambda text: text.encode().hex().encode(),
    "HEX": lambda text: text.encode().hex().upper().encode(),
    "hex dump (xxd -p)": lambda text: "\n".join(
        text.encode()[i : i + 30].hex() for i in range(0, len(text), 30)
    ).encode(),
    "base32": lambda text: base64.b32encode(text.encode()),
    "base32 at offset 3": lambda text: base64.b32encode(b"abc" + text.encode()),
    "base85": lambda text: base64.b85encode(text.encode()),
    "base85 at offset 1": lambda text: base64.b85encode(b"x" + text.encode()),
    "YAML block": lambda text: (
        "key: |\n" + "".join("  " + line + "\n" for line in text.splitlines())
    ).encode(),
}


@pytest.fixture(params=["ahocorasick-rs", "Python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both searches: ahocorasick-rs, and Python alone (a platform with no wheel of it, where
    `import ahocorasick_rs` fails)."""
    if request.param == "Python":
        monkeypatch.setitem(sys.modules, "ahocorasick_rs", None)
    return str(request.param)


@pytest.mark.parametrize(
    ("kind", "fmt"), [("ed25519", None), ("rsa", "PEM"), ("ecdsa", "PKCS8"), ("rsa", None)]
)
@pytest.mark.parametrize("copy", sorted(COPIES))
def test_finds_every_copy(
    tmp_path: Path, keys_dir: Path, kind: str, fmt: str | None, copy: str, engine: str
) -> None:
    key = make_key(keys_dir, kind, fmt=fmt)
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "er" / "leak.txt").write_bytes(
        b"prefix " + COPIES[copy](key.text) + b" suffix"
    )
    report = scan.scan([tree], [load(key)])
    assert [Path(hit.path).name for hit in report.hits] == ["leak.txt"]
    assert report.hits[0].label == key.fingerprint
    assert report.engine == engine


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


def test_a_needle_split_between_chunks_is_found_wherever_it_is_split(keys_dir: Path) -> None:
    """The search asks the fast question of each chunk and of the seam with the one before (not
    of both joined): a needle cut at any place, also across a chunk shorter than a needle, is
    found, and another private key whose header is cut from its body too."""
    key = load(make_key(keys_dir))
    searcher = scan.Searcher.of([key])
    needle = next(needle.data for needle, _ in searcher.table if needle.kind == scan.TEXT)
    data = b"." * 300 + needle + b"." * 300
    for cut in range(300, 300 + len(needle) + 1):
        for chunks in (
            [data[:cut], data[cut:]],
            [data[:cut], data[cut : cut + 5], data[cut + 5 :]],
        ):
            assert searcher.search(chunks) == [(scan.TEXT, key.fingerprint)], (cut, len(chunks))
    other = make_key(keys_dir).text.encode()
    cut = other.index(b"\n") + 1  # the header in one chunk, the body in the next
    assert searcher.search([b"." * 300 + other[:cut], other[cut:]]) == [
        (scan.OTHER_KEY, "not one of this build's keys")
    ]


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
    hits = scan.scan([tmp_path], [load(key)]).hits
    # Only the other key is reported, as what it is; nothing is a copy of this key.
    assert [(Path(h.path).name, h.kind) for h in hits] == [("other.key", "another private key")]


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


ARCHIVES = {
    "wheel (zip)": "zip",
    "tar.gz": "tar.gz",
    "gzip stream": "gz",
    "gzip of two members": "gz2",
    "tar.bz2": "tar.bz2",
    "tar.xz": "tar.xz",
    "zip inside a tar.gz": "nested",
}


def make_archive(path: Path, form: str, name: str, data: bytes) -> str:
    """An archive holding `data` as member `name`; returns the member path the scan should name."""
    import gzip
    import io
    import tarfile
    import zipfile

    def tar(mode: str) -> None:
        with tarfile.open(path, mode) as archive:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    if form == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("pkg/__init__.py", "")
            archive.writestr(name, data)
        return f"{path}!{name}"
    if form == "gz":
        path.write_bytes(gzip.compress(data))
        return f"{path}!(decompressed)"
    if form == "gz2":  # `cat a.gz b.gz`: gzip -d gives both; the key is in the second
        path.write_bytes(gzip.compress(b"first member\n" * 1000) + gzip.compress(data))
        return f"{path}!(decompressed)"
    if form == "nested":
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, data)
        make_archive(path, "tar.gz", "dist/inner.whl", inner.getvalue())
        return f"{path}!dist/inner.whl!{name}"
    tar({"tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[form])
    return f"{path}!{name}"


@pytest.mark.parametrize("streamed", [False, True], ids=["small", "large"])
@pytest.mark.parametrize("form", sorted(ARCHIVES))
def test_finds_copies_inside_archives(
    tmp_path: Path,
    keys_dir: Path,
    form: str,
    engine: str,
    streamed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if streamed:
        # An archive over CHUNK bytes is read again from its file, not kept in memory; a .gz over
        # ONE_SHOT bytes is inflated as a stream, not in one call.
        monkeypatch.setattr(scan, "CHUNK", 64)
        monkeypatch.setattr(scan, "ONE_SHOT", 0)
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    expected = make_archive(tree / "dist.bin", ARCHIVES[form], "secrets/key.txt", key.text.encode())
    report = scan.scan([tree], [load(key)])
    assert (expected, "private key text") in {(hit.path, hit.kind) for hit in report.hits}
    assert report.engine == engine


def test_other_private_keys_and_url_credentials(
    tmp_path: Path, keys_dir: Path, engine: str
) -> None:
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    (tree / "src" / "lib" / ".git").mkdir(parents=True)
    (tree / "src" / "lib" / ".git" / "config").write_text(
        '[remote "origin"]\n\turl = https://x-access-token:ghs_abcdefghijklmnop@github.com/acme/lib.git\n'
    )
    site = tree / "site-packages" / "lib-1.0.dist-info"
    site.mkdir(parents=True)
    (site / "direct_url.json").write_text(
        '{"url": "https://deploy:hunter2secret@git.example.com/acme/lib.git"}'
    )
    (site / "RECORD").write_text("lib/__init__.py,sha256=abc,0\n")
    (tree / "vendored.pem").write_bytes(make_key(keys_dir, "rsa", fmt="PEM").path.read_bytes())
    (tree / "docs.py").write_text(
        'MARKER = "-----BEGIN RSA PRIVATE KEY-----"  # a string in code, no key\n'
    )
    report = scan.scan([tree], [load(key)])
    found = {(Path(hit.path).name, hit.kind, hit.label) for hit in report.hits}
    assert found == {
        ("config", "credentials in a URL", "x-access-token:****@github.com"),
        ("direct_url.json", "credentials in a URL", "deploy:****@git.example.com"),
        ("vendored.pem", "another private key", "not one of this build's keys"),
    }
    assert all(not hit.is_ours for hit in report.hits if hit.kind == "another private key")


def test_scan_command(tmp_path: Path, keys_dir: Path) -> None:
    from conftest import BIN

    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "clean.txt").write_text("nothing here\n")
    scan_cmd = [str(BIN / "deploykey"), "scan", str(tree), "--key-file", str(key.path)]
    clean = subprocess.run(scan_cmd, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert "no key material found" in clean.stdout
    (tree / "copy.b64").write_bytes(base64.encodebytes(key.path.read_bytes()))
    leak = subprocess.run(scan_cmd, capture_output=True, text=True)
    assert leak.returncode == 1
    assert f"{tree / 'copy.b64'} (base64 of the private key, {key.fingerprint})" in leak.stderr
    assert key.text.splitlines()[2] not in leak.stdout + leak.stderr
    usage = subprocess.run(
        [str(BIN / "deploykey"), "scan", str(tree)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert usage.returncode == 2 and "no key to look for" in usage.stderr
    # A symbolic link is scanned for its target; a path that is not there is an error, not clean.
    (tmp_path / "link").symlink_to(tree)
    linked = subprocess.run(
        [*scan_cmd[:2], str(tmp_path / "link"), *scan_cmd[3:]], capture_output=True, text=True
    )
    assert linked.returncode == 1 and f"{tree / 'copy.b64'} (base64" in linked.stderr
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for missing in (tmp_path / "nothing", tmp_path / "dangling"):
        gone = subprocess.run(
            [*scan_cmd[:2], str(missing), *scan_cmd[3:]], capture_output=True, text=True
        )
        assert gone.returncode == 1, gone.stdout
        assert f"{missing} does not exist" in gone.stderr and "no key material" not in gone.stdout


def test_another_private_key_fails_deploykey_scan_but_not_a_build(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A private key that is not the build's (a package's test key) is named; it fails `deploykey
    scan`, and a build's leak check only warns (SECURITY.md: not the build's to guard)."""
    from conftest import BIN
    from deploykey import build
    from deploykey.core import sources
    from deploykey.secrets import config

    key, other = make_key(keys_dir), make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "vendored_test.key").write_text(other.text)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    settings = config.load(tree, sources.read(str(env_dir)), {})
    assert build.leak_check([tree], [load(key)], [], settings) is None
    warned = capsys.readouterr().err
    assert f"{tree / 'vendored_test.key'}: another private key " in warned
    assert "not this build's, so not failing it" in warned
    scanned = subprocess.run(
        [str(BIN / "deploykey"), "scan", str(tree), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
    )
    assert scanned.returncode == 1, scanned.stdout + scanned.stderr
    assert f"{tree / 'vendored_test.key'} (another private key" in scanned.stderr


def test_every_form_over_many_keys(keys_dir: Path) -> None:
    """Needles depend on where +, / and line breaks fall in each random key: check many keys."""
    for kind in ["ed25519"] * 40 + ["ecdsa"] * 10 + ["rsa"] * 4:
        key = make_key(keys_dir, kind)
        searcher = scan.Searcher.of([load(key)])
        for copy, transform in COPIES.items():
            found = searcher.search([b"prefix " + transform(key.text) + b" suffix"])
            assert found and all(label == key.fingerprint for _, label in found), (copy, kind)
        key.path.unlink()


def test_a_truncated_gzip_is_named_as_not_unpacked(tmp_path: Path, keys_dir: Path) -> None:
    """Its bytes were read and searched; only its members were not all unpacked."""
    import gzip

    key = make_key(keys_dir)
    whole = gzip.compress(key.text.encode() * 50)
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    report = scan.scan([tmp_path], [load(key)])
    assert any(entry.startswith(f"{tmp_path / 'cut.gz'} (") for entry in report.unpacked)
    assert report.unreadable == ()


def test_a_long_comment_is_not_taken_for_the_secret(tmp_path: Path, keys_dir: Path) -> None:
    """An ed25519 key whose comment is longer than its 32 secret bytes: its own .pub file and
    prose quoting the comment are no leak; a copy of the private key still is."""
    comment = "deploy key for acme/private-utils on the production pipeline"
    path = keys_dir / "long-comment"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    key = load(GeneratedKey(path, "long-comment"))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "deploy_key.pub").write_bytes(path.with_suffix(".pub").read_bytes())
    (tree / "README.md").write_text(f"We use the key '{comment}' for the pipeline.\n")
    assert scan.scan([tree], [key]).hits == ()
    (tree / "copy").write_bytes(path.read_bytes())
    assert [hit.path for hit in scan.scan([tree], [key]).hits] == [str(tree / "copy")]


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_the_same_key_in_another_format_is_this_key(
    tmp_path: Path, keys_dir: Path, kind: str
) -> None:
    """The build's key converted by ssh-keygen (PKCS#8, PEM; ed25519 has only OpenSSH), with
    another comment, or re-wrapped at another line width, is a copy of this key, not "another
    private key" that a build lets pass."""
    import shutil

    key = make_key(keys_dir, kind)
    loaded = load(key)
    copies = []
    formats = ["PKCS8", "PEM"] if kind != "ed25519" else []
    for fmt in formats:
        converted = tmp_path / f"as-{fmt}"
        shutil.copy(key.path, converted)
        subprocess.run(
            ["ssh-keygen", "-q", "-p", "-N", "", "-P", "", "-m", fmt, "-f", str(converted)],
            check=True,
            capture_output=True,
        )
        assert converted.read_bytes() != key.path.read_bytes()
        copies.append(converted)
    recommented = tmp_path / "recommented"
    shutil.copy(key.path, recommented)
    subprocess.run(
        ["ssh-keygen", "-q", "-c", "-C", "someone else's laptop", "-P", "", "-f", str(recommented)],
        check=True,
        capture_output=True,
    )
    copies.append(recommented)
    lines = key.text.strip().splitlines()
    body = "".join(lines[1:-1])
    rewrapped = tmp_path / "rewrapped"
    rewrapped.write_text(
        "\n".join([lines[0], *(body[i : i + 40] for i in range(0, len(body), 40)), lines[-1]])
    )
    copies.append(rewrapped)
    for copy in copies:
        tree = tmp_path / f"tree-{copy.name}"
        tree.mkdir()
        shutil.copy(copy, tree / "key")
        hits = scan.scan([tree], [loaded]).hits
        assert hits and all(hit.is_ours for hit in hits), (copy.name, hits)
        assert {hit.label for hit in hits} == {loaded.fingerprint}, copy.name


def test_archives_are_recognised_by_their_bytes_not_their_names(
    tmp_path: Path, keys_dir: Path
) -> None:
    """A gzip named .json and a zip named .png are opened; a text file that starts like a bzip2
    stream (`BZh`) or a gzip header without its method is just text, not a broken archive."""
    import gzip

    key = make_key(keys_dir)
    loaded = load(key)
    tmp_path = tmp_path / "tree"  # not the keys' directory
    tmp_path.mkdir()
    (tmp_path / "data.json").write_bytes(gzip.compress(key.text.encode()))
    (tmp_path / "logo.png").write_bytes(bytes(_zip({"inside.txt": key.text.encode()})))
    (tmp_path / "notes.txt").write_text("BZh, said the reviewer, is how bzip2 starts.\n")
    (tmp_path / "odd.bin").write_bytes(b"\x1f\x8b\x01 not deflate")
    # A zstd frame (the standard library can decompress it from Python 3.14 only).
    frame = b"\x28\xb5\x2f\xfd" + bytes(range(40))
    (tmp_path / "blob.dat").write_bytes(frame)
    report = scan.scan([tmp_path], [loaded])
    assert {hit.path for hit in report.hits} == {
        f"{tmp_path / 'data.json'}!(decompressed)",
        f"{tmp_path / 'logo.png'}!inside.txt",
    }
    assert [entry.split(" (")[0] for entry in report.unpacked] == [str(tmp_path / "blob.dat")]


def _zip(members: dict[str, bytes]) -> bytearray:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return bytearray(buffer.getvalue())


def test_archives_nested_5_deep_are_opened_and_deeper_is_named(
    tmp_path: Path, keys_dir: Path
) -> None:
    """The documented depth: a key in the fifth of five nested zips is found; a sixth zip is
    named as not unpacked (the scan then fails: test_archives_it_cannot_unpack_fail_it)."""
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    nested, names = bytes(_zip({"key.txt": key.text.encode()})), ["key.txt"]
    for level in range(4, 0, -1):
        nested = bytes(_zip({f"level{level}.zip": nested}))
        names.insert(0, f"level{level}.zip")
    (tree / "five.zip").write_bytes(nested)
    (tree / "six.zip").write_bytes(bytes(_zip({"level0.zip": nested})))
    report = scan.scan([tree], [load(key)])
    assert [(hit.path, hit.kind) for hit in report.hits] == [
        ("!".join([str(tree / "five.zip"), *names]), "private key text")
    ]
    six = "!".join([str(tree / "six.zip"), "level0.zip", *names[:-1]])
    assert report.unpacked == (f"{six} (an archive nested deeper than 5)",)


def test_archives_it_cannot_unpack_fail_it(tmp_path: Path, keys_dir: Path) -> None:
    """`deploykey scan` over archives it cannot unpack in full (truncated gzip, a zip without its
    central directory, an encrypted and a deflate64 member, zips nested 6 deep): exit 1 naming
    each with why, never "clean" and never a crash; a broken first member does not hide a key in
    the member after it. DEPLOYKEY_SCAN_INCOMPLETE=warn names them and goes on."""
    import gzip

    from conftest import BIN

    key = make_key(keys_dir)
    text = key.text.encode()
    tree = tmp_path / "tree"
    tree.mkdir()
    whole = gzip.compress(b"nothing secret\n" * 500)
    (tree / "cut.gz").write_bytes(whole[: len(whole) // 2])
    no_directory = _zip({"inner.txt": b"nothing secret\n"})
    (tree / "nocd.zip").write_bytes(no_directory[: no_directory.find(b"PK\x01\x02")])
    encrypted = _zip({"inner.txt": b"nothing secret\n"})
    encrypted[6] |= 1  # the encrypted flag, in the local header and the central directory
    encrypted[encrypted.find(b"PK\x01\x02") + 8] |= 1
    (tree / "encrypted.zip").write_bytes(encrypted)
    deflate64 = _zip({"inner.txt": b"nothing secret\n"})
    deflate64[8] = 9  # compression method 9, deflate64, which zipfile does not implement
    deflate64[deflate64.find(b"PK\x01\x02") + 10] = 9
    (tree / "deflate64.zip").write_bytes(deflate64)
    nested = bytes(_zip({"note.txt": b"nothing secret\n"}))
    for level in range(6):
        nested = bytes(_zip({f"level{level}.zip": nested}))
    (tree / "deep.zip").write_bytes(nested)
    scan_cmd = [str(BIN / "deploykey"), "scan", str(tree), "--key-file", str(key.path)]
    result = subprocess.run(scan_cmd, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no key material found" not in result.stdout + result.stderr
    assert "could not unpack 5 archive(s) in full" in result.stderr
    for name in (
        "cut.gz (",
        "nocd.zip (",
        "encrypted.zip!inner.txt (",
        "deflate64.zip!inner.txt (",
    ):
        assert f" !     {tree / name}" in result.stderr, name
    assert "(an archive nested deeper than 5)" in result.stderr
    assert "(scan::incomplete: README.md#scan-incomplete)" in result.stderr
    warn = {**os.environ, "DEPLOYKEY_SCAN_INCOMPLETE": "warn"}
    warned = subprocess.run(scan_cmd, capture_output=True, text=True, env=warn)
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert f"could not unpack the archive {tree / 'cut.gz'} (" in warned.stderr
    assert "no key material found (the archives named above: in their bytes only)" in warned.stdout
    # A broken first member (a cut .gz) no longer hides the key in the member after it.
    broken_first = _zip({"a-broken.gz": whole[: len(whole) // 2], "b-key.txt": text})
    (tree / "mixed.zip").write_bytes(broken_first)
    found = subprocess.run(scan_cmd, capture_output=True, text=True, env=warn)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"{tree / 'mixed.zip'}!b-key.txt (private key text, {key.fingerprint})" in found.stderr


def test_what_the_scan_cannot_read_fails_it(nonroot: NonRoot, keys_dir: Path) -> None:
    """`deploykey scan` as a user who cannot read a file and a directory of the tree: exit 1,
    each named with why; never "no key material found" with files unsearched."""
    key = make_key(keys_dir)
    key_file = nonroot.write("deploy_key", key.text.encode(), owner=nonroot.uid, mode=0o400)
    tree = nonroot.mkdir("tree")
    nonroot.write("tree/app.py", b"print(1)\n")
    secret = nonroot.write("tree/root-only.txt", b"whatever root wrote\n", mode=0o600)
    closed = nonroot.mkdir("tree/closed", mode=0o700)
    nonroot.write("tree/closed/inside.txt", b"unseen\n")
    result = nonroot.run("scan", str(tree), "--key-file", str(key_file), cwd=nonroot.root)
    out, err = result.stdout, result.stderr
    assert result.returncode == 1, out + err
    assert "no key material found" not in out + err
    assert (
        " !     The leak check could not read 2 path(s), so it cannot say they hold no key\n"
    ) in err
    assert f" !     {secret} (Permission denied)\n" in err
    assert f" !     {closed} (Permission denied)\n" in err
    assert f"It runs as nobody (uid {nonroot.uid})" in err
    assert "Fix: Make these paths readable by nobody" in err
    assert "(scan::unreadable: README.md#scan-unreadable)" in err
    assert "This is a bug" not in err
    # The same tree, all of it readable: clean.
    secret.chmod(0o644)
    closed.chmod(0o755)
    again = nonroot.run("scan", str(tree), "--key-file", str(key_file), cwd=nonroot.root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no key material found" in again.stdout


def test_every_batch_of_files_is_searched_by_every_process(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file per batch: the batches are shared by this process and its forked copies, and
    what each copy found comes back."""
    import os

    monkeypatch.setattr(scan, "BATCH", 1)
    monkeypatch.setattr(scan, "FORK_FROM", 0)  # forked copies for a few names too
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    leaks = {f"m{index}.py" for index in (3, 17, 39)}
    for index in range(40):
        folder = tree / f"pkg{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        text = key.text if f"m{index}.py" in leaks else f"module {index}\n"
        (folder / f"m{index}.py").write_text(text)
    report = scan.scan([tree], [load(key)])
    assert report.files == 40
    assert {Path(hit.path).name for hit in report.hits} == leaks
    assert report.processes == min(scan.PROCESSES, len(os.sched_getaffinity(0)))
    assert report.processes > 1, "this test needs a machine with 2 CPUs or more"
    monkeypatch.setattr(scan, "MAX_BATCHES", 3)  # more files than batches: 14 files in each
    again = scan.scan([tree], [load(key)])
    assert {Path(hit.path).name for hit in again.hits} == leaks


def test_a_few_files_are_searched_without_forking(tmp_path: Path, keys_dir: Path) -> None:
    """Up to FORK_FROM names are searched in this process alone (a forked copy costs more than
    it takes over); more are shared with forked copies. Both find the same leak."""
    import os

    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(scan.FORK_FROM + 1):
        (tree / f"m{index}.py").write_text(key.text if index == 7 else f"module {index}\n")
    shared = scan.scan([tree], [load(key)])
    assert shared.processes == min(scan.PROCESSES, len(os.sched_getaffinity(0)))
    assert shared.processes > 1, "this test needs a machine with 2 CPUs or more"
    (tree / "m0.py").unlink()
    alone = scan.scan([tree], [load(key)])
    assert alone.processes == 1
    assert alone.files == scan.FORK_FROM
    assert [Path(hit.path).name for hit in alone.hits] == [
        Path(hit.path).name for hit in shared.hits
    ]
    assert [Path(hit.path).name for hit in alone.hits] == ["m7.py"]


def test_the_needles_never_leave_the_scans_processes(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan (this process and its forked copies) runs no program, so the needles are never
    another program's argument, environment or input, and opens no file for writing. A copy that
    tried would fail, and the scan with it (test_a_failed_process_fails_the_scan)."""
    import builtins

    monkeypatch.setattr(scan, "BATCH", 1)  # every forked copy searches some of the files
    monkeypatch.setattr(scan, "FORK_FROM", 0)  # forked copies for a few names too
    key = make_key(keys_dir)
    loaded = load(key)
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(20):
        (tree / f"f{index}.txt").write_text(key.text if index == 13 else f"file {index}\n")
    make_archive(tree / "dist.tar.gz", "tar.gz", "key.txt", key.text.encode())

    def no_program(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the scan ran a program: {args}")

    for name in ("execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp", "system"):
        monkeypatch.setattr(os, name, no_program)
    monkeypatch.setattr(subprocess, "Popen", no_program)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    os_open, open_ = os.open, builtins.open

    def reading_only(path: object, flags: int, *args: object, **kwargs: object) -> int:
        assert not flags & writing, f"the scan opened {path} for writing"
        return os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def reading(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        assert isinstance(file, int) or set(mode) <= set("rbt"), f"the scan wrote {file}"
        return open_(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", reading_only)
    monkeypatch.setattr(builtins, "open", reading)
    report = scan.scan([tree], [loaded])
    assert report.processes > 1
    assert {Path(hit.path.split("!")[0]).name for hit in report.hits} == {
        "f13.txt",
        "dist.tar.gz",
    }


def test_a_failed_process_fails_the_scan(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked copy that fails has batches nobody searched: the scan must not say "clean"."""
    import os

    parent = os.getpid()
    search_batch = scan._search_batch

    def failing_in_copies(*args: object) -> None:
        if os.getpid() != parent:
            raise MemoryError("the copy ran out of memory")
        search_batch(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(scan, "BATCH", 1)
    monkeypatch.setattr(scan, "FORK_FROM", 0)  # forked copies for a few names too
    monkeypatch.setattr(scan, "_search_batch", failing_in_copies)
    key = make_key(keys_dir)
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(200):
        (tree / f"f{index}").write_text("x" * 100_000)
    with pytest.raises(RuntimeError, match="a scan process failed"):
        scan.scan([tree], [load(key)])


def test_scan_command_finds_hex_of_the_key_as_the_platform_gave_it(
    tmp_path: Path, keys_dir: Path
) -> None:
    """The attack of issue 25: DEPLOY_KEY given as base64 (as the README offers), and build code
    ships hex of the value it read, never decoding it. A copy of the key as given is a leak."""
    from conftest import BIN

    key = make_key(keys_dir)
    given = base64.b64encode(key.path.read_bytes())
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "shipped.txt").write_bytes(given.hex().encode() + b"\n")
    scanned = subprocess.run(
        [str(BIN / "deploykey"), "scan", str(tree)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DEPLOY_KEY": given.decode()},
    )
    assert scanned.returncode == 1, scanned.stdout
    assert f"{tree / 'shipped.txt'} (hex of the key as given, {key.fingerprint})" in scanned.stderr
    assert "no key material found" not in scanned.stdout


# Forms a key arrives in (the platform's value, a binding file), and what build code may do with
# the value it read, never decoding it.
GIVEN = {
    "base64": lambda text: base64.b64encode(text.encode()),
    "base64 wrapped at 76": lambda text: base64.encodebytes(text.encode()),
    "base64 of CRLF text": lambda text: base64.b64encode(text.replace("\n", "\r\n").encode()),
    "base64 urlsafe": lambda text: base64.urlsafe_b64encode(text.encode()),
    "base64 of base64": lambda text: base64.b64encode(base64.encodebytes(text.encode())),
    "CRLF": lambda text: text.replace("\n", "\r\n").encode(),
    "literal \\n in quotes": lambda text: ('"' + text.replace("\n", "\\n") + '"').encode(),
}
SHIPPED = {
    "hex": lambda value: value.hex().encode(),
    "HEX": lambda value: value.hex().upper().encode(),
    "hex dump (xxd -p)": lambda value: b"\n".join(
        value[i : i + 30].hex().encode() for i in range(0, len(value), 30)
    ),
    "base32": lambda value: base64.b32encode(value),
    "base32 at offset 2": lambda value: base64.b32encode(b"ab" + value),
    "base85": lambda value: base64.b85encode(value),
    "base85 at offset 3": lambda value: base64.b85encode(b"abc" + value),
    "base64": lambda value: base64.b64encode(value),
    "base64 at offset 1": lambda value: base64.encodebytes(b"a" + value),
}


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_every_encoding_of_the_key_as_given(
    tmp_path: Path, keys_dir: Path, kind: str, engine: str
) -> None:
    """Each form the key arrived in is searched for in every encoding the scan knows, inside
    archives too (gzip of its hex), not only the decoded key."""
    import gzip

    for _ in range(3):  # needles depend on where the secret falls in each random key
        key = make_key(keys_dir, kind)
        for form, give in GIVEN.items():
            given = give(key.text)
            loaded = keys.load(given, "DEPLOY_KEY", "test")
            searcher = scan.Searcher.of([loaded])
            for copy, ship in SHIPPED.items():
                found = searcher.search([b"prefix " + ship(given) + b" suffix"])
                assert found and {label for _, label in found} == {key.fingerprint}, (form, copy)
            tree = tmp_path / "tree"
            tree.mkdir(exist_ok=True)
            (tree / "shipped.gz").write_bytes(gzip.compress(given.hex().encode()))
            report = scan.scan([tree], [loaded])
            assert [hit.path for hit in report.hits] == [f"{tree / 'shipped.gz'}!(decompressed)"]
        key.path.unlink()


def test_past_64_needles_every_needle_is_still_found(keys_dir: Path, engine: str) -> None:
    """Two keys given as base64 of base64: over 64 needles, more than one automaton of the fast
    search takes (its SIMD prefilter stops at 64); each needle alone is found."""
    given = [
        base64.b64encode(base64.encodebytes(make_key(keys_dir, kind).path.read_bytes()))
        for kind in ("ed25519", "rsa")
    ]
    searcher = scan.Searcher.of([keys.load(value, "DEPLOY_KEY", "test") for value in given])
    assert len(searcher.patterns) > 2 * scan.AUTOMATON_PATTERNS
    missed = [p for p in searcher.patterns if not searcher.holds_any(b"<" + p + b">")]
    assert missed == []
    assert not searcher.holds_any(b"nothing of the keys here")
