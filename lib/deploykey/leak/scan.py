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
- the key as given: where the platform handed over base64 of the key file (or of that), the
  characters of that value which encode the secret, as they are and in hex, base32, base85 and
  base64 (build code may ship the value it read without decoding it; keys.Key.given);
- tokens: as they are, and as base64 at each alignment.
It also reports any other private key (a PEM block with a body) and credentials in URLs of git
configs, `.git-credentials` and pip's `direct_url.json`.

Speed (a slug is up to 500 MB in tens of thousands of files): one walk lists the files (no stat),
then this process and a forked copy of it per other CPU read them in small batches, each batch
going to whichever process is free. Each file is read once: searched (see Searcher), sniffed for
zip/wheel, tar and gzip/bzip2/xz archives (whose members, nested ones too, are unpacked in memory
and searched the same way) and, for git configs and `direct_url.json`, checked for URL credentials.
Hits name the file (and archive member), the kind of copy and the key's fingerprint, never bytes.

Incremental (see Record): after a scan, the files it read and found clean are recorded with their
stat (device, inode, size, mtime, ctime), sealed with an HMAC keyed from the build's secrets; the
next scan under the same keys reads only the files whose stat does not match (new, changed,
replaced), and the whole tree when the record does not verify. The other names of a file read
(hard links) are compared with the stat it was read with, in the process that read it. Archives
unpacked in full and found clean are recorded by the sha256 of their bytes: a new file with those
bytes (botocore's data, linked afresh into each new environment) is read and searched, its
members not unpacked again.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import functools
import gzip
import hashlib
import hmac
import io
import itertools
import lzma
import os
import re
import signal
import stat
import struct
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from deploykey.secrets.keys import Key

if TYPE_CHECKING:
    from ahocorasick_rs import BytesAhoCorasick

WINDOW = 12  # secret bytes per needle: 16 base64 characters
CHUNK = 1 << 22
TEXT_WINDOWS = 4
B64_WINDOWS = 2  # consecutive: base64 wrapped at 64 or 76 columns splits at most one of them
ARCHIVE_DEPTH = 5  # deeper is reported as not unpacked (scan::incomplete), not passed
ZSTD = b"\x28\xb5\x2f\xfd"
# A bzip2 stream starts with its first block mark, or the end mark when it is empty.
BZ2_BLOCK, BZ2_END = b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90"
ARCHIVE_BUDGET = 1 << 30  # bytes decompressed from one archive at most (zip bombs)
PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\n(.*?)\n-----END \1-----", re.S)
ANY_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:\\r|\\n|\r|\n)+(?:[A-Za-z-]+: [^\r\n]*(?:\r?\n))*"
    rb"(?:\\r|\\n|\r|\n)?[A-Za-z0-9+/=]{40,}"
)
# A scheme starts where no scheme character precedes it: without the look-behind, a long run of
# letters costs a try at each of its characters (quadratic).
URL_CREDENTIALS = re.compile(
    rb"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://([^\s/@:\"']+):([^\s/@\"']+)@([^\s/\"']+)"
)
CREDENTIAL_FILES = ("direct_url.json", ".git-credentials")
PRIVATE_KEY = b"PRIVATE KEY-----"
NO_RECORD = "none"  # what became of the last scan's record (Report.previous): there was none,
VERIFIED = "verified"  # or it verified; otherwise why it was ignored:
OTHER_KEYS = "was made under other keys"  # a rotated key, say

TEXT = "private key text"
TEXT_UTF16 = "private key text (UTF-16)"
BASE64 = "base64 of the private key"
BASE64_NESTED = "base64 of base64 of the private key"
HEX = "hex of the private key"
BASE32 = "base32 of the private key"
BASE85 = "base85 of the private key"
GIVEN = "the key as given"  # the value the platform handed over, as it was (see Key.given)
GIVEN_BASE64 = "base64 of the key as given"
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
    size: int  # bytes read, archives counted as they are on disk
    # "PATH (why)" of each file or directory that could not be read: not searched at all, so the
    # scan cannot call the tree clean (build.leak_check fails on them).
    unreadable: tuple[str, ...]
    engine: str  # what searched: FAST_SEARCH or PYTHON_SEARCH
    processes: int  # how many processes shared the files
    # "PATH (why)" of each archive whose members could not all be unpacked (corrupt, truncated,
    # past ARCHIVE_BUDGET): its bytes were searched as they are on disk, its members not all.
    unpacked: tuple[str, ...] = ()
    # Files not read: unchanged since a scan that read them, as the verified record says.
    skipped: int = 0
    previous: str = NO_RECORD  # what became of the last scan's record (see Record)
    # Files not read: other names (hard links) of a file read in this scan and found clean, with
    # the very stat it had when read.
    linked: int = 0


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
    # The same secret bytes in another container (PKCS#8, PEM, OpenSSH with another comment):
    # base64 of the secret run at each of its three alignments, two adjacent windows (one line
    # break, at any wrapping of 32 columns or more, splits at most one of them). Few needles: each
    # 64 of them cost the fast search one more pass (Searcher._automata).
    secret = blob[start:end]
    for shift in range(3):
        encoded = base64.b64encode(secret[shift : shift + (end - start - shift) // 3 * 3])
        middle = max((len(encoded) - 32) // 2, 0)
        found += [
            Needle(TEXT, encoded[o : o + 16])
            for o in (middle, middle + 16)
            if o + 16 <= len(encoded)
        ]
    line, lo, hi = max(spans, key=lambda span: span[2] - span[1])
    # The key file dumped or encoded whole (a debug dump in hex, `base32 key`, base85/ascii85):
    # a stretch of its secret text, at each alignment of the encoding's groups.
    at = key.material.find(line) + lo
    found += _encodings(key.material[at : at + hi - lo], ENCODINGS)
    for shift in range(3):
        found += [Needle(BASE64, w) for w in _encoded_windows(line[lo + shift : hi])]
    found += _given_needles(key.given, body[first:last])
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


def _hex(data: bytes) -> bytes:
    return data.hex().encode()


# (kind, encode, bytes per group, bytes of secret text to encode): enough for two windows.
ENCODINGS = (
    (HEX, _hex, 1, 16),
    (HEX, lambda data: _hex(data).upper(), 1, 16),
    (BASE32, base64.b32encode, 5, 20),
    (BASE85, base64.b85encode, 4, 28),
)
GIVEN_ENCODINGS = tuple(
    (kind.replace("the private key", "the key as given"), encode, group, length)
    for kind, encode, group, length in ENCODINGS
)
# Characters of a base64 form: what else a form holds (quotes, line breaks, a byte order mark)
# is dropped before it is decoded, and the secret's place mapped back to the form as given.
BASE64_CHARACTER = re.compile(rb"[A-Za-z0-9+/_-]")


def _encodings(
    region: bytes, encodings: Sequence[tuple[str, Callable[[bytes], bytes], int, int]]
) -> list[Needle]:
    """Two windows of each encoding of `region` (secret text), at each alignment of its groups:
    a debug dump in hex, `base32 FILE`, base85/ascii85 of a file holding that text."""
    found = []
    for kind, encode, group, length in encodings:
        for shift in range(group):
            encoded = encode(region[shift : min(shift + length, len(region))])
            found += [Needle(kind, encoded[o : o + 16]) for o in (0, 16) if o + 16 <= len(encoded)]
    return found


def _given_needles(given: Sequence[bytes], secret: bytes) -> list[Needle]:
    """Needles for the key as the platform gave it (keys.Key.given), innermost form first;
    `secret` is the key file's base64 characters that encode its secret bytes alone.

    A form that is the key file's text with other line ends, quotes or escapes holds the same
    characters as the key file inside each line: the key's own needles find it and its encodings.
    A form that is base64 of the next one in (DEPLOY_KEY given as base64, the README's offer)
    holds other characters: the run of them that encodes the secret alone, found by decoding the
    form, is searched for as it is, as base64 (the form encoded again) and in hex, base32 and
    base85 (ENCODINGS); the next form out is then read the same way."""
    found: list[Needle] = []
    for form in reversed(given):
        region = _secret_region(form, secret)
        if region is None:  # the key file's text, as given
            continue
        runs = [run for run in re.split(rb"[^A-Za-z0-9+/_-]+", region) if run]
        run = max(runs, key=len)  # within one line: a copy wrapped otherwise still holds it
        if len(run) >= 24:
            found.append(Needle(GIVEN, run[len(run) // 2 - 8 :][:16]))
            found += _encodings(run, GIVEN_ENCODINGS)
            for shift in range(3):
                found += [Needle(GIVEN_BASE64, w) for w in _encoded_windows(run[shift:])]
        secret = b"".join(runs)
    return found


def _secret_region(form: bytes, secret: bytes) -> bytes | None:
    """The stretch of `form` (line breaks included) whose characters encode `secret`'s alone,
    when `form` is base64 of a text that holds `secret`'s characters (between line breaks)."""
    places = [match.start() for match in BASE64_CHARACTER.finditer(form)]
    compact = bytes(form[place] for place in places)
    alphabet = b"-_" if b"-" in compact or b"_" in compact else b"+/"
    try:
        decoded = base64.b64decode(compact + b"=" * (-len(compact) % 4), altchars=alphabet)
    except ValueError:
        return None
    inner = [match.start() for match in BASE64_CHARACTER.finditer(decoded)]
    at = bytes(decoded[place] for place in inner).find(secret)
    if at < 0:
        return None
    start, end = inner[at], inner[at + len(secret) - 1] + 1
    first, last = -(-start // 3) * 4, end // 3 * 4
    if last - first < 16:
        return None
    return form[places[first] : places[last - 1] + 1]


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
    # Not the key type (the same in every key) nor the comment (the last string: text anyone may
    # write, also in the .pub file; a long one was taken for the secret and failed its own .pub).
    return values[1:-1]


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


FAST_SEARCH = "ahocorasick-rs"
AUTOMATON_PATTERNS = 64  # the most ahocorasick-rs's SIMD prefilter takes (see Searcher._automata)
PYTHON_SEARCH = "Python"  # where ahocorasick-rs is not installed


@dataclass(frozen=True)
class Searcher:
    """The needles of some keys and tokens, and a search over any sequence of chunks of bytes.

    Every chunk is first asked one question, fast: does any needle, or the mark of a private key,
    occur in it? With ahocorasick-rs (Aho-Corasick automata whose SIMD prefilter searches up to 64
    short needles each at several GB/s on one CPU; GNU grep -F manages about 1 GB/s with the
    same needles) or, where it is not installed, with one `in` per needle (about 0.2 GB/s). Only
    a chunk that answers yes is examined needle by needle, to say which kinds of copy it holds.
    """

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

    @functools.cached_property
    def patterns(self) -> tuple[bytes, ...]:
        """Every needle, and the mark of any private key: what the fast question looks for."""
        return tuple(dict.fromkeys([needle.data for needle, _ in self.table] + [PRIVATE_KEY]))

    @functools.cached_property
    def engine(self) -> str:
        """What answers the fast question."""
        return PYTHON_SEARCH if self._automata is None else FAST_SEARCH

    @functools.cached_property
    def _automata(self) -> tuple[BytesAhoCorasick, ...] | None:
        """One automaton per AUTOMATON_PATTERNS patterns: the SIMD prefilter (Teddy) takes at most
        64; past that an automaton searches without it, about 15 times slower (0.5 GB/s measured
        here with 65 needles, 7 GB/s with 64), so several small ones answer faster than one."""
        try:
            import ahocorasick_rs
        except ImportError:
            return None
        # Leftmost-first: its prefilter runs only with a leftmost match kind; any occurrence of a
        # pattern yields at least one match, which is all the question asks.
        patterns = list(self.patterns)
        return tuple(
            ahocorasick_rs.BytesAhoCorasick(
                patterns[start : start + AUTOMATON_PATTERNS],
                matchkind=ahocorasick_rs.MatchKind.LeftmostFirst,
            )
            for start in range(0, len(patterns), AUTOMATON_PATTERNS)
        )

    def holds_any(self, data: bytes) -> bool:
        if self._automata is not None:
            return any(automaton.find_matches_as_indexes(data) for automaton in self._automata)
        return any(pattern in data for pattern in self.patterns)

    @functools.cached_property
    def _overlap(self) -> int:
        """How much of a chunk's end is searched again with the next: a needle, and the start of
        a PEM block up to its body (for the other-private-key check)."""
        return max([len(needle.data) for needle, _ in self.table] + [256]) - 1

    def search(self, chunks: Iterable[bytes]) -> list[tuple[str, str]]:
        """(kind of copy, label) for every secret found in the chunks, read as one stream: each
        chunk is searched together with the end of the one before, so no copy is split. The fast
        question is asked of the chunk and of the seam (the end before and as much of the chunk:
        a needle across it lies in it), not of a copy of both joined."""
        found: dict[tuple[str, str], None] = {}
        overlap = self._overlap
        tail = b""
        for chunk in chunks:
            if self.holds_any(chunk) or (tail and self.holds_any(tail + chunk[:overlap])):
                self._examine(tail + chunk, found)
            tail = chunk[-overlap:] if len(chunk) >= overlap else (tail + chunk)[-overlap:]
        return list(found)

    def _examine(self, window: bytes, found: dict[tuple[str, str], None]) -> None:
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


def chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def walk(roots: Iterable[Path], unreadable: list[str]) -> list[tuple[str, str]]:
    """(path, name) of every regular file under the roots; symbolic links are not followed, and a
    directory that cannot be listed is noted with why (one removed since it was seen is gone: it
    holds nothing). os.scandir's entries know their type: no stat."""
    return [(path, name) for path, name, _ in _listing(roots, unreadable)]


def _listing(roots: Iterable[Path], unreadable: list[str]) -> list[tuple[str, str, int]]:
    """walk's files, each with the inode number its directory lists it with (d_ino: no stat)."""
    found = []
    for root in roots:
        try:
            if root.is_symlink() or not root.exists():
                continue
            if root.is_file():
                found.append((str(root), root.name, os.lstat(root).st_ino))
                continue
        except OSError as exc:  # a parent this user cannot enter
            unreadable.append(f"{root} ({exc.strerror or exc})")
            continue
        pending = [str(root)]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            found.append((entry.path, entry.name, entry.inode()))
            except FileNotFoundError:
                continue
            except OSError as exc:
                unreadable.append(f"{directory} ({exc.strerror or exc})")
    return found


Group = tuple[int, list[tuple[str, str]]]  # an inode number as listed, and its names


def _by_inode(files: Iterable[tuple[str, str, int]]) -> list[Group]:
    """The files, the names listed with one inode number together (hard links: uv links its
    cache's files into the environment), in the order their first names were listed: one process
    then sees every name of a file (see _search_batch). Only a hint: names of one file listed
    apart (a filesystem whose directories list other numbers than its stat gives) are each read,
    and files of two filesystems with one number are told apart by their stat."""
    groups: dict[int, list[tuple[str, str]]] = {}
    for path, name, inode in files:
        group = groups.get(inode)
        if group is None:
            groups[inode] = [(path, name)]
        else:
            group.append((path, name))
    return list(groups.items())


def scan(
    roots: Sequence[Path],
    keys: Sequence[Key],
    tokens: Mapping[str, bytes] | None = None,
    record: Record | None = None,
) -> Report:
    """Every copy of the keys and tokens under roots, in files and inside archives. With a
    record: files the last scan's verified record shows unchanged are not read again, nor
    archives unpacked again whose bytes it shows unpacked and clean, and what this scan read and
    found clean is recorded for the next."""
    began = time.time_ns()  # before any file is looked at: see RACY_NS
    searcher = Searcher.of(keys, tokens)
    unreadable: list[str] = []
    groups = _by_inode(_listing(roots, unreadable))
    previous, recorded = record.load() if record is not None else (NO_RECORD, frozenset())
    inodes = frozenset(
        int(line.split(" ", 2)[1]) for line in recorded if not line.startswith(ARCHIVE)
    )
    # A file changed within RACY_NS before the scan began could change again unseen: not recorded.
    work = _Work(searcher, began - RACY_NS, *((recorded, inodes) if record is not None else ()))
    names = sum(len(group) for _, group in groups)
    found = _in_every_process(_batched(groups, max(BATCH, -(-names // MAX_BATCHES))), work)
    if record is not None:
        record.save(found.unchanged + found.clean + list(dict.fromkeys(found.archives)))
    return Report(
        tuple(dict.fromkeys(found.hits)),
        found.read,
        found.size,
        tuple(unreadable + found.unreadable),
        searcher.engine,
        found.processes,
        tuple(found.unpacked),
        len(found.unchanged),
        previous,
        found.linked,
    )


def _batched(groups: Sequence[Group], size: int) -> list[list[Group]]:
    """The groups, in units of work of at least `size` names (a group is never split)."""
    batches: list[list[Group]] = []
    batch: list[Group] = []
    count = 0
    for group in groups:
        batch.append(group)
        count += len(group[1])
        if count >= size:
            batches.append(batch)
            batch, count = [], 0
    if batch:
        batches.append(batch)
    return batches


# --------------------------------------------------------------- the record of the last scan


RECORD_FORMAT = b"deploykey-scan-record/2"
RECORD_MAX = 256 << 20  # bytes: a record is about 150 bytes a file
# Entries are "DEV INO SIZE MTIME_NS CTIME_NS PATH" (a file), or ARCHIVE and the sha256 of an
# archive's bytes, separated by NUL (which no path holds): the scan looks each up in a set,
# without parsing the record.
SEPARATOR = "\0"
ARCHIVE = "sha256:"  # no file's entry starts so: they start with the device number
# Files whose ctime is this close to the scan's start are read again next time, not recorded: a
# timestamp has the granularity of the kernel's coarse clock (a jiffy, up to 10 ms) or of the
# filesystem (1 s on ext4 with 128-byte inodes, 2 s on FAT), so a change made just after the read,
# within the same tick as the change before it, could leave every field of the stat as it was
# (git's "racy clean" problem, Documentation/technical/racy-git.txt).
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class Record:
    """Where the last scan's record lives and the key that seals it (derived from the build's
    secrets, see build.scan_record), with the key's public name.

    What a record trusts, and why build code cannot forge it:
    - the HMAC: build code never had the build's secrets, so it can neither write a record that
      verifies nor edit one (any change, a record made under other keys, by another version of
      this file or of Python, is ignored: every file is read);
    - ctime: the kernel sets a file's ctime to the current time on any change of its content or
      inode (write, truncate, chmod, rename, link, even utime(), which sets mtime to any value
      but ctime to now: inode(7), "Last status change timestamp"). No call sets it back; only
      setting the system clock back would (CAP_SYS_TIME: Docker, Podman and CNB builds drop it,
      Heroku's dynos never had it; root on the host can, and can read any process's memory
      too) or writing the block device (CAP_SYS_RAWIO). So a file whose (device, inode,
      size, mtime, ctime) are as recorded has not changed since the scan that read it and found
      it clean under the same keys. A token minted in this build (a GitHub App's) cannot be in a
      file unchanged since before it was minted. Where the cache is unpacked afresh every build
      (Heroku restores CACHE_DIR from an archive) every inode and ctime is new: every file is
      read, as without a record;
    - sha256, for archives: an archive's members are a function of its bytes (and of this file
      and the Python that unpacks them, both in the MAC), so a file whose bytes, read and hashed
      now, are those of an archive a scan under the same keys unpacked in full and found clean
      holds no member it did not search. Build code would need a second preimage of SHA-256 to
      pass other members off as those. A token minted in this build cannot be in bytes that
      were there before it was minted.
    """

    path: Path
    key: bytes = field(repr=False)
    ident: str  # public: says "another key" rather than "does not verify"

    def _mac(self, body: bytes) -> bytes:
        mac = hmac.new(self.key, RECORD_FORMAT + b"\n" + _code_digest(), hashlib.sha256)
        mac.update(body)
        return mac.hexdigest().encode()

    def load(self) -> tuple[str, frozenset[str]]:
        """(what became of it, its entries): none unless the record verifies."""
        try:
            fd = os.open(self.path, OPEN_FLAGS)
        except FileNotFoundError:
            return NO_RECORD, frozenset()
        except OSError as exc:
            return f"could not be read ({exc.strerror or exc})", frozenset()
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > RECORD_MAX:
                return "is not a record", frozenset()
            data = b"".join(iter(functools.partial(os.read, fd, CHUNK), b""))
        except OSError as exc:
            return f"could not be read ({exc.strerror or exc})", frozenset()
        finally:
            os.close(fd)
        head, _, body = data.partition(b"\n")
        parts = head.split(b" ")
        if len(parts) != 3 or parts[0] != RECORD_FORMAT:
            return "is not a record of this format", frozenset()
        if parts[1] != self.ident.encode():
            return OTHER_KEYS, frozenset()
        if not hmac.compare_digest(parts[2], self._mac(body)):
            return "does not verify (changed since it was written)", frozenset()
        return VERIFIED, frozenset(os.fsdecode(body).split(SEPARATOR)) - {""}

    def save(self, entries: Iterable[str]) -> None:
        """Replaces the record at once (rename(2) is atomic: a reader sees the old or the new,
        never half). A record that cannot be written is no failure: the next scan reads all."""
        body = os.fsencode(SEPARATOR.join(entries))
        head = b" ".join([RECORD_FORMAT, self.ident.encode(), self._mac(body)])
        try:
            fd, temporary = tempfile.mkstemp(prefix=".scan-record-", dir=self.path.parent)
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(head + b"\n" + body)
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


@functools.cache
def _code_digest() -> bytes:
    """This file's source and the Python running it: what counts as clean (the needles, the
    archives opened) is defined here and unpacked by that Python's zipfile, tarfile and
    decompressors (3.14 unpacks zstd), so a record made by another version of either does not
    verify."""
    from importlib import resources

    try:  # from the package: a file, or a member of the zipapp (deploykey.pyz: hooks, CNB scan)
        source = resources.files(__package__ or "deploykey.leak").joinpath("scan.py").read_bytes()
        return hashlib.sha256(source + b"\0" + sys.version.encode()).hexdigest().encode()
    except OSError:
        return os.urandom(16).hex().encode()  # unknown: no record verifies


def entry(path: str, info: os.stat_result) -> str:
    """A file's entry in the record: its path and every field of its stat that a change moves."""
    return _stats(info) + path


def _stats(info: os.stat_result) -> str:
    """An entry without its path: "DEV INO SIZE MTIME_NS CTIME_NS "."""
    return f"{info.st_dev} {info.st_ino} {info.st_size} {info.st_mtime_ns} {info.st_ctime_ns} "


def _archive_entry(data: bytes) -> str:
    """The record's entry for an archive's bytes: members are a function of the bytes alone."""
    return ARCHIVE + hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------- the files, on every CPU


@dataclass(frozen=True)
class _Work:
    """What each process needs to search a batch: the searcher, the ctime (ns) a file read clean
    must be older than to be recorded (see RACY_NS), the verified record's entries (None: no
    record, every name is read) and the inode numbers they name."""

    searcher: Searcher
    settled: int
    recorded: frozenset[str] | None = None
    inodes: frozenset[int] = frozenset()


@dataclass
class _Found:
    hits: list[Hit] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    # The next record's entries: of each name the record vouched for; of each archive unpacked
    # in full and found clean, or not unpacked again (_archive_entry); of each name read in full
    # and found clean (its stat when opened, before the read) or vouched for as another name of
    # such a file (see _search_name), when settled.
    unchanged: list[str] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)
    size: int = 0
    read: int = 0  # names read (or tried: gone since the walk)
    linked: int = 0  # names not read: other names of a file read here
    processes: int = 1

    def add(self, other: _Found) -> None:
        self.hits += other.hits
        self.unreadable += other.unreadable
        self.unpacked += other.unpacked
        self.unchanged += other.unchanged
        self.archives += other.archives
        self.clean += other.clean
        self.size += other.size
        self.read += other.read
        self.linked += other.linked
        self.processes += other.processes


Batch = Sequence[Group]
BATCH = 32  # names per unit of work: small enough that the processes finish together,
MAX_BATCHES = 8192  # and few enough that their numbers (4 bytes each) fit in one pipe's buffer
PROCESSES = 4  # at most: reading from the page cache stops scaling beyond a few
# Names up to this many are searched in this process alone: a forked copy costs more than it takes
# over (3 MB of .py files, 2 CPUs: 128 names 2.1 ms alone, 5.1 ms with a copy; 256, 6.8 and 12.3;
# 512, 16.0 and 13.8). A warm build's check of a small app and its kept venv is about 130 names.
FORK_FROM = 256


def _in_every_process(batches: Sequence[Batch], work: _Work) -> _Found:
    """Search the batches in this process and (more than FORK_FROM names) in a forked copy of it
    per other CPU, each taking the next batch number from one pipe (reads of 4 bytes from a pipe
    are atomic) until none is left: the work balances itself, whatever the sizes. A copy inherits
    the searcher (the needles
    are never sent anywhere) and the record's entries, sends back what it found through its own
    pipe and exits without running anything of the parent's (no cleanup handlers, no output). A
    copy that fails fails the scan: its batches were not searched."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    names = sum(len(group[1]) for batch in batches for group in batch)
    processes = min(PROCESSES, cpus or 1, len(batches)) if names > FORK_FROM else 1
    if processes <= 1:
        found = _Found()
        for batch in batches:
            _search_batch(batch, work, found)
        return found
    work.searcher.holds_any(b"")  # build the automaton once, before the copies inherit it
    numbers_read, numbers_write = os.pipe()
    numbers = b"".join(struct.pack("=I", n) for n in range(len(batches)))
    os.set_blocking(numbers_write, False)  # a pipe too small fails here, never blocks
    written = os.write(numbers_write, numbers)
    os.close(numbers_write)
    if written != len(numbers):
        os.close(numbers_read)
        raise RuntimeError(f"the pipe took {written} of {len(numbers)} bytes of batch numbers")
    children: dict[int, int] = {}  # pid: the pipe its findings come back through
    try:
        for _ in range(processes - 1):
            try:
                pid, results = _fork(numbers_read, batches, work)
            except OSError:  # no more processes (a container's pid limit): fewer share the work
                break
            children[pid] = results
        found = _batches_from(numbers_read, batches, work)
        for pid in list(children):
            found.add(_collect(pid, children.pop(pid)))
        return found
    finally:
        os.close(numbers_read)
        for pid, results in children.items():  # interrupted, or one failed: stop the others
            os.close(results)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _fork(numbers: int, batches: Sequence[Batch], work: _Work) -> tuple[int, int]:
    # Imported before the fork, once: each copy inherits it to send its results, and the parent
    # has it to read them (_collect). A scan of few files forks no copy, and imports nothing.
    import pickle  # noqa: F401, S403 - only between this process and its own forked copies

    results_read, results_write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(results_read)
        os.close(results_write)
        raise
    if pid != 0:
        os.close(results_write)
        return pid, results_read
    status = 1
    try:  # the copy: the parent's signal handlers (the build's scrub) are not its to run
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        os.close(results_read)
        found = _batches_from(numbers, batches, work)
        import pickle  # noqa: S403 - loaded before the fork: a lookup in sys.modules

        with os.fdopen(results_write, "wb") as stream:
            pickle.dump(found, stream)
        status = 0
    finally:
        os._exit(status)


def _collect(pid: int, results: int) -> _Found:
    """What a copy found. It failed (its batches unsearched) unless it sent that and exited 0."""
    with os.fdopen(results, "rb") as stream:
        sent = stream.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not sent:
        raise RuntimeError(f"a scan process failed (wait status {status})")
    import pickle  # noqa: S403 - loaded by _fork

    return cast(_Found, pickle.loads(sent))  # noqa: S301 - from our own fork


def _batches_from(numbers: int, batches: Sequence[Batch], work: _Work) -> _Found:
    found = _Found()
    while len(number := os.read(numbers, 4)) == 4:
        _search_batch(batches[struct.unpack("=I", number)[0]], work, found)
    return found


def _search_batch(batch: Batch, work: _Work, found: _Found) -> None:
    """Each group's names in turn. With a record, the first name is looked at (lstat) before it
    is read only if a recorded file has its inode number as listed (else the record cannot
    vouch for it), every other name always: it may be a name of the file read just before."""
    for inode, names in batch:
        read: dict[tuple[int, int], str] = {}  # see _search_name
        look = inode in work.inodes
        for path, name in names:
            _search_name(path, name, work, found, read, look)
            look = work.recorded is not None


def _search_name(
    path: str, name: str, work: _Work, found: _Found, read: dict[tuple[int, int], str], look: bool
) -> None:
    """With a record (and `look`): a name whose stat (device, inode, size, mtime, ctime) is the
    very one recorded is not read (see Record), nor is another name of a file read in this group
    (hard links, `read`: each inode's stat when it was opened to be read, if it was then read in
    full and found clean) whose stat is that one: the same inode, unchanged between the two (any
    change of its content or links moves the ctime both names share), so what was read is what
    this name holds. Any other name is read: its file had a finding (every name is reported),
    could not be read, or changed in between."""
    info = None
    if look and work.recorded is not None:
        try:
            info = os.lstat(path)
        except OSError:  # gone, or not to be looked at: read (and named) as any other
            info = None
        if info is not None and stat.S_ISREG(info.st_mode):
            stats = _stats(info)
            if stats + path in work.recorded:
                found.unchanged.append(stats + path)
                return
            if read.get((info.st_dev, info.st_ino)) == stats:
                found.linked += 1
                if info.st_ctime_ns < work.settled:
                    found.clean.append(stats + path)
                return
    found.read += 1
    try:
        clean = _search_file(path, name, work, found)
    except FileNotFoundError:  # removed since the walk: it holds nothing now
        return
    except OSError as exc:
        found.unreadable.append(f"{path} ({exc.strerror or exc})")
        return
    if clean is not None and clean.st_nlink > 1:
        read.setdefault((clean.st_dev, clean.st_ino), _stats(clean))


# O_NOFOLLOW: a file swapped for a link since the walk is not followed; O_NONBLOCK: nor does a fifo
# swapped in make the scan wait (its read fails: the path is noted as unreadable, failing the scan).
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _search_file(path: str, name: str, work: _Work, found: _Found) -> os.stat_result | None:
    """Read once (in one call when it fits in a chunk: nearly every file does), searched, sniffed
    for an archive, and checked for URL credentials when it is a git config or direct_url.json.
    An archive whose bytes the record shows unpacked in full and found clean before (its
    sha256: the bytes read now) is not unpacked again; its bytes are searched as any file's.
    Returns the file's stat when it was opened if it was read in full and found clean, and
    then records it (when settled)."""
    hits, unpacked = len(found.hits), len(found.unpacked)
    searcher, archive = work.searcher, None
    fd = os.open(path, OPEN_FLAGS)
    try:
        info = os.fstat(fd)  # before the read: a change during it gives another ctime
        size = info.st_size
        found.size += size
        data = os.read(fd, min(size, CHUNK) + 1)  # one byte more: a file that grew is streamed
        streamed = len(data) > CHUNK
        if streamed or searcher.holds_any(data):  # the fast question first: nearly all say no
            rest = iter(functools.partial(os.read, fd, CHUNK), b"") if streamed else ()
            found.hits += [
                Hit(path, kind, label)
                for kind, label in searcher.search(itertools.chain((data,), rest))
            ]
        if archive_kind(data):  # by its bytes, whatever its name (a gzip named .json)
            if not streamed and work.recorded is not None:
                archive = _archive_entry(data)
            if archive is None or archive not in (work.recorded or ()):
                if streamed:
                    os.lseek(fd, 0, os.SEEK_SET)
                with open(fd, "rb", closefd=False) if streamed else io.BytesIO(data) as stream:
                    found.hits += archive_hits(path, stream, searcher, found.unpacked)
    finally:
        os.close(fd)
    if name in CREDENTIAL_FILES or (
        name == "config" and os.path.basename(os.path.dirname(path)) == ".git"
    ):
        found.hits += _url_hits(path, data)
    if len(found.hits) != hits or len(found.unpacked) != unpacked:
        return None
    if archive is not None:
        found.archives.append(archive)
    if info.st_ctime_ns < work.settled:
        found.clean.append(_stats(info) + path)
    return info


# ------------------------------------------------------------------------ archives, URL credentials


def archive_kind(head: bytes) -> str | None:
    """What archive the first bytes of a file announce, whatever its name. Magic numbers in full
    (gzip's deflate method, bzip2's block mark): a text file that happens to start with `BZh`
    is not an archive, and one that could not be unpacked would fail the scan."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (BZ2_BLOCK, BZ2_END):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(ZSTD):
        return "zstd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def archive_hits(
    path: str, stream: IO[bytes], searcher: Searcher, unpacked: list[str]
) -> list[Hit]:
    """The hits in every member of the archive in `stream` (nested ones too), labelled
    PATH!MEMBER; what could not be unpacked is noted in `unpacked`."""
    hits = []
    for label, data in _unpacked(path, stream, unpacked):
        hits += [Hit(label, kind, what) for kind, what in searcher.search((data,))]
        if os.path.basename(label) in CREDENTIAL_FILES:
            hits += _url_hits(label, data)
    return hits


# What opening or reading an archive can raise; the archive (or member) is then noted as not
# unpacked in full, never a crash (encrypted zip members: RuntimeError; deflate64:
# NotImplementedError).
UNPACK_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    tarfile.TarError,
    lzma.LZMAError,
    zlib.error,
)


def _unpacked(path: str, stream: IO[bytes], unpacked: list[str]) -> Iterator[tuple[str, bytes]]:
    """(FILE!MEMBER, bytes) for every member of an archive, nested archives opened too (depth
    ARCHIVE_DEPTH), at most ARCHIVE_BUDGET bytes unpacked. An archive, or a member, not unpacked
    in full is noted in `unpacked` (so is an archive nested deeper), and the rest of its archive
    is still read: a broken member does not hide the ones after it."""
    budget = [ARCHIVE_BUDGET]

    def members(where: str, stream: IO[bytes], depth: int) -> Iterator[tuple[str, bytes]]:
        try:
            for name, read in _members(stream):
                label = f"{where}!{name}"
                try:
                    data = read(budget[0] + 1)
                except UNPACK_ERRORS as exc:
                    unpacked.append(f"{label} ({exc})")
                    continue
                budget[0] -= len(data)
                if budget[0] < 0:
                    unpacked.append(f"{where} (not unpacked past {ARCHIVE_BUDGET >> 20} MiB)")
                    return
                yield label, data
                if not archive_kind(data[:512]):
                    continue
                if depth < ARCHIVE_DEPTH:
                    yield from members(label, io.BytesIO(data), depth + 1)
                else:
                    unpacked.append(f"{label} (an archive nested deeper than {ARCHIVE_DEPTH})")
        except UNPACK_ERRORS as exc:
            unpacked.append(f"{where} ({exc})")

    yield from members(path, stream, 1)


Read = Callable[[int], bytes]


def _members(stream: IO[bytes]) -> Iterator[tuple[str, Read]]:
    """(name, read) for each member; `read(limit)` may raise for that member alone (a zip's
    members are opened one by one, so the next one is still read)."""
    kind = archive_kind(stream.read(512))
    stream.seek(0)
    if kind == "zip":
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, functools.partial(_zip_read, archive, info)
    elif kind == "tar":
        yield from _tar_members(stream)
    elif kind == "zstd":
        yield "(decompressed)", _zstd_reader(stream)
    elif kind in ("gzip", "bzip2", "xz"):
        head, decompressed = _decompressed(kind, stream)
        if len(head) >= 262 and head[257:262] == b"ustar":
            yield from _tar_members(decompressed)
        else:
            yield "(decompressed)", decompressed.read


def _zstd_reader(stream: IO[bytes]) -> Read:
    """Python 3.14's zstd decompressor; before 3.14 there is none in the standard library, and the
    frame is reported as not unpacked (its bytes are still searched)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        raise NotImplementedError("zstd: this Python (before 3.14) cannot decompress it") from None
    return cast(Read, zstd.ZstdFile(stream).read)


def _zip_read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    with archive.open(info) as member:
        return member.read(limit)


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


def _tar_members(stream: IO[bytes]) -> Iterator[tuple[str, Read]]:
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for entry in archive:
            if entry.isfile():
                member = archive.extractfile(entry)
                if member is not None:
                    yield entry.name, member.read


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
