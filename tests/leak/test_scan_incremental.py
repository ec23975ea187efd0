"""The leak check reads what changed since the last scan that verified the tree, never less.

Real files, real scans: what a scan read is counted (Report.files, Report.skipped), and every
change build code could make after a scan (in place within the same second with the mtime set
back, a new file, a replacement, an archive rewritten, the record itself edited or forged, a
rotated key) is read again and its planted key copy found.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import BIN, KIT, Build, GeneratedKey, make_key
from deploykey import build as build_module
from deploykey.leak import scan
from deploykey.secrets import keys
from support.races import (
    RACY_NS,
    TICK_NS,
    load,
    recorded_paths,
    same_size_copy,
    settle,
    twice_then_planted,
)


def record_for(key: keys.Key, cache: Path) -> scan.Record:
    """The record a build keeps in the kit's cache, keyed from its secrets as a build does."""
    record = build_module.scan_record([key.material], cache)
    assert record is not None
    return record


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "RACY_NS", TICK_NS)


def wheel(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return raw.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    for index in range(40):
        (app / "pkg" / f"m{index}.py").write_text(f"print({index})\n" * (index + 1))
    (app / "pkg" / "helper-1.0-py3-none-any.whl").write_bytes(
        wheel({"helper/__init__.py": b"", "helper/data.txt": b"nothing here\n"})
    )
    (tmp_path / "cache").mkdir()
    return app


def files_in(tree: Path) -> int:
    return len(scan.walk([tree], []))


def test_an_unchanged_tree_is_not_read_again(tree: Path, keys_dir: Path) -> None:
    key = load(make_key(keys_dir))
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    first = scan.scan([tree], [key], record=record)
    assert (first.files, first.skipped, first.previous) == (files_in(tree), 0, scan.NO_RECORD)
    second = scan.scan([tree], [key], record=record)
    assert (second.files, second.skipped, second.previous) == (0, files_in(tree), scan.VERIFIED)
    assert second.size == 0 and second.hits == ()


def test_the_record_in_the_scanned_cache_is_itself_read(tmp_path: Path, keys_dir: Path) -> None:
    """As in a build: the record lives in the cache the check scans; it is rewritten each time,
    so each scan reads it (and what else changed), nothing more."""
    key = load(make_key(keys_dir))
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    for index in range(10):
        (cache / "wheels" / f"w{index}").write_bytes(b"x" * 1000)
    record = record_for(key, cache)
    settle(cache)
    scan.scan([cache], [key], record=record)
    settle(cache)
    again = scan.scan([cache], [key], record=record)
    assert (again.files, again.skipped) == (1, 10)


def test_a_file_changed_in_place_with_its_mtime_set_back_is_read(
    tree: Path, keys_dir: Path
) -> None:
    """Build code rewrites a recorded file within the same second, same size, and sets its mtime
    (and atime) back with utime(): only its ctime tells, and the kernel set that to now."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    target = tree / "pkg" / "m39.py"
    size = target.stat().st_size
    settle(tree)
    scan.scan([tree], [key], record=record)
    before = os.lstat(target)
    with open(target, "r+b") as stream:  # in place: the same inode
        stream.write(same_size_copy(generated.text, size))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(target)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    report = scan.scan([tree], [key], record=record)
    assert report.previous == scan.VERIFIED
    assert (report.files, report.skipped) == (1, files_in(tree) - 1)
    assert [(hit.path, hit.kind) for hit in report.hits] == [(str(target), scan.TEXT)]


def test_a_file_replaced_by_one_with_the_same_stat_but_ctime_is_read(
    tree: Path, keys_dir: Path
) -> None:
    """Even were device, inode, size and mtime all as recorded (the test, holding the key, writes
    the record so), a ctime other than the recorded one means the file is read."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    target = tree / "pkg" / "m39.py"
    size = target.stat().st_size
    settle(tree)
    scan.scan([tree], [key], record=record)
    before = os.lstat(target)
    replacement = target.with_name("replacement")
    replacement.write_bytes(same_size_copy(generated.text, size))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(target)
    now = os.lstat(target)
    assert (now.st_dev, now.st_size, now.st_mtime_ns) == (
        before.st_dev,
        before.st_size,
        before.st_mtime_ns,
    )
    # The entry of the file as it is now, but with the ctime of the one it replaced.
    claimed = scan.entry(str(target), now).replace(str(now.st_ctime_ns), str(before.st_ctime_ns))
    _, entries = record.load()
    record.save([claimed, *entries])
    report = scan.scan([tree], [key], record=record)
    assert report.previous == scan.VERIFIED
    assert report.files == 1
    assert [hit.path for hit in report.hits] == [str(target)]


def test_a_record_edited_or_forged_by_build_code_is_ignored(tree: Path, keys_dir: Path) -> None:
    """Build code, which never had the secrets, plants a key copy and then makes the record say
    that file is unchanged: by editing the real record, or by writing its own under the same
    public name with a key of its own. Neither verifies: every file is read, the copy found."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    scan.scan([tree], [key], record=record)
    planted = tree / "pkg" / "m0.py"
    planted.write_text(generated.text)
    now = os.lstat(planted)
    claimed = scan.entry(str(planted), now)
    record.path.write_bytes(record.path.read_bytes() + os.fsencode(scan.SEPARATOR + claimed))
    edited = scan.scan([tree], [key], record=record)
    assert [hit.path for hit in edited.hits] == [str(planted)]
    assert edited.previous == "does not verify (changed since it was written)"
    assert (edited.files, edited.skipped) == (files_in(tree), 0)
    # Its own record: the same format and public key name, a key the build code made up.
    forged = scan.Record(record.path, os.urandom(32), record.ident)
    forged.save([claimed])
    report = scan.scan([tree], [key], record=record)
    assert [hit.path for hit in report.hits] == [str(planted)]
    assert report.previous == "does not verify (changed since it was written)"
    assert (report.files, report.skipped) == (files_in(tree), 0)


def test_a_rotated_key_means_a_full_scan(tree: Path, keys_dir: Path) -> None:
    """A copy of the new key (base64: no PEM block the other-key check would flag), already there
    when the old key's scan found the tree clean and recorded it, is found by the first scan under
    the new key: a record made under other keys is not used."""
    old, new = make_key(keys_dir), make_key(keys_dir)
    (tree / "pkg" / "new_key.txt").write_bytes(base64.b64encode(new.text.encode()))
    cache = tree.parent / "cache"
    settle(tree)
    clean = scan.scan([tree], [load(old)], record=record_for(load(old), cache))
    assert clean.hits == ()
    assert str(tree / "pkg" / "new_key.txt") in recorded_paths(record_for(load(old), cache))
    rotated = record_for(load(new), cache)
    report = scan.scan([tree], [load(new)], record=rotated)
    assert str(tree / "pkg" / "new_key.txt") in {hit.path for hit in report.hits}
    assert report.previous == "was made under other keys"
    assert (report.files, report.skipped) == (files_in(tree), 0)


def test_a_new_file_is_read_and_a_removed_one_forgotten(tree: Path, keys_dir: Path) -> None:
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    scan.scan([tree], [key], record=record)
    removed = tree / "pkg" / "m1.py"
    removed.unlink()
    added = tree / "pkg" / "sub" / "new.py"
    added.parent.mkdir()
    added.write_text(generated.text)
    report = scan.scan([tree], [key], record=record)
    assert (report.files, report.skipped) == (1, files_in(tree) - 1)
    assert [hit.path for hit in report.hits] == [str(added)]
    assert str(removed) not in recorded_paths(record)
    assert str(added) not in recorded_paths(record)  # it holds the key: never recorded as clean


def test_an_archive_changed_is_read_again(tree: Path, keys_dir: Path) -> None:
    """The skip applies to an archive as a whole: rewritten (a key copy in a member, its mtime
    set back), it is read and unpacked again."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    target = tree / "pkg" / "helper-1.0-py3-none-any.whl"
    settle(tree)
    scan.scan([tree], [key], record=record)
    before = os.lstat(target)
    target.write_bytes(
        wheel({"helper/__init__.py": b"", "helper/id_deploy": generated.text.encode()})
    )
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    report = scan.scan([tree], [key], record=record)
    assert report.files == 1
    assert [hit.path for hit in report.hits] == [f"{target}!helper/id_deploy"]


def unpacked_by(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the archives the scan unpacks, as it unpacks them (in this process alone)."""
    unpacked: list[str] = []
    monkeypatch.setattr(scan, "PROCESSES", 1)
    archive_hits = scan.archive_hits

    def spied(path: str, *args: object) -> list[scan.Hit]:
        unpacked.append(path)
        return archive_hits(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(scan, "archive_hits", spied)
    return unpacked


def test_an_archive_with_bytes_recorded_clean_is_not_unpacked_again(
    tree: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of an archive the last scan unpacked in full and found clean (a new file: uv links
    its cache's botocore data into each new environment, its ctime moved) has the same sha256:
    its bytes are read and searched, its members are what they were then, not unpacked again.
    A copy of one with a finding, or not unpacked in full, is unpacked every time."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    clean = tree / "pkg" / "helper-1.0-py3-none-any.whl"
    leaky = tree / "pkg" / "leaky.json.gz"
    leaky.write_bytes(gzip.compress(generated.text.encode()))
    settle(tree)
    unpacked = unpacked_by(monkeypatch)
    first = scan.scan([tree], [key], record=record)
    assert sorted(unpacked) == sorted([str(clean), str(leaky)])
    assert [hit.path for hit in first.hits] == [f"{leaky}!(decompressed)"]
    copies = tree / "copies"
    copies.mkdir()
    for source in (clean, leaky):
        (copies / source.name).write_bytes(source.read_bytes())
    unpacked.clear()
    second = scan.scan([tree], [key], record=record)
    assert (second.files, second.skipped) == (3, files_in(tree) - 3)  # the copies and leaky
    assert sorted(unpacked) == sorted([str(leaky), str(copies / leaky.name)])
    assert {hit.path for hit in second.hits} == {
        f"{leaky}!(decompressed)",
        f"{copies / leaky.name}!(decompressed)",
    }


def same_size_archives(secret: bytes, filler: bytes) -> tuple[bytes, bytes]:
    """Two wheels of one size, one holding `secret` deflated (no needle in its bytes as they
    are), the other `filler` (as long, as random), padded to the same size with a stored member."""

    def made(member: bytes, pad: int) -> bytes:
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as archive:
            archive.writestr("helper/data.txt", member, zipfile.ZIP_DEFLATED)
            archive.writestr("helper/pad", b"#" * pad, zipfile.ZIP_STORED)
        return raw.getvalue()

    holding, clean = made(secret, 100), made(filler, 100)
    holding, clean = made(secret, 100 + max(len(clean) - len(holding), 0)), clean
    clean = made(filler, 100 + max(len(holding) - len(clean), 0))
    assert len(holding) == len(clean)
    return holding, clean


def test_an_archive_rewritten_with_other_bytes_is_unpacked_whatever_else_it_kept(
    tree: Path, keys_dir: Path
) -> None:
    """The attack on that: build code swaps an archive recorded clean for one with the key in a
    deflated member (not in its bytes as they are), with the same path, size and mtime. Only its
    bytes tell: they hash to another sha256, so it is unpacked and the key found."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    filler = base64.b64encode(os.urandom(len(generated.text) * 3 // 4))[: len(generated.text)]
    holding, clean = same_size_archives(generated.text.encode(), filler)
    target = tree / "pkg" / "data-1.0-py3-none-any.whl"
    target.write_bytes(clean)
    settle(tree)
    assert scan.scan([tree], [key], record=record).hits == ()
    before = os.lstat(target)
    swapped = target.with_name("swapped")
    swapped.write_bytes(holding)
    os.utime(swapped, ns=(before.st_atime_ns, before.st_mtime_ns))
    swapped.replace(target)
    assert not any(needle.data in holding for needle in scan.needles(key))
    report = scan.scan([tree], [key], record=record)
    assert report.files == 1
    assert [hit.path for hit in report.hits] == [f"{target}!helper/data.txt"]


def test_a_record_made_under_another_python_is_not_used(
    tree: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's zipfile, tarfile and decompressors unpack the archives (3.14 opens zstd, which
    3.13 cannot): a record made by another Python is not used; every file is read."""
    key = load(make_key(keys_dir))
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    scan.scan([tree], [key], record=record)
    monkeypatch.setattr(scan.sys, "version", "3.99.0 (another Python)")
    scan._code_digest.cache_clear()
    try:
        report = scan.scan([tree], [key], record=record)
    finally:
        monkeypatch.undo()
        scan._code_digest.cache_clear()
    assert report.previous == "does not verify (changed since it was written)"
    assert (report.files, report.skipped) == (files_in(tree), 0)


def test_a_file_changed_just_before_the_scan_is_not_recorded(
    tree: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real window: a file whose ctime is within scan.RACY_NS of the scan's start could
    still change within the same clock tick after it was read, unseen; it is read next time."""
    monkeypatch.undo()
    assert scan.RACY_NS >= 1_000_000_000
    key = load(make_key(keys_dir))
    record = record_for(key, tree.parent / "cache")
    scan.scan([tree], [key], record=record)  # every file was written just now
    again = scan.scan([tree], [key], record=record)
    assert (again.files, again.skipped) == (files_in(tree), 0)


def test_files_with_findings_or_not_unpacked_are_read_every_time(
    tree: Path, keys_dir: Path
) -> None:
    """Only a file read in full and found clean is recorded: another private key (a warning in a
    build), a copy of the build's key, an archive that could not be unpacked are read again."""
    generated, other = make_key(keys_dir), make_key(keys_dir)
    key = load(generated)
    (tree / "other_key.pem").write_text(other.text)
    (tree / "leak.txt").write_text(generated.text)
    (tree / "broken.gz").write_bytes(gzip.compress(os.urandom(5000))[:1000])  # truncated
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    first = scan.scan([tree], [key], record=record)
    assert first.unpacked
    second = scan.scan([tree], [key], record=record)
    assert second.files == 3
    assert {hit.path for hit in second.hits} == {
        str(tree / "other_key.pem"),
        str(tree / "leak.txt"),
    }
    assert [entry.split(" ")[0] for entry in second.unpacked] == [str(tree / "broken.gz")]


def test_no_record_without_a_secret_of_the_build(tmp_path: Path) -> None:
    """An ssh agent only: no secret to key a record with, so every file is read every time."""
    assert build_module.scan_record([], tmp_path) is None


def test_the_record_holds_no_key_material(tree: Path, keys_dir: Path) -> None:
    """Paths and stats, sealed: scanning it (as every build's check of the cache does) finds
    nothing, and it is not a needle list."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    settle(tree)
    scan.scan([tree], [key], record=record)
    assert scan.scan([record.path], [key]).hits == ()
    data = record.path.read_bytes()
    assert all(needle.data not in data for needle in scan.needles(key))


# ------------------------------------------------------------------------- in a build (Heroku)


def test_a_warm_build_reads_what_changed_and_finds_a_copy_planted_since(
    build: Build, utils_key: GeneratedKey
) -> None:
    """Heroku compile with a kept build dir and cache: a later build reads only what changed,
    says how many files it verified unchanged instead, and a key copy written into one of those
    files in place since (same size, its mtime set back) is found and fails the build."""
    build.set_key(utils_key.text)
    static = build.app / "static" / "data.txt"
    static.parent.mkdir()
    static.write_bytes(b"x" * (len(utils_key.text) + 10))
    for _ in range(2):
        settle(build.app, RACY_NS)  # as a later build: what the one before wrote is recorded
        result = build.compile()
        assert result.returncode == 0, result.stdout + result.stderr
    said = re.search(r"and (\d+) more files unchanged since the scan that read them", result.stdout)
    assert said is not None and int(said.group(1)) > 0, result.stdout
    record = build.cache / "deploykey" / build_module.SCAN_RECORD
    assert f"({record}): not read again" in result.stdout
    assert str(static) in recorded_paths(record_for(load(utils_key), record.parent))
    before = os.lstat(static)
    with open(static, "r+b") as stream:
        stream.write(same_size_copy(utils_key.text, before.st_size))
    os.utime(static, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = build.compile()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Key material found in 1 file(s) of the build" in result.stderr
    assert f"{static} (private key text, {load(utils_key).fingerprint})" in result.stderr
    assert utils_key.text.splitlines()[1] not in result.stdout + result.stderr


def test_deploykey_fetch_reads_only_what_changed_in_the_cache_mount(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """Docker's fetch step checks the app and the cache mount, which stays on the builder: a
    later fetch reads what changed, and finds a key copy written in place since into a file it
    had verified (same size, mtime set back)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    cache = tmp_path / "mount"
    cache.mkdir()
    kept = cache / "kept.bin"
    kept.write_bytes(b"x" * (len(utils_key.text) + 10))
    argv = [str(BIN / "deploykey"), "fetch", "--cache-dir", str(cache), "--env-dir", str(secrets)]

    def fetch() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=build.app, env=build.environ(), capture_output=True, text=True
        )

    for _ in range(2):
        settle(cache, RACY_NS)  # as a later build: what the one before wrote is then recorded
        result = fetch()
        assert result.returncode == 0, result.stdout + result.stderr
    assert f"({cache / build_module.SCAN_RECORD}): not read again" in result.stdout
    assert str(kept) in recorded_paths(record_for(load(utils_key), cache))
    before = os.lstat(kept)
    with open(kept, "r+b") as stream:
        stream.write(same_size_copy(utils_key.text, before.st_size))
    os.utime(kept, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = fetch()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{kept} (private key text, {load(utils_key).fingerprint})" in result.stderr


def test_a_hard_linked_file_is_read_once_and_a_key_written_through_any_name_found(
    tree: Path, keys_dir: Path
) -> None:
    """uv links its cache's files into the environment (installer.link_mode): one file, two
    names, read once while both names keep the stat it had when read. Build code that writes the
    key through one name, in place with the mtime set back, changes the file both names share:
    it is read again, and both names are reported (the cache's copy is where the next build
    would take it from)."""
    generated = make_key(keys_dir)
    key = load(generated)
    record = record_for(key, tree.parent / "cache")
    cached = tree.parent / "cache" / "uv-cache" / "m39.py"
    cached.parent.mkdir()
    installed = tree / "pkg" / "m39.py"
    os.link(installed, cached)
    settle(tree.parent)
    first = scan.scan([tree, cached.parent], [key], record=record)
    assert (first.files, first.linked) == (files_in(tree), 1)
    assert {str(installed), str(cached)} <= recorded_paths(record)
    before = os.lstat(cached)
    with open(cached, "r+b") as stream:  # through the cache's name: the same inode
        stream.write(same_size_copy(generated.text, before.st_size))
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    report = scan.scan([tree, cached.parent], [key], record=record)
    assert {hit.path for hit in report.hits} == {str(installed), str(cached)}
    assert (report.files, report.linked) == (2, 0)


def test_every_name_of_a_file_goes_to_the_process_that_reads_it(
    tree: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One name a batch, shared by several processes: the names of one inode (as the directories
    list them) are still one unit of work, so each file is read once and its other names
    compared with what was read."""
    monkeypatch.setattr(scan, "BATCH", 1)
    monkeypatch.setattr(scan, "FORK_FROM", 0)  # forked copies for a few names too
    key = load(make_key(keys_dir))
    record = record_for(key, tree.parent / "cache")
    links = tree.parent / "cache" / "uv-cache"
    links.mkdir()
    originals = sorted((tree / "pkg").glob("m*.py"))
    for original in originals:
        os.link(original, links / original.name)
    settle(tree.parent)
    report = scan.scan([tree, links], [key], record=record)
    assert report.processes > 1, "this test needs a machine with 2 CPUs or more"
    assert (report.files, report.linked) == (files_in(tree), len(originals))


# ------------------------------------------ the record where a scan runs outside install_cycle


def test_deploykey_scan_with_a_cache_dir_reads_only_what_changed(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """`deploykey scan PATH --cache-dir DIR` keeps its record in DIR (beside `fetch`'s)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    tree, cache = tmp_path / "tree", tmp_path / "mount"
    (tree / "pkg").mkdir(parents=True)
    cache.mkdir()
    for index in range(20):
        (tree / "pkg" / f"m{index}.py").write_text(f"print({index})\n" * 100)
    kept = tree / "pkg" / "m7.py"
    argv = [str(BIN / "deploykey"), "scan", str(tree), "--cache-dir", str(cache)]
    argv += ["--env-dir", str(secrets)]

    def scan_tree() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=build.environ(), capture_output=True, text=True)

    result = twice_then_planted(scan_tree, tree, kept, cache / "scan-record-scan", utils_key)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{kept} (private key text, {utils_key.fingerprint})" in result.stderr


def test_the_handoff_reads_only_what_changed_and_finds_a_copy_planted_since(
    build: Build, utils_key: GeneratedKey
) -> None:
    """DEPLOYKEY_INSTALL=off (before heroku/python): the check after the fetch keeps its record
    in the kit's part of CACHE_DIR too."""
    build.set_key(utils_key.text)
    build.set_key("off", name="DEPLOYKEY_INSTALL")
    kept = build.app / "static" / "data.txt"
    kept.parent.mkdir()
    kept.write_bytes(b"x" * (len(utils_key.text) + 10))
    record = build.cache / "deploykey" / build_module.SCAN_RECORD
    try:
        result = twice_then_planted(build.compile, build.app, kept, record, utils_key)
    finally:
        (KIT / "export").unlink(missing_ok=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{kept} (private key text, {utils_key.fingerprint})" in result.stderr
