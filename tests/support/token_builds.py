"""Builds that fetch with a token instead of a deploy key."""

from __future__ import annotations

import base64

from conftest import Build
from support.httpserver import GitHttpServer

TOKEN = "ghp_" + base64.b32encode(b"deploykey test token, made at run time").decode().rstrip("=")


def token_build(build: Build, server: GitHttpServer, requirement: str, token: str = TOKEN) -> None:
    build.set_key(token, "GIT_TOKEN_LOCAL")
    (build.app / "requirements.txt").write_text(requirement + "\n")
    with (build.app / "deploykey.yml").open("a") as yml:
        yml.write(
            f"tokens:\n  GIT_TOKEN_LOCAL: {{host: '127.0.0.1:{server.port}', username: x-access-token}}\n"
        )
