"""One trust setting for every HTTPS request deploykey makes or starts: the system's CA store, plus
the bundle SSL_CERT_FILE names and the certificates in the directory SSL_CERT_DIR names (with CNB
they come from the platform env: cnb.py copies them to this process). A GitHub Enterprise
Server's private CA, or a TLS-inspecting proxy's, is added there once, and each client gets it in
the form it reads:
- Python's ssl (the App's API calls): `create_default_context` reads SSL_CERT_FILE *instead of*
  the system bundle (OpenSSL's default verify paths), so the system bundle is loaded as well.
- git: Debian's and Ubuntu's git is built with libcurl-gnutls (`ldd git-remote-https`), which
  reads neither variable (its error says `CAfile: none`); it reads GIT_SSL_CAINFO
  (git-config(1), http.sslCAInfo: "Can be overridden by the GIT_SSL_CAINFO environment
  variable"), with OpenSSL builds alike.
- requests, in Poetry and Pipenv: REQUESTS_CA_BUNDLE, in place of certifi's own bundle, which
  holds neither a private CA nor a proxy's that is in the system store.
- uv: SSL_CERT_FILE ("To use custom CA certificates, set the SSL_CERT_FILE environment variable
  to the path of a PEM-encoded certificate bundle", docs.astral.sh/uv/concepts/authentication/
  certificates; bundled Mozilla roots otherwise). pip >= 24.2 verifies with truststore, the
  system store through OpenSSL, which reads SSL_CERT_FILE too.
Each of these replaces a store rather than adding to it: so every client gets one bundle of all
of it (the system's, then the user's), written by the step that uses it into a directory it has
just made for itself (the fetch: its key dir; an install: a fresh private temp dir), which no
build code ran before to prepare or swap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deploykey.core.errors import UserError

if TYPE_CHECKING:  # ssl is imported where used: ~5 ms of every command's start-up
    import ssl

SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR")
BUNDLE = "ca-bundle.pem"
# Where distributions keep the system store as one PEM bundle: Debian and Ubuntu (and the Heroku
# stacks), Fedora and RHEL, Alpine; then what this Python's OpenSSL was built to read.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def given(environ: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    """SSL_CERT_FILE and SSL_CERT_DIR, as set (empty means unset)."""
    import os

    source = os.environ if environ is None else environ
    return [(name, Path(source[name])) for name in SETTINGS if source.get(name)]


def adopt(values: dict[str, str], base: Path) -> list[str]:
    """SSL_CERT_FILE and SSL_CERT_DIR from a platform's config vars (Heroku's ENV_DIR, which
    never reaches this process's environment), a relative path taken from `base` (the app: a CA
    committed with it), for this process and its children; a setting in the environment
    itself stays. The names adopted."""
    import os

    adopted = []
    for name in SETTINGS:
        value = values.get(name, "").strip()
        if value and not os.environ.get(name):
            os.environ[name] = str(base / value)  # an absolute value stays as it is
            adopted.append(name)
    return adopted


def system_bundle() -> Path | None:
    """The system store as one PEM file, if this machine has one."""
    found = next((Path(path) for path in SYSTEM_BUNDLES if Path(path).is_file()), None)
    if found is None:  # only then: importing ssl is ~5 ms of start-up
        import ssl

        found = Path(ssl.get_default_verify_paths().openssl_cafile)
    return found if found.is_file() else None


def describe() -> str:
    """What is trusted, for the build's output and its errors."""
    return " and ".join(["the system store", *(f"{name} ({path})" for name, path in given())])


def bundle() -> bytes | None:
    """The system store and the user's certificates as one PEM bundle; None when the user gave
    none (every client then reads the system store as it is)."""
    extra = given()
    if not extra:
        return None
    system = system_bundle()
    parts = [system.read_bytes()] if system is not None else []
    for name, path in extra:
        try:
            files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
            unique = dict.fromkeys(f.resolve() for f in files)  # c_rehash links: once each
            found = [data for data in (f.read_bytes() for f in unique) if PEM_BEGIN in data]
        except OSError as error:
            raise UserError(
                "tls::setting", name=name, path=path, reason=error.strerror or str(error)
            ) from None
        if not found:
            raise UserError(
                "tls::setting", name=name, path=path, reason="it holds no PEM certificate"
            )
        parts += found
    return b"\n".join(part.rstrip(b"\n") + b"\n" for part in parts)


def context() -> ssl.SSLContext:
    """For deploykey's own requests (the App's API): the default context (the system store, or
    what SSL_CERT_FILE names in its place), and the whole bundle: the system store that
    SSL_CERT_FILE replaced, and SSL_CERT_DIR's files, which OpenSSL looks up only by their
    hashed names (`openssl rehash`), where a directory of plain .pem files is read here."""
    import ssl

    context = ssl.create_default_context()
    pem = bundle()
    if pem is not None:
        context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
    return context


def git_env(path: Path | None) -> dict[str, str]:
    """deploykey's own git (the fetch): the bundle, when the user added certificates."""
    return {} if path is None else {"GIT_SSL_CAINFO": str(path)}


def installer_env(path: Path | None, base: dict[str, str]) -> dict[str, str]:
    """pip, uv, Poetry, Pipenv and the git they run: the bundle (or the system store as it is),
    in each form they read; a REQUESTS_CA_BUNDLE or PIP_CERT the user set stays theirs."""
    chosen = path or system_bundle()
    if chosen is None:
        return {}
    env = {"SSL_CERT_FILE": str(chosen), "GIT_SSL_CAINFO": str(chosen)}
    if "REQUESTS_CA_BUNDLE" not in base:
        env["REQUESTS_CA_BUNDLE"] = str(chosen)
    return env


def untrusted(host: str, client: str, reason: str) -> UserError:
    """A certificate that none of the trusted CAs signed, named as such (not "unreachable")."""
    return UserError("tls::untrusted", host=host, client=client, reason=reason, trusted=describe())


# What git (libcurl with GnuTLS or OpenSSL) says when the certificate is not trusted.
GIT_CERTIFICATE = ("server certificate verification failed", "SSL certificate problem")


def git_refused(text: str) -> bool:
    return any(said in text for said in GIT_CERTIFICATE)
