"""Heroku-style output, and the one redaction point every line passes."""

from __future__ import annotations

import pytest

from conftest import make_key
from deploykey.core import output
from deploykey.core.errors import PROBLEMS, UserError


def test_styles(capsys: pytest.CaptureFixture[str]) -> None:
    output.step("Installing")
    output.detail("one\ntwo")
    output.warn("careful")
    captured = capsys.readouterr()
    assert captured.out == "-----> Installing\n       one\n       two\n"
    assert captured.err == " !     careful\n"


def test_error_block(capsys: pytest.CaptureFixture[str]) -> None:
    output.error(UserError("key::empty", name="DEPLOY_KEY", source="ENV_DIR/DEPLOY_KEY"))
    assert capsys.readouterr().err.splitlines() == [
        " !     ENV_DIR/DEPLOY_KEY is empty",
        " !",
        " !     The config var exists but holds no key.",
        " !",
        ' !     Fix: Set it to the private key file\'s content: `heroku config:set DEPLOY_KEY="$(cat deploy_key)"`.',
        " !     (key::empty: README.md#key-empty)",
    ]


def test_registered_secrets_never_reach_a_stream(
    capsys: pytest.CaptureFixture[str], keys_dir: object
) -> None:
    from pathlib import Path

    assert isinstance(keys_dir, Path)
    key = make_key(keys_dir)
    output.add_secret(key.text)
    line = key.text.splitlines()[2]
    output.detail(f"a child printed: {line}")
    output.warn(key.text)
    captured = capsys.readouterr()
    assert line not in captured.out + captured.err
    assert "a child printed: [redacted]" in captured.out


def test_every_problem_renders_with_its_facts() -> None:
    """Each catalogue entry names only facts its callers pass (checked by formatting with dummies)."""
    import string

    for slug, problem in PROBLEMS.items():
        fields = {
            name
            for text in (problem.title, problem.why, problem.fix)
            for _, name, _, _ in string.Formatter().parse(text)
            if name
        }
        error = UserError(slug, **{name: f"<{name}>" for name in fields})
        assert error.title and error.why and error.fix, slug


def test_any_private_key_block_and_the_forms_of_a_registered_one_are_redacted(
    capsys: pytest.CaptureFixture[str], keys_dir: object
) -> None:
    """A private key block never registered (whole, joined into one line, cut before its END
    line) is redacted; a registered key is also redacted as base64 and hex of its text."""
    import base64
    from pathlib import Path

    assert isinstance(keys_dir, Path)
    unknown, known = make_key(keys_dir), make_key(keys_dir, "rsa")
    output.add_secret(known.text)
    body_line = unknown.text.splitlines()[1]
    output.detail(f"before\n{unknown.text}after")
    output.warn("joined: " + " ".join(unknown.text.split()) + " and then")
    output.warn("cut: " + "\n".join(unknown.text.splitlines()[:3]))
    output.detail("b64 " + base64.b64encode(known.text.encode()).decode())
    output.detail("hex " + known.text.encode().hex())
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert body_line not in everything and "PRIVATE KEY" not in everything
    assert base64.b64encode(known.text.encode()).decode()[:40] not in everything
    assert known.text.encode().hex()[:40] not in everything
    assert "       before\n       [redacted private key]\n       after\n" in captured.out
    assert " !     joined: [redacted private key] and then\n" in captured.err
    assert "b64 [redacted]" in captured.out and "hex [redacted]" in captured.out
