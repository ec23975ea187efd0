"""Tokens for HTTPS-only setups, end to end: a real git HTTP server that requires the token."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ENV_DUMP_BACKEND, Build, flit_package, key_dirs
from support.httpserver import GitHttpServer
from support.token_builds import TOKEN, token_build


@pytest.fixture(scope="module")
def http_server() -> Iterator[GitHttpServer]:
    server = GitHttpServer.create("x-access-token", TOKEN)
    files = {
        **flit_package("tokenlib", "1.0", backend="dump_backend"),
        "dump_backend.py": ENV_DUMP_BACKEND,
    }
    server.add_repo("acme/tokenlib", files)
    server.start()
    yield server
    server.stop()


def token_copies(roots: list[Path]) -> list[str]:
    """Files holding the token, as it is or as base64 (computed here, not by deploykey)."""
    forms = [TOKEN.encode()] + [base64.b64encode(TOKEN.encode()[i:])[4:24] for i in range(3)]
    return [
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and any(form in path.read_bytes() for form in forms)
    ]


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_token_installs_and_is_left_nowhere(
    build: Build, http_server: GitHttpServer, editable: bool
) -> None:
    before = key_dirs()
    url = f"git+{http_server.url}/acme/tokenlib.git@v1.0"
    token_build(build, http_server, f"-e {url}#egg=tokenlib" if editable else f"tokenlib @ {url}")
    # A Heroku build (STACK), into a venv: the token file goes from this build's ENV_DIR too.
    result = build.compile(env=build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed GIT_TOKEN_LOCAL from {build.env_dir}" in result.stdout
    assert not (build.env_dir / "GIT_TOKEN_LOCAL").exists()
    assert f"GIT_TOKEN_LOCAL: token for https://127.0.0.1:{http_server.port}" in result.stdout
    assert "via token GIT_TOKEN_LOCAL" in result.stdout and ": ok, v1.0 is " in result.stdout
    assert "Successfully installed tokenlib-1.0" in result.stdout
    # Nowhere: not in the slug (direct_url.json, an editable checkout's .git/config), the cache, the
    # output, the build backend's environment and arguments, a URL the server saw, a temp dir.
    assert token_copies([build.app, build.cache]) == []
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN not in (build.home / "backend-saw.json").read_text()
    log = http_server.access_log()
    assert 'x-access-token "GET /acme/tokenlib.git/info/refs' in log and TOKEN not in log
    if editable:
        git_config = next(build.app.glob(".venv/src/tokenlib/.git/config")).read_text()
        assert f"url = {http_server.url}/acme/tokenlib.git" in git_config
    assert key_dirs() - before == set()


def test_a_refused_token_is_named(build: Build, http_server: GitHttpServer) -> None:
    token_build(
        build,
        http_server,
        f"tokenlib @ git+{http_server.url}/acme/tokenlib.git@v1.0",
        "wrong-" + TOKEN,
    )
    result = build.compile()
    assert result.returncode == 1
    assert f"127.0.0.1:{http_server.port} refused the token GIT_TOKEN_LOCAL." in result.stderr
    assert "Installing" not in result.stdout
