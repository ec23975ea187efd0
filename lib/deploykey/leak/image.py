"""Scanning an image archive for the keys: every layer, file by file, and the config.

An image keeps what a Dockerfile's `ARG`/`ENV` held (config env, history `created_by`) and every
file any layer ever wrote, also one deleted by a later layer. So every layer is read, as the tar
stream it is (uncompressed, gzip, bzip2, xz; zstd is named and refused), and every string of the
config (history, env, labels, commands) is searched on its own, so that a hit can say where.
Formats: an OCI image layout in a tar (`buildah push IMAGE oci-archive:FILE`), and `docker save`
tarballs (manifest.json; Docker 25 and later also write the OCI layout inside).
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykey.core.errors import UserError
from deploykey.leak.scan import (
    CHUNK,
    UNPACK_ERRORS,
    ZSTD,
    Searcher,
    archive_hits,
    archive_kind,
    chunks,
)

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
IN_MEMORY = 256 << 20  # an archive in a layer larger than this is searched as bytes only


@dataclass(frozen=True)
class ImageHit:
    layer: str  # a layer digest, or "config"
    path: str  # a file in the layer, or a config field
    kind: str
    label: str  # key fingerprint or token name

    def describe(self) -> str:
        return f"{self.layer}: {self.path} ({self.kind}, {self.label})"


@dataclass(frozen=True)
class ImageReport:
    hits: tuple[ImageHit, ...]
    layers: int
    files: int
    # "LAYER: PATH (why)" of each archive in a layer that could not be unpacked in full.
    unpacked: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Image:
    config: str  # member name in the archive
    layers: tuple[tuple[str, str], ...]  # (digest, member name)


def _named_by_diff_id(image: _Image, config: bytes) -> _Image:
    """A `docker save` manifest lists layers by file (Engine 20.10: a legacy directory id that no
    command shows); the config's rootfs.diff_ids, in the same order, are the digests `docker
    inspect` and `docker history` users see."""
    try:
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    except (ValueError, AttributeError):
        return image
    if len(diff_ids) != len(image.layers) or not all(isinstance(d, str) for d in diff_ids):
        return image
    named = zip(diff_ids, image.layers, strict=True)
    return _Image(image.config, tuple((diff_id, member) for diff_id, (_, member) in named))


# What a damaged or foreign archive raises while its manifests and layers are read: what an
# archive in a file can raise (scan.UNPACK_ERRORS: JSON and text errors are ValueErrors), and a
# manifest of the wrong shape. Each is image::unreadable, never a crash.
DAMAGED = (*UNPACK_ERRORS, KeyError, TypeError, AttributeError, IndexError)


def scan_archive(archive: Path, searcher: Searcher) -> ImageReport:
    try:
        return _scan_archive(archive, searcher)
    except DAMAGED as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UserError("image::unreadable", path=archive, detail=detail) from None


def _scan_archive(archive: Path, searcher: Searcher) -> ImageReport:
    outer = tarfile.open(archive)  # noqa: SIM115 - closed by the `with` below
    with outer:
        names = set(outer.getnames())
        if "index.json" in names:
            images = list(_oci(outer, "index.json", set()))
        elif "manifest.json" in names:
            images = list(_docker(outer))
        else:
            raise UserError(
                "image::unreadable",
                path=archive,
                detail="it has no index.json and no manifest.json",
            )
        hits: list[ImageHit] = []
        unpacked: list[str] = []
        seen: set[str] = set()
        read: set[str] = set()
        layers = files = 0
        for image in images:
            config = _read(outer, image.config)
            read.add(image.config)
            if "index.json" not in names:
                image = _named_by_diff_id(image, config)
            hits += [
                ImageHit("config", field, kind, label)
                for field, kind, label in _config_hits(config, searcher)
            ]
            for digest, member in image.layers:
                read.add(member)
                if digest in seen:
                    continue
                seen.add(digest)
                layers += 1
                for path, kind, label, counted in _layer_hits(
                    archive, outer, digest, member, searcher, unpacked
                ):
                    files += counted
                    if kind:
                        hits.append(ImageHit(digest, path, kind, label))
        # Everything else in the archive (manifests, index, each legacy layer's v1 json,
        # `repositories`) is read too: nothing in it goes unsearched.
        for entry in outer.getmembers():
            if entry.isfile() and entry.name.removeprefix("./") not in read:
                content = outer.extractfile(entry)
                assert content is not None
                hits += [
                    ImageHit("archive", entry.name, kind, label)
                    for kind, label in searcher.search(chunks(content))
                ]
    return ImageReport(tuple(hits), layers, files, tuple(unpacked))


def _read(outer: tarfile.TarFile, name: str) -> bytes:
    for candidate in (name, name.removeprefix("./"), "./" + name):
        try:
            member = outer.extractfile(candidate)
        except KeyError:
            continue
        if member is not None:
            return member.read()
    raise UserError("image::unreadable", path=name, detail="a file its manifest names is missing")


def _blob(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _oci(outer: tarfile.TarFile, index_name: str, seen: set[str]) -> Iterator[_Image]:
    """The images of an OCI index, nested indexes followed once each (an index that names
    itself, directly or not, is read once: its digests are not checked against its bytes)."""
    if index_name in seen:
        return
    seen.add(index_name)
    index = json.loads(_read(outer, index_name))
    for entry in index.get("manifests", []):
        name = _blob(entry["digest"])
        if entry.get("mediaType") in INDEX_TYPES:
            yield from _oci(outer, name, seen)
            continue
        manifest = json.loads(_read(outer, name))
        if "config" not in manifest:
            yield from _oci(outer, name, seen)  # an index without its media type in the parent
            continue
        layers = tuple(
            (layer["digest"], _blob(layer["digest"])) for layer in manifest.get("layers", [])
        )
        yield _Image(_blob(manifest["config"]["digest"]), layers)


def _docker(outer: tarfile.TarFile) -> Iterator[_Image]:
    for entry in json.loads(_read(outer, "manifest.json")):
        layers = tuple(
            (name.split("/")[0] if "/" in name else name, name) for name in entry["Layers"]
        )
        yield _Image(entry["Config"], layers)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _config_hits(config: bytes, searcher: Searcher) -> Iterator[tuple[str, str, str]]:
    try:
        parsed = json.loads(config)
    except ValueError:
        parsed = None
    fields = (
        list(_strings(parsed, ""))
        if parsed is not None
        else [("config", config.decode("utf-8", "replace"))]
    )
    for field, text in fields:
        for kind, label in searcher.search((text.encode(),)):
            yield field, kind, label


def _layer_hits(
    archive: Path,
    outer: tarfile.TarFile,
    digest: str,
    member: str,
    searcher: Searcher,
    unpacked: list[str],
) -> Iterator[tuple[str, str, str, int]]:
    """(path, kind, label, 1) per hit, and ("", "", "", 1) per file read without one; an archive
    in the layer that could not be unpacked in full is noted in `unpacked`."""
    try:
        blob = outer.extractfile(member)
    except KeyError:
        blob = None
    if blob is None:
        raise UserError("image::unreadable", path=archive, detail=f"layer {digest} is missing")
    head = blob.read(4)
    if head == ZSTD:
        raise UserError(
            "image::unreadable", path=archive, detail=f"layer {digest} is zstd-compressed"
        )
    stream = io.BufferedReader(_Prefixed(head, blob))
    with tarfile.open(fileobj=stream, mode="r|*") as layer:
        for entry in layer:
            if not entry.isfile():
                continue
            content = layer.extractfile(entry)
            if content is None:
                continue
            # A layer is a stream: an archive in it is read into memory once (up to IN_MEMORY),
            # searched whole with the rest of the file, then member by member.
            data = content.read(CHUNK)
            packed = archive_kind(data) is not None
            if packed:
                data += content.read(IN_MEMORY + 1 - len(data))
            found = [
                (entry.name, kind, label)
                for kind, label in searcher.search(itertools.chain((data,), chunks(content)))
            ]
            if packed and len(data) > IN_MEMORY:
                unpacked.append(f"{digest}: {entry.name} (larger than {IN_MEMORY >> 20} MiB)")
            elif packed:
                found += [
                    (hit.path, hit.kind, hit.label)
                    for hit in archive_hits(entry.name, io.BytesIO(data), searcher, unpacked)
                ]
            if not found:
                yield "", "", "", 1
            for number, (path, kind, label) in enumerate(found):
                yield path, kind, label, int(number == 0)


class _Prefixed(io.RawIOBase):
    """The bytes already read to sniff the compression, then the rest of the stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count] = self.head[:count]
            self.head = self.head[count:]
            return count
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
