"""Key intake: normalise the value users paste, classify what is wrong with it, validate with ssh-keygen.

OpenSSH 9 on OpenSSL 3 reports most malformed keys as one opaque `error in libcrypto` line, so the
kit classifies the value itself first (public key, PuTTY, passphrase, DSA, truncated, two keys,
not base64) and repairs what only looks wrong (line ends, final newline, surrounding quotes, literal
`\\n`, newlines turned into spaces, indentation, base64 of the key). Only then `ssh-keygen -y` reads
it, on stdin: the key is never written to disk to be validated, and never put on a command line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field

from deploykey.core import output, run
from deploykey.core.errors import UserError

PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)(?:-----END \1-----|\Z)", re.S)
PRIVATE_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
PUBLIC_LINE = re.compile(
    r"^((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(AAAA[A-Za-z0-9+/]+=*)(\s.*)?$", re.S
)
BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/=_-]+$")
KEY_TYPES = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    "ssh-dss": "DSA",
}
# Line widths OpenSSH and OpenSSL write; ssh-keygen accepts others, but a canonical file is easier
# to compare and to scan for.
WIDTH = {"OPENSSH PRIVATE KEY": 70}
PEM_WIDTH = 64
MAX_NESTING = 2


@dataclass(frozen=True)
class Key:
    """A validated private key. Its material never appears in repr(), logs or arguments."""

    name: str
    source: str
    material: bytes = field(repr=False)
    public: str
    keytype: str
    fingerprint: str
    repairs: tuple[str, ...] = ()
    # Every form the value took on its way to `material`: as the platform handed it over (base64,
    # CRLF, quoted, a binding file's content), then each text decoded from base64. Build code that
    # read the value can ship any of them without decoding it: the leak check searches for each.
    given: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def label(self) -> str:
        return f"{self.keytype} {self.fingerprint}"


def fingerprint(blob_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob given in base64."""
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class _Context:
    name: str
    source: str

    def fail(self, slug: str, **facts: object) -> UserError:
        return UserError(slug, name=self.name, source=self.source, **facts)


def load(value: bytes, name: str, source: str) -> Key:
    """Turn a config var's raw value into a validated Key, or raise the matching UserError."""
    ctx = _Context(name, source)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ctx.fail("key::undecodable", detail="It is binary data, not text.") from None
    output.add_secret(text)
    forms = [text]
    material, repairs = normalise(text, ctx, forms=forms)
    output.add_secret(material)
    public = _public_half(material, ctx)
    algorithm, blob = public.split()[:2]
    return Key(
        name=name,
        source=source,
        material=material.encode(),
        public=f"{algorithm} {blob}",
        keytype=KEY_TYPES.get(algorithm, algorithm),
        fingerprint=fingerprint(blob),
        repairs=tuple(repairs),
        given=tuple(dict.fromkeys(form.encode() for form in forms)),
    )


def normalise(
    text: str, ctx: _Context, depth: int = 0, forms: list[str] | None = None
) -> tuple[str, list[str]]:
    """The canonical key file text for a pasted value, and the repairs made to get there; each
    text decoded from base64 on the way is appended to `forms`."""
    repairs: list[str] = []
    if text.startswith("\ufeff"):
        text = text[1:]
        repairs.append("removed a byte order mark")
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        text = stripped[1:-1]
        repairs.append("removed surrounding quotes")
    if "\\n" in text and "-----BEGIN" in text:
        text = text.replace("\\r\\n", "\n").replace("\\n", "\n")
        repairs.append("turned literal \\n sequences into line breaks")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        repairs.append("converted CRLF line ends to LF")
    final_newline = text.rstrip(" \t").endswith("\n")
    text = text.strip()
    if not text:
        raise ctx.fail("key::empty")

    if text.startswith("PuTTY-User-Key-File-"):
        raise ctx.fail("key::putty")
    _refuse_public(text, ctx)
    begins = PRIVATE_BEGIN.findall(text)
    if len(begins) > 1:
        raise ctx.fail("key::multiple", count=len(begins))
    if "-----BEGIN " in text:
        material, pem_repairs = _from_pem(text, ctx)
        if not final_newline:
            pem_repairs.append("added the missing final newline")
        return material, repairs + pem_repairs
    return _from_base64(text, ctx, depth, repairs, forms)


def _refuse_public(text: str, ctx: _Context) -> None:
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        raise ctx.fail(
            "key::public", keytype="---- BEGIN SSH2 PUBLIC KEY ----", fingerprint="RFC 4716 format"
        )
    match = PUBLIC_LINE.match(text)
    if match:
        try:
            print_ = fingerprint(match.group(2))
        except (binascii.Error, ValueError):
            print_ = "fingerprint unreadable"
        raise ctx.fail("key::public", keytype=match.group(1), fingerprint=print_)


def _from_base64(
    text: str, ctx: _Context, depth: int, repairs: list[str], forms: list[str] | None
) -> tuple[str, list[str]]:
    compact = "".join(text.split())
    if not BASE64_TEXT.match(compact):
        raise ctx.fail(
            "key::undecodable",
            detail="It has no `-----BEGIN ... PRIVATE KEY-----` line, and it has characters outside "
            "the base64 alphabet, so it is not base64 of a key either.",
        )
    alphabet = "-_" if ("-" in compact or "_" in compact) else "+/"
    try:
        decoded = base64.b64decode(
            compact + "=" * (-len(compact) % 4), altchars=alphabet.encode(), validate=True
        )
        inner = decoded.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ctx.fail(
            "key::undecodable",
            detail=f"It has no `-----BEGIN ... PRIVATE KEY-----` line; read as base64 "
            f"({len(compact)} characters) it does not decode to text.",
        ) from None
    if depth >= MAX_NESTING or not (
        "-----BEGIN" in inner
        or "PuTTY-User-Key-File-" in inner
        or PUBLIC_LINE.match(inner.strip())
        or BASE64_TEXT.match("".join(inner.split()) or "!")
    ):
        raise ctx.fail(
            "key::undecodable",
            detail="It has no `-----BEGIN ... PRIVATE KEY-----` line; it is valid base64, but what it "
            "decodes to is not a private key.",
        )
    output.add_secret(inner)
    if forms is not None:
        forms.append(inner)
    material, inner_repairs = normalise(inner, ctx, depth + 1, forms)
    return material, [*repairs, "decoded the key from base64", *inner_repairs]


def _from_pem(text: str, ctx: _Context) -> tuple[str, list[str]]:
    repairs: list[str] = []
    match = PEM_BLOCK.search(text)
    if match is None:
        raise ctx.fail("key::truncated", detail="The `-----BEGIN` line is malformed.")
    label, inner = match.group(1), match.group(2)
    if not match.group(0).endswith("-----END " + label + "-----"):
        raise ctx.fail("key::truncated", detail=f"The `-----END {label}-----` line is missing.")
    if text[: match.start()].strip() or text[match.end() :].strip():
        repairs.append("ignored text around the key")
    if label == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in inner:
        raise ctx.fail("key::encrypted")
    if label == "DSA PRIVATE KEY":
        raise ctx.fail("key::dsa")
    if not label.endswith("PRIVATE KEY"):
        raise ctx.fail("key::undecodable", detail=f"It holds a `{label}` block, not a private key.")
    lines = [line.strip() for line in inner.split("\n")]
    body_lines = [line for line in lines if line]
    if any(":" in line for line in body_lines):
        # PEM headers (Proc-Type, DEK-Info) only appear on encrypted keys, handled above.
        raise ctx.fail(
            "key::invalid", format=label, detail="unexpected header lines in the key body"
        )
    body = "".join("".join(body_lines).split())
    if any(line != line.lstrip() for line in inner.split("\n") if line.strip()):
        repairs.append("removed indentation")
    if any(len(line.split()) > 1 for line in body_lines) or (
        len(body_lines) == 1 and len(body) > 80
    ):
        repairs.append("rebuilt the line breaks")
    blob = _decode_body(body, label, ctx)
    if label == "OPENSSH PRIVATE KEY":
        _check_openssh(blob, ctx)
    else:
        _check_der(blob, ctx)
    width = WIDTH.get(label, PEM_WIDTH)
    wrapped = "\n".join(body[i : i + width] for i in range(0, len(body), width))
    return f"-----BEGIN {label}-----\n{wrapped}\n-----END {label}-----\n", repairs


def _decode_body(body: str, label: str, ctx: _Context) -> bytes:
    if not BASE64_TEXT.match(body or "!"):
        raise ctx.fail(
            "key::invalid", format=label, detail="the key body has characters outside base64"
        )
    if len(body) % 4:
        raise ctx.fail(
            "key::truncated",
            detail=f"The key body has {len(body)} base64 characters, not a multiple of 4.",
        )
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ctx.fail("key::truncated", detail="The key body does not decode as base64.") from None


def _check_openssh(blob: bytes, ctx: _Context) -> None:
    """Read the openssh-key-v1 header (PROTOCOL.key): cipher, number of keys, the first key's type."""
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise ctx.fail(
            "key::invalid", format="OpenSSH", detail="the body does not start with openssh-key-v1"
        )
    try:
        offset = len(magic)
        cipher, offset = _string(blob, offset)
        _kdf, offset = _string(blob, offset)
        _kdf_options, offset = _string(blob, offset)
        (count,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        public, offset = _string(blob, offset)
        keytype, _ = _string(public, 0)
        _private, offset = _string(blob, offset)
    except (struct.error, ValueError):
        raise ctx.fail(
            "key::truncated", detail="The key ends before its private part does."
        ) from None
    if cipher != b"none":
        raise ctx.fail("key::encrypted")
    if keytype == b"ssh-dss":
        raise ctx.fail("key::dsa")
    if count != 1:
        raise ctx.fail("key::multiple", count=count)


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, offset)
    end = offset + 4 + length
    if end > len(data):
        raise ValueError("short")
    return data[offset + 4 : end], end


def _check_der(blob: bytes, ctx: _Context) -> None:
    """A PEM key is one DER SEQUENCE; a shorter blob than its declared length was cut off."""
    if len(blob) < 2 or blob[0] != 0x30:
        raise ctx.fail("key::invalid", format="PEM", detail="the body is not a DER sequence")
    size, header = blob[1], 2
    if size & 0x80:
        octets = size & 0x7F
        size = int.from_bytes(blob[2 : 2 + octets], "big")
        header += octets
    if header + size > len(blob):
        raise ctx.fail(
            "key::truncated",
            detail=f"The key declares {header + size} bytes but holds {len(blob)}.",
        )


def _public_half(material: str, ctx: _Context) -> str:
    """Derive the public key with ssh-keygen, the key passed on stdin, an empty passphrase."""
    keygen = run.which("ssh-keygen", "validate the deploy key")
    result = run.capture(
        [keygen, "-y", "-P", "", "-f", "/dev/stdin"], env=run.secret_env(), stdin=material.encode()
    )
    lines = [line for line in result.lines if line.strip()]
    publics = [line for line in lines if PUBLIC_LINE.match(line)]
    if result.ok and publics:
        return publics[0]
    said = " ".join(lines).replace("/dev/stdin", "the key") or f"exit status {result.status}"
    if "passphrase" in said:
        raise ctx.fail("key::encrypted")
    fmt = "OpenSSH" if "OPENSSH" in material else "PEM"
    raise ctx.fail("key::invalid", format=fmt, detail=said)
