"""The leak check: look for copies of the exact key in a tree, as text, as base64 and as raw bytes.

The scanner knows the key, so it searches for that key's secret part, not for a pattern: the public
half (inside every OpenSSH private key file, and in every .pub file) is not secret and is never a
needle. Needles are short (12 bytes of secret, 16 base64 characters: 96 bits, so no chance
collision) and taken from inside single lines, so a copy with other line ends or escaping, or base64
wrapped at any width, still contains some of them whole:
- text: windows of the key file's base64 body;
- base64: each window of a body line encoded at the three byte alignments, in both alphabets (a
  `cat key | base64` copy, or base64 of any file that holds the key);
- bytes: a window of the decoded secret (a DER or openssh-key-v1 blob written out).
Hits name the file and the kind of copy, never the bytes.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deploykey.keys import Key

WINDOW = 12  # secret bytes per needle
CHUNK = 1 << 22
PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\n(.*?)\n-----END \1-----", re.S)


@dataclass(frozen=True)
class Needle:
    kind: str
    data: bytes


@dataclass(frozen=True)
class Hit:
    path: Path
    kind: str
    label: str  # the key's fingerprint, or the token's config var name


@dataclass(frozen=True)
class Report:
    hits: tuple[Hit, ...]
    files: int
    size: int
    unreadable: tuple[Path, ...]


def needles(key: Key) -> list[Needle]:
    match = PEM.search(key.material)
    if match is None:
        raise ValueError("not a PEM key")
    lines = match.group(2).split(b"\n")
    body = b"".join(lines)
    blob = base64.b64decode(body)
    public = base64.b64decode(key.public.split()[1])
    start, end = _longest_secret_run(blob, public)
    found: list[Needle] = [Needle("private key bytes", blob[start : start + WINDOW])]
    # The base64 characters that encode only secret bytes, split into the key file's lines.
    first, last = -(-start // 3) * 4, (end // 3) * 4
    position = 0
    for line in lines:
        lo, hi = max(first - position, 0), min(last - position, len(line))
        for offset in range(lo, hi - 16 + 1, 16):
            found.append(Needle("private key text", line[offset : offset + 16]))
        for offset in range(lo, hi - WINDOW - 2 + 1, WINDOW + 1):
            for shift in range(3):
                encoded = base64.b64encode(line[offset + shift : offset + shift + WINDOW])
                found.append(Needle("base64 of the private key", encoded))
                found.append(
                    Needle(
                        "base64 of the private key",
                        base64.urlsafe_b64encode(line[offset + shift : offset + shift + WINDOW]),
                    )
                )
        position += len(line)
    unique: dict[bytes, Needle] = {}
    for needle in found:
        unique.setdefault(needle.data, needle)
    return list(unique.values())


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


def walk(roots: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the roots; symbolic links are not followed."""
    for root in roots:
        if root.is_symlink() or not root.exists():
            continue
        if root.is_file():
            yield root
            continue
        for directory, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                path = Path(directory, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def token_needles(value: bytes) -> list[Needle]:
    """A token as it is, and as base64 at each alignment, in both alphabets."""
    found = [Needle("token", value)]
    for shift in range(3):
        chunk = value[shift:]
        chunk = chunk[: len(chunk) // 3 * 3]
        if len(chunk) >= WINDOW:
            for encoded in (base64.b64encode(chunk), base64.urlsafe_b64encode(chunk)):
                found.append(Needle("base64 of the token", encoded))
    return found


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

    def search(self, stream: IO[bytes]) -> list[tuple[str, str]]:
        """(kind of copy, key fingerprint or token name) for every secret found in the stream."""
        if not self.table:
            return []
        overlap = max(len(needle.data) for needle, _ in self.table) - 1
        found: dict[tuple[str, str], None] = {}
        tail = b""
        while chunk := stream.read(CHUNK):
            window = tail + chunk
            for needle, label in self.table:
                if needle.data in window:
                    found[(needle.kind, label)] = None
            tail = window[-overlap:]
        return list(found)


def scan(
    roots: Sequence[Path], keys: Sequence[Key], tokens: Mapping[str, bytes] | None = None
) -> Report:
    """Every copy of the keys (and tokens, by name) in the files under roots."""
    searcher = Searcher.of(keys, tokens)
    hits: list[Hit] = []
    files = size = 0
    unreadable: list[Path] = []
    for path in walk(roots):
        files += 1
        try:
            with path.open("rb") as stream:
                kinds = searcher.search(stream)
            size += path.stat().st_size
        except OSError:
            unreadable.append(path)
            continue
        hits.extend(Hit(path, kind, label) for kind, label in kinds)
    return Report(tuple(hits), files, size, tuple(unreadable))
