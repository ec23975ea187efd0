"""Pinned host keys: the published keys of github.com, gitlab.com and bitbucket.org, and revoked ones.

The kit never learns a host key on first use (no ssh-keyscan): a host is trusted through the pinned
file shipped with the kit or through `known_hosts` in deploykey.yml. Keys rotated after exposure
(GitHub's RSA key in March 2023, Bitbucket's in June 2023) are written as `@revoked`, so a copied
known_hosts file or a server still showing them fails loudly.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from deploykey.secrets.keys import fingerprint

ALGORITHM = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)$")


@dataclass(frozen=True)
class HostKey:
    patterns: tuple[str, ...]
    algorithm: str
    blob: str
    revoked: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def line(self, alias: str) -> str:
        marker = "@revoked " if self.revoked else ""
        return f"{marker}{alias} {self.algorithm} {self.blob}"

    def matches(self, host: str, port: int) -> bool:
        names = {host} if port == 22 else {f"[{host}]:{port}"}
        return bool(names & set(self.patterns))


def parse(line: str, default_host: str | None = None) -> HostKey:
    """Parse a known_hosts line (`[@revoked] HOSTS ALGORITHM BASE64 [comment]`).

    With `default_host`, the host field may be left out (`ALGORITHM BASE64`). Raises ValueError
    saying what is wrong.
    """
    fields = line.split()
    revoked = bool(fields) and fields[0] == "@revoked"
    if revoked:
        fields = fields[1:]
    if fields and fields[0].startswith("@"):
        raise ValueError(f"the marker {fields[0]} is not supported")
    if default_host is not None and fields and ALGORITHM.match(fields[0]):
        fields = [default_host, *fields]
    if len(fields) < 3:
        raise ValueError("expected HOST ALGORITHM BASE64")
    hosts, algorithm, blob = fields[:3]
    if not ALGORITHM.match(algorithm):
        raise ValueError(f"`{algorithm}` is not an ssh host key algorithm")
    try:
        decoded = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("the key is not valid base64") from None
    if algorithm.encode() not in decoded[:64]:
        raise ValueError(f"the key data does not hold a {algorithm} key")
    return HostKey(tuple(hosts.split(",")), algorithm, blob, revoked)


@cache
def pinned() -> tuple[HostKey, ...]:
    text = resources.files("deploykey").joinpath("known_hosts.pinned").read_text()
    return tuple(
        parse(line) for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def pinned_for(host: str, port: int = 22) -> tuple[HostKey, ...]:
    return tuple(key for key in pinned() if key.matches(host, port) and not key.revoked)


def revoked_for(host: str, port: int = 22) -> tuple[HostKey, ...]:
    return tuple(
        key
        for key in pinned()
        if key.revoked and (key.matches(host, port) or key.matches(host, 22))
    )


def is_pinned(host: str, port: int = 22) -> bool:
    return bool(pinned_for(host, port))
