"""The leak check: every copy of the build's keys and tokens in a tree, whatever form it took.

The scanner knows the keys, so it searches for each key's *secret* part, not for a pattern: the
public half (inside every OpenSSH private key file, and in every .pub file) is not secret and is
never a needle. Needles are short (12 bytes of secret, 16 base64 characters: 96 bits, no chance
collision) and taken from inside single lines and, where there is a choice, without `+` or `/`, so
a copy with other line ends, JSON or URL escaping, newlines turned into spaces, or base64 wrapped
at any width still holds some of them whole:
- text: windows of the key file's base64 body (and one in UTF-16, as PowerShell writes files);
- base64: windows of each body line encoded at the three byte alignments (a `cat key | base64`
  copy, or base64 of any file holding the key), and base64 of that base64 (nested);
- bytes: a window of the decoded secret (a DER or openssh-key-v1 blob written out);
- tokens: as they are, and as base64 at each alignment.
It also reports any other private key (a PEM block with a body) and credentials in URLs of git
configs, `.git-credentials` and pip's `direct_url.json`.

Speed (a slug is up to 500 MB in tens of thousands of files): the flat search over every file runs
GNU grep's multi-pattern `grep -F` in parallel processes on batches of the files the walk finds,
the needles given on its stdin (never as arguments, never in a file); the walk also looks inside
zip/wheel, tar and gzip/bzip2/xz archives (nested ones too), and the URL credentials. Files grep
flags are then read again to say which kind of copy they hold. Without grep, Python searches alone.
Hits name the file (and archive member), the kind of copy and the key's fingerprint, never bytes.
"""

from __future__ import annotations

import base64
import bisect
import bz2
import gzip
import io
import lzma
import os
import queue
import re
import shutil
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from deploykey.keys import Key

WINDOW = 12  # secret bytes per needle: 16 base64 characters
CHUNK = 1 << 22
TEXT_WINDOWS = 4
B64_WINDOWS = 2  # consecutive: base64 wrapped at 64 or 76 columns splits at most one of them
ARCHIVE_DEPTH = 3
ARCHIVE_BUDGET = 1 << 30  # bytes decompressed from one archive at most (zip bombs)
PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\n(.*?)\n-----END \1-----", re.S)
ANY_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:\\r|\\n|\r|\n)+(?:[A-Za-z-]+: [^\r\n]*(?:\r?\n))*"
    rb"(?:\\r|\\n|\r|\n)?[A-Za-z0-9+/=]{40,}"
)
URL_CREDENTIALS = re.compile(rb"[a-z][a-z0-9+.-]*://([^\s/@:\"']+):([^\s/@\"']+)@([^\s/\"']+)")
CREDENTIAL_FILES = ("direct_url.json", ".git-credentials")
PRIVATE_KEY = b"PRIVATE KEY-----"

TEXT = "private key text"
TEXT_UTF16 = "private key text (UTF-16)"
BASE64 = "base64 of the private key"
BASE64_NESTED = "base64 of base64 of the private key"
BYTES = "private key bytes"
TOKEN = "token"  # noqa: S105 - the name of a kind of copy
TOKEN_BASE64 = "base64 of the token"  # noqa: S105
OTHER_KEY = "another private key"
URL = "credentials in a URL"


@dataclass(frozen=True)
class Needle:
    kind: str
    data: bytes


@dataclass(frozen=True)
class Hit:
    path: str  # a file, or FILE!MEMBER inside an archive
    kind: str
    label: str  # the key's fingerprint, the token's config var name, or what else was found

    @property
    def is_ours(self) -> bool:
        """A copy of the build's keys or tokens, or credentials in a URL: fails a build."""
        return self.kind != OTHER_KEY


@dataclass(frozen=True)
class Report:
    hits: tuple[Hit, ...]
    files: int
    size: int
    unreadable: tuple[str, ...]


# ------------------------------------------------------------------------------------ the needles


def needles(key: Key) -> list[Needle]:
    match = PEM.search(key.material)
    if match is None:
        raise ValueError("not a PEM key")
    lines = match.group(2).split(b"\n")
    body = b"".join(lines)
    blob = base64.b64decode(body)
    start, end = _longest_secret_run(blob, base64.b64decode(key.public.split()[1]))
    found = [Needle(BYTES, blob[start : start + WINDOW])]
    # The base64 characters that encode only secret bytes, as (line, first, last) spans.
    first, last = -(-start // 3) * 4, (end // 3) * 4
    spans, position = [], 0
    for line in lines:
        lo, hi = max(first - position, 0), min(last - position, len(line))
        if hi - lo >= 16:
            spans.append((line, lo, hi))
        position += len(line)
    text = [line[o : o + 16] for line, lo, hi in spans for o in range(lo, hi - 15)]
    for window in _spread(_clean_first(text), TEXT_WINDOWS):
        found += [Needle(TEXT, variant) for variant in _escaped(window)]
    found.append(Needle(TEXT_UTF16, _clean_first(text)[0].decode().encode("utf-16-le")))
    line, lo, hi = max(spans, key=lambda span: span[2] - span[1])
    for shift in range(3):
        found += [Needle(BASE64, w) for w in _encoded_windows(line[lo + shift : hi])]
    # Base64 of base64: the inner encoding at each alignment of the key text, encoded again.
    inner_text = key.material
    for pad in range(3):
        inner = base64.b64encode(b"x" * pad + inner_text)
        middle = len(inner) // 2
        for shift in range(3):
            # one window each: a nested copy is rare, and nine windows cover its alignments
            found += [
                Needle(BASE64_NESTED, w)
                for w in _encoded_windows(inner[middle + shift : middle + 120])[:1]
            ]
    unique: dict[bytes, Needle] = {}
    for needle in found:
        unique.setdefault(needle.data, needle)
    return list(unique.values())


def _clean_first(windows: list[bytes]) -> list[bytes]:
    """Windows without + or / first: those survive URL and JSON escaping and both alphabets."""
    return sorted(windows, key=lambda w: b"+" in w or b"/" in w)


def _escaped(window: bytes) -> list[bytes]:
    """A text window as it is, URL-encoded, and with JSON's optional `\\/` escape."""
    variants = [window]
    if b"+" in window or b"/" in window:
        variants.append(window.replace(b"+", b"%2B").replace(b"/", b"%2F"))
        variants.append(window.replace(b"/", b"\\/"))
    return list(dict.fromkeys(variants))


def _spread(windows: list[bytes], count: int) -> list[bytes]:
    clean = [w for w in windows if b"+" not in w and b"/" not in w] or windows
    step = max(len(clean) // count, 1)
    return clean[::step][:count]


def _encoded_windows(source: bytes) -> list[bytes]:
    """B64_WINDOWS consecutive 16-character windows of base64(source), whose 3-byte groups start at
    source[0]; in both alphabets when a window holds + or /."""
    encoded = base64.b64encode(source[: len(source) // 3 * 3])
    windows = [encoded[o : o + 16] for o in range(0, len(encoded) - 15, 16)][:B64_WINDOWS]
    urlsafe = [w.replace(b"+", b"-").replace(b"/", b"_") for w in windows]
    return windows + [w for w in urlsafe if w not in windows]


def token_needles(value: bytes) -> list[Needle]:
    """A token as it is, and as base64 at each alignment, in both alphabets."""
    found = [Needle(TOKEN, value)]
    for shift in range(3):
        chunk = value[shift:]
        chunk = chunk[: len(chunk) // 3 * 3]
        if len(chunk) >= WINDOW:
            for encoded in (base64.b64encode(chunk), base64.urlsafe_b64encode(chunk)):
                found.append(Needle(TOKEN_BASE64, encoded))
    return found


def _longest_secret_run(blob: bytes, public: bytes) -> tuple[int, int]:
    """The longest stretch of the key's secret values that holds no piece of the public key.

    Only the values inside the key's structure count (openssh-key-v1 strings, DER integers and octet
    strings): headers, algorithm identifiers and lengths are the same in every key of a type.
    """
    public_bytes = bytearray(len(blob))
    for offset in range(0, len(public) - 8 + 1):
        piece = public[offset : offset + 8]
        found = blob.find(piece)
        while found != -1:
            public_bytes[found : found + 8] = b"\1" * 8
            found = blob.find(piece, found + 1)
    for candidates in (_values(blob), [(0, len(blob))]):
        best = (0, 0)
        for start, end in candidates:
            run_start = None
            for index in range(start, end + 1):
                secret = index < end and not public_bytes[index]
                if secret and run_start is None:
                    run_start = index
                elif not secret and run_start is not None:
                    if index - run_start > best[1] - best[0]:
                        best = (run_start, index)
                    run_start = None
        if best[1] - best[0] >= WINDOW + 2:
            return best
    raise ValueError("the key has no secret stretch long enough to search for")


def _values(blob: bytes) -> list[tuple[int, int]]:
    """(start, end) of each value in the key's structure."""
    magic = b"openssh-key-v1\0"
    try:
        if blob.startswith(magic):
            return _openssh_values(blob, len(magic))
        return _der_values(blob, 0, len(blob))
    except (IndexError, ValueError, struct.error):
        return [(0, len(blob))]


def _openssh_values(blob: bytes, offset: int) -> list[tuple[int, int]]:
    for _ in range(3):  # cipher, kdf, kdf options
        offset += 4 + struct.unpack_from(">I", blob, offset)[0]
    count = struct.unpack_from(">I", blob, offset)[0]
    offset += 4
    for _ in range(count):  # public keys
        offset += 4 + struct.unpack_from(">I", blob, offset)[0]
    length = struct.unpack_from(">I", blob, offset)[0]
    offset, end = offset + 4 + 8, offset + 4 + length  # skip the two check integers
    values = []
    while offset + 4 <= end:
        size = struct.unpack_from(">I", blob, offset)[0]
        if offset + 4 + size > end:
            break
        values.append((offset + 4, offset + 4 + size))
        offset += 4 + size
    return values


def _der_values(blob: bytes, offset: int, end: int) -> list[tuple[int, int]]:
    values = []
    while offset < end:
        tag, size = blob[offset], blob[offset + 1]
        offset += 2
        if size & 0x80:
            octets = size & 0x7F
            size = int.from_bytes(blob[offset : offset + octets], "big")
            offset += octets
        if offset + size > end:
            raise ValueError("DER value runs past its container")
        if tag & 0x20:  # constructed: look inside
            values += _der_values(blob, offset, offset + size)
        elif tag == 0x04:  # an octet string may wrap another structure (PKCS#8)
            try:
                values += _der_values(blob, offset, offset + size)
            except (IndexError, ValueError):
                values.append((offset, offset + size))
        elif tag == 0x03:  # bit string: the first byte counts unused bits
            values.append((offset + 1, offset + size))
        else:
            values.append((offset, offset + size))
        offset += size
    return values


# ------------------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Searcher:
    """The needles of some keys and tokens, and a search over any stream of bytes."""

    table: tuple[tuple[Needle, str], ...]

    @classmethod
    def of(cls, keys: Sequence[Key], tokens: Mapping[str, bytes] | None = None) -> Searcher:
        table = [(needle, key.fingerprint) for key in keys for needle in needles(key)]
        table += [
            (needle, name)
            for name, value in (tokens or {}).items()
            for needle in token_needles(value)
        ]
        return cls(tuple(table))

    def patterns(self) -> bytes:
        """Every needle, one per line, and the mark of any private key: grep -F's pattern list."""
        return b"".join(needle.data + b"\n" for needle, _ in self.table) + PRIVATE_KEY + b"\n"

    def search(self, stream: IO[bytes]) -> list[tuple[str, str]]:
        """(kind of copy, label) for every secret found in the stream."""
        overlap = max([len(needle.data) for needle, _ in self.table] + [256]) - 1
        found: dict[tuple[str, str], None] = {}
        tail = b""
        while chunk := stream.read(CHUNK):
            window = tail + chunk
            for needle, label in self.table:
                if needle.data in window:
                    found[(needle.kind, label)] = None
            if PRIVATE_KEY in window:
                for match in ANY_PRIVATE_KEY.finditer(window):
                    if not any(
                        needle.data in window[match.start() : match.start() + 4096]
                        for needle, _ in self.table
                    ):
                        found[(OTHER_KEY, "not one of this build's keys")] = None
            tail = window[-overlap:]
        return list(found)


def walk(roots: Iterable[Path]) -> Iterator[tuple[str, str, int]]:
    """(path, name, size) of every regular file under the roots; symbolic links are not followed.
    os.scandir's entries know their type: one stat per file, none per directory."""
    for root in roots:
        if root.is_symlink() or not root.exists():
            continue
        if root.is_file():
            yield str(root), root.name, root.stat().st_size
            continue
        pending = [str(root)]
        while pending:
            try:
                entries = list(os.scandir(pending.pop()))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.name, entry.stat(follow_symlinks=False).st_size


# Never archives: the file types a slug is made of, not sniffed for archive headers.
PLAIN = frozenset(
    [
        ".py",
        ".pyc",
        ".pyi",
        ".pyd",
        ".so",
        ".h",
        ".c",
        ".cpp",
        ".txt",
        ".md",
        ".rst",
        ".json",
        ".html",
        ".htm",
        ".css",
        ".js",
        ".map",
        ".ts",
        ".svg",
        ".png",
        ".jpg",
        ".gif",
        ".ico",
        ".cfg",
        ".ini",
        ".toml",
        ".yaml",
        ".yml",
        ".typed",
        ".mo",
        ".po",
        ".csv",
        ".xml",
        ".pxd",
        ".pyx",
        ".sh",
        ".pem",
    ]
)


def scan(
    roots: Sequence[Path], keys: Sequence[Key], tokens: Mapping[str, bytes] | None = None
) -> Report:
    """Every copy of the keys and tokens under roots, in files and inside archives."""
    searcher = Searcher.of(keys, tokens)
    grep = shutil.which("grep")
    hits: list[Hit] = []
    unreadable: list[str] = []
    engine = _Files(grep, searcher) if grep is not None else None
    archives = _Archives(grep, searcher, unreadable)
    files = size = 0
    for path, name, length in walk(roots):
        files += 1
        size += length
        if engine is not None:
            engine.add(path, length)
        sniff = os.path.splitext(name)[1].lower() not in PLAIN
        try:
            if grep is None or sniff:
                with open(path, "rb") as stream:
                    if grep is None:
                        hits += [Hit(path, kind, label) for kind, label in searcher.search(stream)]
                        stream.seek(0)
                    if sniff and _archive_kind(stream.read(512)):
                        archives.add(path)
            if name in CREDENTIAL_FILES or (
                name == "config" and os.path.basename(os.path.dirname(path)) == ".git"
            ):
                with open(path, "rb") as stream:
                    hits += _url_hits(path, stream.read())
        except OSError:
            unreadable.append(path)
    hits += archives.finish()
    for flagged in engine.finish() if engine is not None else []:
        try:
            with open(flagged, "rb") as stream:
                hits += [
                    Hit(os.fsdecode(flagged), kind, label)
                    for kind, label in searcher.search(stream)
                ]
        except OSError:
            unreadable.append(os.fsdecode(flagged))
    return Report(tuple(dict.fromkeys(hits)), files, size, tuple(unreadable))


# ----------------------------------------------------------------------------- grep, in parallel


class _Files:
    """Files found by the walk, searched by `grep -lZF -a -f -` in batches of about BATCH bytes,
    as many processes at once as there are CPUs (up to 4), each next batch going to whichever
    finishes first: one big directory never leaves a CPU idle, and grep starts on the first batch
    while the walk goes on. The needles on each grep's stdin; the arguments are only file paths."""

    BATCH = 8_000_000
    ARGV = 100_000  # bytes of paths per grep: well under the kernel's 128 KiB per argument list

    def __init__(self, grep: str, searcher: Searcher) -> None:
        from deploykey import run

        # -a: binary files as text; -D skip: no devices, fifos; LC_ALL=C: bytes; -s: a file that
        # vanished or cannot be read is not an error here (the walk reports unreadable files).
        self.argv = [grep, "-l", "-Z", "-F", "-a", "-D", "skip", "-s", "-f", "-", "--"]
        self.env = run.child_env({"LC_ALL": "C"})
        self.patterns = searcher.patterns()
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
        self.running: list[Future[bytes]] = []
        self.batch: list[str] = []
        self.bytes = self.chars = 0

    def add(self, path: str, size: int) -> None:
        self.batch.append(path)
        self.bytes += size
        self.chars += len(path) + 1
        if self.bytes >= self.BATCH or self.chars >= self.ARGV:
            self._submit()

    def _submit(self) -> None:
        if self.batch:
            self.running.append(self.pool.submit(self._grep, self.batch))
        self.batch, self.bytes, self.chars = [], 0, 0

    def _grep(self, paths: list[str]) -> bytes:
        from deploykey import run

        status, out = run.start(self.argv + paths, env=self.env, stdin=self.patterns).result()
        if status not in (0, 1, 2):  # 2: some file could not be read, the others were searched
            raise RuntimeError(f"grep failed with status {status}")
        return out

    def finish(self) -> list[bytes]:
        """The paths of the files that hold a needle."""
        self._submit()
        try:
            return [name for done in self.running for name in done.result().split(b"\0") if name]
        finally:
            self.pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------------------ archives, URL credentials


def _archive_kind(head: bytes) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


SEPARATOR = b"\n\0\n"  # between members fed to grep: no needle holds \n or \0, none spans two


def _unpacked(path: str, unreadable: list[str]) -> Iterator[tuple[str, bytes]]:
    """(FILE!MEMBER, bytes) for every member of an archive, nested archives opened too (depth
    ARCHIVE_DEPTH), at most ARCHIVE_BUDGET bytes unpacked; what could not be read is noted."""
    budget = [ARCHIVE_BUDGET]

    def members(where: str, stream: IO[bytes], depth: int) -> Iterator[tuple[str, bytes]]:
        for name, member in _members(stream):
            data = member.read(budget[0] + 1)
            budget[0] -= len(data)
            if budget[0] < 0:
                unreadable.append(f"{where} (not read past {ARCHIVE_BUDGET >> 20} MiB unpacked)")
                return
            label = f"{where}!{name}"
            yield label, data
            if depth < ARCHIVE_DEPTH and _archive_kind(data[:512]):
                yield from members(label, io.BytesIO(data), depth + 1)

    try:
        with open(path, "rb") as stream:
            yield from members(path, stream, 1)
    except (
        OSError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        tarfile.TarError,
        lzma.LZMAError,
        zlib.error,
    ) as exc:
        unreadable.append(f"{path} ({exc})")


class _Archives:
    """Archives found by the walk, unpacked while the walk goes on: streamed into one `grep -F -b
    -o` process (its patterns through an inherited pipe, /dev/fd/N: never an argument, never a
    file), each match's offset mapped back to its member; or, without grep, searched in Python."""

    def __init__(self, grep: str | None, searcher: Searcher, unreadable: list[str]) -> None:
        self.grep, self.searcher, self.unreadable = grep, searcher, unreadable
        self.queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.starts: list[int] = []
        self.labels: list[str] = []
        self.contents: dict[str, bytes] = {}  # members to examine in Python: rare
        self.engine: object = None
        self.read_end = -1

    def add(self, path: str) -> None:
        if self.grep is not None and self.engine is None:
            self._start()
        self.queue.put(path)

    def _start(self) -> None:
        from deploykey import run

        assert self.grep is not None
        self.read_end, write_end = os.pipe()
        os.write(write_end, self.searcher.patterns())
        os.close(write_end)
        argv = [self.grep, "-F", "-a", "-b", "-o", "-f", f"/dev/fd/{self.read_end}"]
        env = run.child_env({"LC_ALL": "C"})
        self.engine = run.start(
            argv, env=env, stdin=self._feed(), pass_fds=frozenset({self.read_end})
        )

    def _members(self) -> Iterator[tuple[str, bytes]]:
        for path in iter(self.queue.get, None):
            yield from _unpacked(path, self.unreadable)

    def _feed(self) -> Iterator[bytes]:
        offset = 0
        for label, data in self._members():
            self.starts.append(offset)
            self.labels.append(label)
            if os.path.basename(label) in CREDENTIAL_FILES or PRIVATE_KEY in data:
                self.contents[label] = data
            yield data
            yield SEPARATOR
            offset += len(data) + len(SEPARATOR)

    def finish(self) -> list[Hit]:
        from deploykey.run import Background

        self.queue.put(None)
        hits: list[Hit] = []
        if self.grep is None:
            for label, data in self._members():
                hits += [
                    Hit(label, kind, found)
                    for kind, found in self.searcher.search(io.BytesIO(data))
                ]
                hits += (
                    _url_hits(label, data) if os.path.basename(label) in CREDENTIAL_FILES else []
                )
            return hits
        if self.engine is None:
            return hits
        assert isinstance(self.engine, Background)
        try:
            status, out = self.engine.result()
        finally:
            os.close(self.read_end)
        if status not in (0, 1):
            raise RuntimeError(f"grep failed with status {status}")
        kinds = {needle.data: (needle.kind, label) for needle, label in self.searcher.table}
        for line in out.splitlines():
            offset, _, matched = line.partition(b":")
            label = self.labels[bisect.bisect_right(self.starts, int(offset)) - 1]
            if matched in kinds:
                hits.append(Hit(label, *kinds[matched]))
        for label, data in self.contents.items():
            found = self.searcher.search(io.BytesIO(data))
            hits += [Hit(label, kind, what) for kind, what in found if kind == OTHER_KEY]
            hits += _url_hits(label, data) if os.path.basename(label) in CREDENTIAL_FILES else []
        return hits


def _members(stream: IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    kind = _archive_kind(stream.read(512))
    stream.seek(0)
    if kind == "zip":
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as member:
                        yield info.filename, member
    elif kind == "tar":
        yield from _tar_members(stream)
    elif kind in ("gzip", "bzip2", "xz"):
        head, decompressed = _decompressed(kind, stream)
        if len(head) >= 262 and head[257:262] == b"ustar":
            yield from _tar_members(decompressed)
        else:
            yield "(decompressed)", decompressed


def _decompressed(kind: str, stream: IO[bytes]) -> tuple[bytes, IO[bytes]]:
    """The first 512 bytes of a gzip, bzip2 or xz stream's content, and the content as a stream."""
    if kind == "gzip" and _size(stream) <= ONE_SHOT:
        data = _gunzip(stream.read(), ARCHIVE_BUDGET + 1)
        return data[:512], io.BytesIO(data)
    opened: gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile
    if kind == "gzip":
        opened = gzip.GzipFile(fileobj=stream)
    elif kind == "bzip2":
        opened = bz2.BZ2File(stream)
    else:
        opened = lzma.LZMAFile(stream)  # noqa: SIM115 - closed with the stream
    return opened.peek(512)[:512], cast(IO[bytes], opened)


ONE_SHOT = 16 << 20  # a .gz up to this size is inflated in one call, not streamed


def _size(stream: IO[bytes]) -> int:
    return stream.seek(0, io.SEEK_END) - stream.seek(0)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member in data, one after another as `gzip -d` does, at most `limit` bytes.
    One zlib call per member: a slug holds hundreds of small .json.gz files, and GzipFile's stream
    costs twice the inflating itself on those. A truncated stream is an error, as with GzipFile."""
    parts: list[bytes] = []
    size = 0
    while data.startswith(b"\x1f\x8b") and size < limit:
        inflater = zlib.decompressobj(wbits=31)
        part = inflater.decompress(data, limit - size)
        parts.append(part)
        size += len(part)
        if not inflater.eof:
            if inflater.unconsumed_tail:
                break  # the limit: the caller notes what was not read
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = inflater.unused_data
    return b"".join(parts)


def _tar_members(stream: IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for entry in archive:
            if entry.isfile():
                member = archive.extractfile(entry)
                if member is not None:
                    yield entry.name, member


def _url_hits(where: str, data: bytes) -> list[Hit]:
    """`scheme://user:secret@host` in a git config, .git-credentials or direct_url.json; named
    with the secret masked."""
    hits = []
    for match in URL_CREDENTIALS.finditer(data):
        user, secret, host = (part.decode("utf-8", "replace") for part in match.groups())
        if secret.startswith(("$", "%")):  # a placeholder, not a secret
            continue
        hits.append(Hit(where, URL, f"{user}:****@{host}"))
    return hits
