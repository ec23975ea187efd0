"""A GitHub App user's uv.lock and poetry.lock apps on Heroku (issue 18): no deploy key, only the
GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY config vars, and two private repositories the lockfiles
pin at `ssh://git@github.com/acme/...`.

The lockfiles are made by uv and Poetry themselves, as a developer makes them (over ssh, against
the sshd git server: tests/support/heroku_apps.py `lock`); the GitHub stand-in's git front end
(tests/support/githubapi.py: real nginx and git http-backend, only live tokens) serves copies of those
same repositories, so the locked commits are there. The app's deploykey.yml has `github_app:`
with `api_url` and `git_url` and no `hosts:`. Installed through
- bin/compile with DEPLOYKEY_INSTALL=venv (deploykey runs `uv sync --locked` / `poetry sync`), and
- the handoff to heroku-buildpack-python: bin/compile in its default mode on Heroku, then v351's
  install command lines (tests/support/installers.py).

deploykey trusts the system CA store: its processes get SSL_CERT_FILE naming the system bundle
and the stand-in's CA (tests/secrets/test_githubapp.py), and NO_PROXY=127.0.0.1 past the dead proxy that
stands for "no network" (the stand-in is the one host the build reaches). The installers never
talk to the stand-in (so what they trust, uv its own bundled roots, does not matter): they install
from the mirrors after the token is revoked, with the ssh guard first on PATH; the front end's
last request is always the fetch's own, with the token, and in the handoff heroku/python runs
behind the dead proxy with no NO_PROXY and asks the stand-in for nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    APP_ID,
    Build,
    GeneratedKey,
    GitHub,
    files_with_key,
    key_dirs,
    key_fragments,
    make_key,
    text_has_key,
)
from support import installers
from support.githubapi import Token
from support.gitserver import GitServer, run_git
from support.heroku_apps import buildpack, lock, tools, write_app
from support.installers import LOCKFILES, Tools
from support.lockfile_apps import COMMANDS, SHOWN, compile_env, run_compile, tool_links

__all__ = ["buildpack", "tools"]  # fixtures, from tests/support/heroku_apps.py

OWNER = "acme"
LOCKED = (f"{OWNER}/noindex-lib", f"{OWNER}/noindex-extra")
NAMES = sorted(repo.partition("/")[2] for repo in LOCKED)
MANAGERS = ("uv", "poetry", "pipenv")
HANDED = (*MANAGERS, "pip")  # pip: a requirements.txt, which heroku/python's pip installs
IMPORT = (
    "import noindex_lib, noindex_extra\n"
    "for module in (noindex_lib, noindex_extra): print(module.hello(), module.__file__)"
)
GREETINGS = ["hello from noindex-lib", "hello from noindex-extra"]
# The stand-in GitHub is the one host deploykey may reach past the dead proxy (installers.py):
# a build network that reaches github.com and nothing else.
REACH_GITHUB = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


@pytest.fixture(scope="module")
def dev_key(git_server: GitServer, tmp_path_factory: pytest.TempPathFactory) -> GeneratedKey:
    """The two repositories on the sshd git server, and the developer's key that locks them."""
    for repo in LOCKED:
        installers.serve_noindex(git_server, repo)
    key = make_key(tmp_path_factory.mktemp("keys"))
    git_server.grant(key.label, key.public, list(LOCKED))
    return key


@pytest.fixture(scope="module")
def locked(
    git_server: GitServer,
    dev_key: GeneratedKey,
    tools: Tools,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, str]]:
    """uv's, Poetry's and Pipenv's app files, each with the lockfile the tool made pinning both;
    and a requirements.txt naming both at v1.0."""
    return {"pip": installers.manifests("pip", LOCKED)} | {
        manager: lock(
            git_server,
            dev_key,
            tools,
            tmp_path_factory.mktemp(f"lock-{manager}"),
            manager,
            installers.manifests(manager, LOCKED),
            LOCKED,
        )
        for manager in MANAGERS
    }


@pytest.fixture(scope="module")
def github(
    git_server: GitServer, dev_key: GeneratedKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitHub]:
    """The App, installed on acme for the two locked repositories and a third (`unrelated`, to
    show the narrowing); the front end serves copies of the sshd server's repositories."""
    github = GitHub.start(tmp_path_factory.mktemp("github"))
    for repo in LOCKED:
        owner, _, name = repo.partition("/")
        github.git.add_copy(owner, name, git_server.root / "repos" / f"{repo}.git")
    github.git.add_repo(OWNER, "unrelated", installers.noindex_package("unrelated"))
    github.api.install(APP_ID, OWNER, [*NAMES, "unrelated"])
    yield github
    github.stop()


def write_app_with_app_key(build: Build, github: GitHub, files: dict[str, str]) -> None:
    """The app as pushed (manifests and lockfile), deploykey.yml with `github_app:` and no
    `hosts:`, and the App's two config vars: no deploy key."""
    write_app(build, files)
    (build.app / "deploykey.yml").write_text(github.yml())
    assert "hosts:" not in github.yml()
    build.set_key(str(APP_ID), "GITHUB_APP_ID")
    build.set_key(github.key_text, "GITHUB_APP_PRIVATE_KEY")
    assert sorted(p.name for p in build.env_dir.iterdir()) == [
        "GITHUB_APP_ID",
        "GITHUB_APP_PRIVATE_KEY",
    ]


def commit(repositories: Path, repo: str) -> str:
    return run_git("--git-dir", str(repositories / f"{repo}.git"), "rev-parse", "v1.0^{commit}")


def assert_fetched_the_locked_commits(
    build: Build, github: GitHub, lockfile: str | None, output: str
) -> None:
    """Each repository fetched through the front end with the App's token, at the commit the
    lockfile pins: the one the developer locked on the sshd server, served here by its copy (a
    requirements.txt: at its tag v1.0, that same commit)."""
    for repo in LOCKED:
        locked_at = commit(build.server.root / "repos", repo).strip()
        assert commit(github.git.server.root / "repos", repo).strip() == locked_at
        if lockfile is not None:
            assert locked_at in (build.app / lockfile).read_text()
        found = f"locked at {locked_at[:7]}" if lockfile else f"v1.0 is {locked_at[:7]}"
        assert (
            f"via GitHub App {APP_ID}'s installation token -> {github.git.url}: ok, "
            f"{found} (fetched)"
        ) in output


def assert_one_narrowed_token_revoked(
    github: GitHub, output: str, before: int, fetches: int
) -> Token:
    """One token for the installation on acme, for exactly the two locked repositories (the
    installation has a third), contents: read, revoked when the fetch ended; the front end served
    those two only, and its last request was the fetch's own (with the token): nothing asked it
    for anything after the revocation."""
    (token,) = github.minted_since(before)
    assert sorted(token.repositories or []) == NAMES
    assert token.permissions == {"contents": "read"}
    assert token.revoked
    (installation,) = github.api.installations.values()
    assert (
        f"       minted an installation token for {OWNER} (installation {installation.id}): "
        f"{OWNER}/noindex-extra, {OWNER}/noindex-lib; contents: read; expires "
    ) in output
    assert f"       revoked the app token {OWNER} ({installation.id}): it opens nothing now" in (
        output
    )
    verdicts = [
        (uri.split("/")[2], status) for _m, uri, status in github.api.git_requests[fetches:]
    ]
    assert {repo for repo, status in verdicts if status == 204} == {f"{n}.git" for n in NAMES}
    # 401: git's first request for a repository, before it asks the credential helper.
    assert {repo for repo, _s in verdicts} == {f"{n}.git" for n in NAMES}, verdicts
    assert {status for _r, status in verdicts} <= {204, 401}, verdicts
    last = github.git.access_log().splitlines()[-1]
    assert last.startswith("x-access-token ") and last.endswith(" 200"), last
    return token


def key_dirs_holding(before: set[str], secrets: list[bytes]) -> list[str]:
    """The key dirs made since `before` holding any of `secrets` (another test run on this
    machine may have key dirs of its own at any moment, with its own keys)."""
    found = []
    for directory in sorted(key_dirs() - before):
        try:
            for path in Path(directory).rglob("*"):
                if path.is_file() and any(s in path.read_bytes() for s in secrets):
                    found.append(str(path))
        except FileNotFoundError:  # removed while we looked: another run's, gone
            continue
    return found


def assert_nothing_left(
    build: Build, github: GitHub, token: Token, output: str, before: set[str]
) -> None:
    """No ssh but deploykey's ran (none: the App fetches over HTTPS; the guard logs any other);
    neither the App's key nor the token in the app, the cache, HOME, the output, a key dir, a
    URL; the key gone from ENV_DIR (package build code can read it), the App's id kept."""
    assert installers.ssh_calls(build.root / "scratch" / "ssh-guard") == []
    assert key_dirs_holding(before, [*key_fragments(github.key_text), token.value.encode()]) == []
    assert files_with_key([build.app, build.cache, build.home], github.key_text) == []
    for root in (build.app, build.cache, build.home):
        assert not [
            p
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and token.value.encode() in p.read_bytes()
        ]
    assert not text_has_key(output, github.key_text)
    assert token.value not in output
    assert token.value not in github.git.access_log()
    assert all(token.value not in path for _m, path, _s in github.api.requests)
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()
    assert (build.env_dir / "GITHUB_APP_ID").exists()


def assert_imports(ran: subprocess.CompletedProcess[str], under: Path) -> None:
    """IMPORT's lines: each package's greeting, each imported from under `under`."""
    assert ran.returncode == 0, ran.stderr
    lines = [line.rpartition(" ") for line in ran.stdout.splitlines()]
    assert [greeting for greeting, _, _where in lines] == GREETINGS
    for _greeting, _, where in lines:
        assert Path(where).is_relative_to(under), where


# ---------------------------------------------------------------- bin/compile, DEPLOYKEY_INSTALL=venv


@pytest.mark.parametrize("manager", MANAGERS)
def test_compile_installs_the_lockfile_with_an_app_token(
    build: Build,
    github: GitHub,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    manager: str,
) -> None:
    """deploykey mints, fetches both locked commits into the mirrors, revokes, then runs the
    lockfile's own tool (found on PATH) into the venv, from the mirrors."""
    write_app_with_app_key(build, github, locked[manager])
    lockfile = LOCKFILES[manager]
    assert lockfile is not None
    pushed = (build.app / lockfile).read_bytes()
    before, tokens, fetches = key_dirs(), len(github.api.tokens), len(github.api.git_requests)
    links = tool_links(tools, build.root / "scratch")
    env = compile_env(build, tools, links, SSL_CERT_FILE=str(github.bundle), **REACH_GITHUB)
    result = run_compile(build, env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert_fetched_the_locked_commits(build, github, lockfile, result.stdout)
    token = assert_one_narrowed_token_revoked(github, result.stdout, tokens, fetches)
    lines = result.stdout.splitlines()
    how = "uv sync" if manager == "uv" else SHOWN[manager]
    installing = lines.index(
        f"-----> Installing {lockfile} into {build.app_path}/.venv (venv; DEPLOYKEY_INSTALL=venv) "
        f"with {how} ({lockfile} decides, as heroku-buildpack-python chooses), from the mirrors, "
        "with no key on the machine"
    )
    revoked = next(i for i, line in enumerate(lines) if "revoked the app token" in line)
    assert revoked < installing  # the tool, and every package's build code, ran after it
    commands = [line for line in lines[installing:] if line.startswith("       $ ")]
    assert commands[-1] == f"       $ {links}/{manager} {COMMANDS[manager].split(' ', 1)[1]}"
    assert_imports(build.run_app(IMPORT), build.app_path / ".venv")
    assert (build.app / lockfile).read_bytes() == pushed
    assert_nothing_left(build, github, token, out, before)


# ---------------------------------------------------------------- handoff to heroku/python


@pytest.mark.parametrize("manager", HANDED)
def test_handoff_to_heroku_python_with_an_app_token(
    build: Build,
    github: GitHub,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    buildpack: Path,
    manager: str,
) -> None:
    """bin/compile in its default mode on Heroku (no .heroku/python yet) mints, fetches, revokes
    and hands on only the mirrors' git settings; v351's `uv sync --locked` / `poetry sync` then
    install from them, with the token already dead."""
    write_app_with_app_key(build, github, locked[manager])
    lockfile = LOCKFILES[manager]
    before, tokens, fetches = key_dirs(), len(github.api.tokens), len(github.api.git_requests)
    scratch = build.root / "scratch"
    env = installers.heroku_environ(build.environ(SSL_CERT_FILE=str(github.bundle)), tools, scratch)
    compiled = subprocess.run(
        [str(buildpack / "bin" / "compile"), str(build.app), str(build.cache), str(build.env_dir)],
        env={**env, **REACH_GITHUB},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    export = buildpack / "export"
    assert (
        f"wrote {export}: the git settings for the next buildpack (on Heroku with no "
        ".heroku/python yet: the Python buildpack follows)"
    ) in compiled.stdout
    assert_fetched_the_locked_commits(build, github, lockfile, compiled.stdout)
    token = assert_one_narrowed_token_revoked(github, compiled.stdout, tokens, fetches)
    # Handed on: the mirrors, for both repositories; not the front end, nor any credential.
    handed = export.read_text()
    for repo in LOCKED:
        assert f"file://{build.cache}/deploykey/mirrors/github.com/{repo}.insteadOf" in handed
    assert github.git.url not in handed and github.api.url not in handed
    assert "GIT_SSH_COMMAND" not in handed and "credential" not in handed
    assert token.value not in handed

    requests, access = len(github.api.requests), github.git.access_log()
    python = installers.python_buildpack(
        build.app, build.cache, build.env_dir, env, tools, scratch, export=export
    )
    assert python.manager == manager
    assert python.result.returncode == 0, python.output
    assert_imports(python.python(IMPORT), python.python_home)
    # heroku/python asked GitHub for nothing: no token, no API call, no git request.
    assert len(github.api.tokens) == tokens + 1 and len(github.api.requests) == requests
    assert github.git.access_log() == access
    output = compiled.stdout + compiled.stderr + python.output
    assert_nothing_left(build, github, token, output, before)
