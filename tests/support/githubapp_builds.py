"""Builds that fetch with a GitHub App (the stand-in of support/githubapi.py) instead of a key."""

from __future__ import annotations

import subprocess

from conftest import APP_ID, APP_REQUIREMENTS, BIN, Build, GitHub


def app_build(
    build: Build, github: GitHub, requirements: str = APP_REQUIREMENTS, **yml: object
) -> None:
    """An app with no deploy key: GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY as config vars."""
    (build.app / "requirements.txt").write_text(requirements)
    (build.app / "deploykey.yml").write_text(github.yml(**yml))
    build.set_key(str(APP_ID), "GITHUB_APP_ID")
    build.set_key(github.key_text, "GITHUB_APP_PRIVATE_KEY")


def compile_app(build: Build, github: GitHub, *args: str) -> subprocess.CompletedProcess[str]:
    """bin/compile as on Heroku (STACK: its ENV_DIR is the build's own copy), into a venv."""
    env = build.environ(
        SSL_CERT_FILE=str(github.bundle), DEPLOYKEY_INSTALL="venv", STACK="heroku-24"
    )
    return build.compile(*args, env=env)


def written_hooks(build: Build) -> None:
    done = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)],
        capture_output=True,
        text=True,
        env=build.environ(),
    )
    assert done.returncode == 0, done.stderr
