"""The only module that writes to the terminal, in Heroku's style, through one redaction point.

`-----> Step` headers and 7-space detail lines go to stdout; ` !     ` warnings and errors go to
stderr (heroku-buildpack-python lib/output.sh). Every line passes `redact()`: any registered secret
(the lines of a key's text, the value it came from) is replaced before it reaches a stream, so that
a subprocess echoing its input cannot print a key.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterable
from typing import TextIO

from deploykey.core.errors import ISSUES_URL, UserError

INDENT = " " * 7
REDACTED = "[redacted]"
# Shorter fragments are too common to redact without mangling ordinary output; a key's base64 lines
# are 64 or 70 characters long.
MIN_SECRET = 16

_secrets: set[str] = set()
# Any private key block, known or not (one pasted into deploykey.yml is read before any key is
# registered): from its BEGIN line to its END line, or to the first character a PEM body cannot
# hold when the END line is missing or the lines were joined.
PRIVATE_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[A-Za-z0-9+/=\s:,.-]*?"
    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|(?=[^A-Za-z0-9+/=\s:,.-])|\Z)"
)
REDACTED_BLOCK = "[redacted private key]"
# `deploykey setup --shell` prints shell code on stdout: everything for people goes to stderr then.
_to_stderr = False


def to_stderr() -> None:
    global _to_stderr
    _to_stderr = True


def _out() -> TextIO:
    return sys.stderr if _to_stderr else sys.stdout


def add_secret(text: str) -> None:
    """Register a secret: the text itself and each of its lines long enough to be distinctive, and
    the whole text as base64 (with and without its final newline) and as hex, the forms a child
    or a debug dump prints it in."""
    pieces = [text, *text.splitlines()]
    for whole in {text, text.strip()}:
        data = whole.encode()
        pieces += [base64.b64encode(data).decode(), data.hex(), data.hex().upper()]
    for piece in pieces:
        piece = piece.strip()
        if len(piece) >= MIN_SECRET:
            _secrets.add(piece)


def redact(text: str) -> str:
    text = PRIVATE_BLOCK.sub(REDACTED_BLOCK, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _emit(stream: TextIO, prefix: str, text: str) -> None:
    for line in redact(text).splitlines() or [""]:
        stream.write((prefix + line).rstrip() + "\n")
    stream.flush()


def plain(text: str) -> None:
    """A line as it is: bin/detect's name, bin/release's YAML."""
    _emit(_out(), "", text)


def shell(text: str) -> None:
    """Shell code for `eval`, always on stdout (it holds paths, never a secret)."""
    _emit(sys.stdout, "", text)


def step(title: str) -> None:
    _emit(_out(), "-----> ", title)


def detail(text: str) -> None:
    _emit(_out(), INDENT, text)


def details(lines: Iterable[str]) -> None:
    for line in lines:
        detail(line)


def warn(text: str) -> None:
    _emit(sys.stderr, " !     ", text)


def error(err: UserError) -> None:
    warn(err.title)
    warn("")
    for line in err.why.splitlines():
        warn(line)
    warn("")
    fix = err.fix.splitlines()
    warn("Fix: " + fix[0])
    for line in fix[1:]:
        warn("     " + line)
    warn(f"({err.slug}: {err.anchor})")


def bug(exc: BaseException) -> None:
    """An exception that is not a UserError is a bug in deploykey: say so, and where to report it."""
    warn(f"deploykey failed unexpectedly: {type(exc).__name__}: {exc}")
    warn(f"This is a bug in deploykey; please report it at {ISSUES_URL} with the output above.")
