"""Key intake: every shape users paste a key in, repaired or refused with its own error."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from conftest import GeneratedKey, make_key
from deploykey.core.errors import UserError
from deploykey.secrets import keys


def load(value: str | bytes) -> keys.Key:
    data = value.encode() if isinstance(value, str) else value
    return keys.load(data, "DEPLOY_KEY", "ENV_DIR/DEPLOY_KEY")


def refused(value: str | bytes) -> UserError:
    with pytest.raises(UserError) as caught:
        load(value)
    return caught.value


@pytest.fixture
def ed25519(keys_dir: Path) -> GeneratedKey:
    return make_key(keys_dir)


@pytest.mark.parametrize(
    ("kind", "fmt", "keytype"),
    [
        ("ed25519", None, "ED25519"),
        ("rsa", "PEM", "RSA"),
        ("ecdsa", "PKCS8", "ECDSA"),
        ("rsa", None, "RSA"),
    ],
)
def test_valid_keys_load_unchanged(
    keys_dir: Path, kind: str, fmt: str | None, keytype: str
) -> None:
    key = make_key(keys_dir, kind, fmt=fmt)
    loaded = load(key.text)
    assert (
        loaded.fingerprint == key.fingerprint
    )  # computed in Python, checked against ssh-keygen -l
    assert loaded.keytype == keytype
    assert loaded.material == key.path.read_bytes()  # ssh-keygen's own file is already canonical
    assert loaded.repairs == ()
    assert key.text.splitlines()[2] not in repr(loaded)


REPAIRS = {
    "base64": (lambda t: base64.b64encode(t.encode()).decode(), "decoded the key from base64"),
    "base64 wrapped at 76": (
        lambda t: "\n".join(base64.encodebytes(t.encode()).decode().splitlines()),
        "decoded the key from base64",
    ),
    "urlsafe base64": (
        lambda t: base64.urlsafe_b64encode(t.encode()).decode(),
        "decoded the key from base64",
    ),
    "CRLF": (lambda t: t.replace("\n", "\r\n"), "converted CRLF line ends to LF"),
    "no final newline": (lambda t: t.rstrip("\n"), "added the missing final newline"),
    "double quotes": (lambda t: f'"{t}"', "removed surrounding quotes"),
    "single quotes": (lambda t: f"'{t.strip()}'", "removed surrounding quotes"),
    "literal backslash-n": (
        lambda t: t.replace("\n", "\\n"),
        "turned literal \\n sequences into line breaks",
    ),
    "newlines as spaces": (lambda t: t.replace("\n", " "), "rebuilt the line breaks"),
    "indented": (
        lambda t: "\n".join("    " + line for line in t.splitlines()) + "\n",
        "removed indentation",
    ),
    "byte order mark": (lambda t: "\ufeff" + t, "removed a byte order mark"),
    "text around it": (lambda t: "my deploy key:\n" + t + "(end)\n", "ignored text around the key"),
}


@pytest.mark.parametrize("shape", sorted(REPAIRS))
def test_repairable_shapes(ed25519: GeneratedKey, shape: str) -> None:
    transform, repair = REPAIRS[shape]
    loaded = load(transform(ed25519.text))
    assert loaded.fingerprint == ed25519.fingerprint
    assert loaded.material == ed25519.path.read_bytes()
    assert repair in loaded.repairs


def test_repairs_compose(ed25519: GeneratedKey) -> None:
    value = '"' + base64.b64encode(ed25519.text.replace("\n", "\r\n").encode()).decode() + '"'
    loaded = load(value)
    assert loaded.fingerprint == ed25519.fingerprint
    assert loaded.repairs == (
        "removed surrounding quotes",
        "decoded the key from base64",
        "converted CRLF line ends to LF",
    )


def test_pem_rsa_repaired_and_rewrapped(keys_dir: Path) -> None:
    key = make_key(keys_dir, "rsa", fmt="PEM")
    loaded = load(key.text.replace("\n", " ").strip())
    assert loaded.material == key.path.read_bytes()


@pytest.mark.parametrize("value", ["", "   \n\n", '""', "''"])
def test_empty(value: str) -> None:
    error = refused(value)
    assert error.slug == "key::empty"
    assert error.title == "ENV_DIR/DEPLOY_KEY is empty"


def test_public_key(ed25519: GeneratedKey) -> None:
    error = refused(ed25519.path.with_suffix(".pub").read_text())
    assert error.slug == "key::public"
    assert error.title == "ENV_DIR/DEPLOY_KEY holds a public key, not a private key"
    assert ed25519.fingerprint in error.why and "ssh-ed25519" in error.why


def test_base64_of_a_public_key(ed25519: GeneratedKey) -> None:
    error = refused(base64.b64encode(ed25519.path.with_suffix(".pub").read_bytes()))
    assert error.slug == "key::public"


def test_rfc4716_public_key(ed25519: GeneratedKey) -> None:
    import subprocess

    ssh2 = subprocess.run(
        ["ssh-keygen", "-e", "-f", str(ed25519.path.with_suffix(".pub"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert refused(ssh2).slug == "key::public"


def test_putty() -> None:
    value = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\nPublic-Lines: 2\nAAAA\n"
    )
    error = refused(value)
    assert error.slug == "key::putty"
    assert "puttygen key.ppk -O private-openssh -o deploy_key" in error.fix


@pytest.mark.parametrize(("kind", "fmt"), [("ed25519", None), ("rsa", "PEM"), ("ecdsa", "PKCS8")])
def test_passphrase_protected(keys_dir: Path, kind: str, fmt: str | None) -> None:
    key = make_key(keys_dir, kind, passphrase="correct horse", fmt=fmt)
    error = refused(key.text)
    assert error.slug == "key::encrypted"
    assert "ssh-keygen -p -N '' -f deploy_key" in error.fix
    assert refused(base64.b64encode(key.text.encode())).slug == "key::encrypted"


def test_dsa(keys_dir: Path) -> None:
    key = make_key(keys_dir, "dsa")
    assert refused(key.text).slug == "key::dsa"


def test_two_keys(ed25519: GeneratedKey, keys_dir: Path) -> None:
    other = make_key(keys_dir)
    error = refused(ed25519.text + other.text)
    assert error.slug == "key::multiple"
    assert error.title == "ENV_DIR/DEPLOY_KEY holds 2 private keys"


def test_truncated_without_end_line(ed25519: GeneratedKey) -> None:
    error = refused(ed25519.text[: len(ed25519.text) // 2])
    assert error.slug == "key::truncated"
    assert "-----END OPENSSH PRIVATE KEY-----` line is missing" in error.why


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_truncated_body(keys_dir: Path, kind: str) -> None:
    key = make_key(keys_dir, kind, fmt="PEM" if kind == "rsa" else None)
    lines = key.text.splitlines()
    cut = "\n".join(lines[:2] + lines[-1:]) + "\n"  # the middle of the body is gone
    assert refused(cut).slug == "key::truncated"


def test_garbage_in_body_is_refused_by_ssh_keygen(ed25519: GeneratedKey) -> None:
    lines = ed25519.text.splitlines()
    lines[2] = "A" * len(lines[2])
    error = refused("\n".join(lines) + "\n")
    assert error.slug in ("key::invalid", "key::truncated")
    assert "libcrypto" not in error.title


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("not a key at all!", "characters outside the base64 alphabet"),
        (base64.b64encode(b"hello, this is not a key").decode(), "decodes to is not a private key"),
        (base64.b64encode(bytes(range(256))).decode(), "does not decode to text"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "holds a `CERTIFICATE` block",
        ),
    ],
)
def test_undecodable(value: str, detail: str) -> None:
    error = refused(value)
    assert error.slug == "key::undecodable"
    assert detail in error.why


def test_binary_value() -> None:
    assert refused(b"\xff\xfe\x00binary").slug == "key::undecodable"


def test_errors_never_hold_key_material(ed25519: GeneratedKey) -> None:
    body = ed25519.text.splitlines()[2]
    for value in (ed25519.text[:200], ed25519.text + ed25519.text):
        error = refused(value)
        assert body not in error.title + error.why + error.fix
