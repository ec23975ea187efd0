"""GitHub App installation tokens, end to end: bin/compile (and the doctor) against a stand-in for
GitHub's App API that implements its documented contract with real RS256 and TLS
(tests/githubapi.py), and a git front end (real nginx and git http-backend) that lets through only
a live, unrevoked token covering the repository. The requirements are written as for github.com;
only `api_url` and `git_url` (as for GitHub Enterprise Server) point at the stand-ins.

The stand-in's TLS certificate is from a CA made at run time: deploykey trusts the system store,
so its processes get SSL_CERT_FILE naming the system bundle plus that CA (as an Enterprise
Server's private CA is added to a machine's store); test_the_system_store_is_what_is_trusted shows
that without it the CA is refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import (
    APP_ID,
    APP_OWNER,
    APP_REPOS,
    APP_REQUIREMENTS,
    Build,
    GitHub,
    files_with_key,
    flit_package,
    key_dirs,
    text_has_key,
)
from githubapi import make_app_key


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


def clone(github: GitHub, token: str, repo: str, into: Path) -> subprocess.CompletedProcess[str]:
    """A real `git clone` through the front end with a token, from a credential helper as
    deploykey's gives it (never in a URL)."""
    answer = into.with_name(into.name + ".credentials")
    answer.write_text(f"username=x-access-token\npassword={token}\n")
    return subprocess.run(
        [
            "git",
            "-c",
            "credential.helper=",
            "-c",
            f"credential.helper=!f() {{ cat '{answer}'; }}; f",
            "clone",
            "--quiet",
            f"{github.git.url}/{repo}.git",
            str(into),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": str(into.parent)},
    )


def test_a_pip_app_installs_with_a_token_for_exactly_its_repositories_then_revoked(
    build: Build, github: GitHub
) -> None:
    app_build(build, github)
    before, dirs = len(github.api.tokens), key_dirs()
    result = compile_app(build, github)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in result.stdout
    ran = build.run_app("import private_utils, private_extra; print('ok')")
    assert ran.stdout.strip() == "ok", ran.stderr
    # One token, for the installation on acme, narrowed to the two repositories and to contents
    # read (the installation can read a third), and revoked when the fetch ended.
    (token,) = github.minted_since(before)
    assert sorted(token.repositories or []) == sorted(APP_REPOS)
    assert token.permissions == {"contents": "read"}
    assert token.revoked
    assert f"minted an installation token for {APP_OWNER} (installation " in result.stdout
    assert f"revoked the app token {APP_OWNER} (" in result.stdout
    # Revoked means dead: the front end refuses it now, for a repository it was minted for.
    refused = clone(github, token.value, f"{APP_OWNER}/private-utils", build.root / "after")
    assert refused.returncode != 0 and "Authentication failed" in refused.stderr
    # Narrowed means narrowed: alive again (the stand-in forgets the revocation), it opens its
    # repositories and not the third one the installation has.
    token.revoked = False
    try:
        assert (
            clone(github, token.value, f"{APP_OWNER}/private-utils", build.root / "a").returncode
            == 0
        )
        other = clone(github, token.value, f"{APP_OWNER}/unrelated", build.root / "b")
        assert other.returncode != 0 and "not found" in other.stderr
    finally:
        token.revoked = True
    # The JWT and the token travelled in headers only; nothing of the App's key or the token is
    # in the slug, the cache, HOME, the output, or a key dir left behind.
    assert all(token.value not in path for _m, path, _s in github.api.requests)
    assert token.value not in github.git.access_log()
    assert token.value not in out
    assert files_with_key([build.app, build.cache, build.home], github.key_text) == []
    assert not text_has_key(out, github.key_text)
    for root in (build.app, build.cache, build.home):
        assert not [
            p for p in root.rglob("*") if p.is_file() and token.value.encode() in p.read_bytes()
        ]
    assert key_dirs() - dirs == set()
    # Heroku's ENV_DIR loses the App's key (package build code can read it), keeps the id.
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()
    assert (build.env_dir / "GITHUB_APP_ID").exists()


def test_a_dependency_named_by_a_private_repository_gets_a_token_too(
    build: Build, github: GitHub
) -> None:
    """private-deep names private-utils over ssh in its pyproject: fetched with a second token."""
    deep = flit_package("private_deep", "1.0")
    deep["pyproject.toml"] = deep["pyproject.toml"].replace(
        "dependencies = []",
        f'dependencies = ["private-utils @ git+ssh://git@github.com/{APP_OWNER}/private-utils.git@v1.0"]',
    )
    assert "private-utils @" in deep["pyproject.toml"]
    github.git.add_repo(APP_OWNER, "private-deep", deep)
    installation = next(i for i in github.api.installations.values() if i.owner == APP_OWNER)
    installation.repositories = [*(installation.repositories or []), "private-deep"]
    app_build(
        build,
        github,
        f"private-deep @ git+ssh://git@github.com/{APP_OWNER}/private-deep.git@v1.0\n",
    )
    before = len(github.api.tokens)
    result = compile_app(build, github)
    assert result.returncode == 0, result.stdout + result.stderr
    tokens = github.minted_since(before)
    assert [t.repositories for t in tokens] == [["private-deep"], ["private-utils"]]
    assert all(t.revoked for t in tokens)
    assert "Successfully installed private-deep-1.0 private-utils-1.0" in result.stdout


def test_the_doctor_mints_checks_and_revokes(build: Build, github: GitHub) -> None:
    app_build(build, github)
    before = len(github.api.tokens)
    result = subprocess.run(
        [
            str(Path(__file__).parent.parent / "bin" / "deploykey"),
            "doctor",
            str(build.app),
            str(build.env_dir),
        ],
        env=build.environ(SSL_CERT_FILE=str(github.bundle)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("via GitHub App 424242's installation token") == 2
    (token,) = github.minted_since(before)
    assert token.revoked
    assert list(build.cache.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "slug", "said"),
    [
        (
            "not installed",
            "app::not-installed",
            "https://github.com/apps/deploykey-test/installations/new",
        ),
        (
            "not selected",
            "app::repository-not-selected",
            "/organizations/acme/settings/installations/",
        ),
        ("clock", "app::clock", "This machine's clock is 3600 s behind GitHub's"),
        ("wrong key", "app::rejected", "A JSON web token could not be decoded"),
        ("rate limited", "app::rate-limited", "The limit resets at"),
        ("unreachable", "app::unreachable", "Connection refused"),
        ("untrusted", "app::unreachable", "CERTIFICATE_VERIFY_FAILED"),
        ("ssh key", "app::key-not-rsa", "ED25519"),
        ("no id", "app::incomplete", "GITHUB_APP_PRIVATE_KEY is set, but not GITHUB_APP_ID"),
    ],
)
def test_what_goes_wrong_is_named_with_its_fix(
    build: Build, github: GitHub, tmp_path: Path, case: str, slug: str, said: str
) -> None:
    env = build.environ(SSL_CERT_FILE=str(github.bundle), DEPLOYKEY_INSTALL="venv")
    app_build(build, github)
    if case == "not installed":
        app_build(build, github, "lib @ git+ssh://git@github.com/elsewhere/lib.git@v1.0\n")
    elif case == "not selected":
        github.api.add_repository(APP_OWNER, "private-secret")
        app_build(
            build, github, f"s @ git+ssh://git@github.com/{APP_OWNER}/private-secret.git@v1.0\n"
        )
    elif case == "clock":
        github.api.clock_offset = 3600
    elif case == "wrong key":
        make_app_key(tmp_path / "other.pem")
        build.set_key((tmp_path / "other.pem").read_text(), "GITHUB_APP_PRIVATE_KEY")
    elif case == "rate limited":
        github.api.rate_limited = True
    elif case == "unreachable":
        app_build(build, github, api_url="https://127.0.0.1:9")
    elif case == "untrusted":
        env.pop("SSL_CERT_FILE")
    elif case == "ssh key":
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")]
        subprocess.run(argv, check=True)
        build.set_key((tmp_path / "k").read_text(), "GITHUB_APP_PRIVATE_KEY")
    elif case == "no id":
        (build.env_dir / "GITHUB_APP_ID").unlink()
    before = len(github.api.tokens)
    try:
        result = build.compile(env=env)
    finally:
        github.api.clock_offset = 0
        github.api.rate_limited = False
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"({slug}: README.md#{slug.replace('::', '-')})" in out
    assert said in out
    assert not text_has_key(out, github.key_text)
    assert all(t.revoked for t in github.minted_since(before))
    assert not list(build.app.glob(".venv/lib/*/site-packages/private_utils"))


def test_a_failed_fetch_still_revokes(build: Build, github: GitHub) -> None:
    app_build(
        build,
        github,
        f"private-utils @ git+ssh://git@github.com/{APP_OWNER}/private-utils.git@v9\n",
    )
    before = len(github.api.tokens)
    result = compile_app(build, github)
    assert result.returncode == 1
    assert "has no tag or branch `v9`" in result.stdout + result.stderr
    (token,) = github.minted_since(before)
    assert token.revoked


def test_the_system_store_is_what_is_trusted(build: Build, github: GitHub) -> None:
    """Without the stand-in's CA in the store deploykey trusts, its certificate is refused: no
    bundle of deploykey's own, no verification turned off."""
    app_build(build, github)
    result = build.compile("--dry-run", env=build.environ())
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr
    result = build.compile("--dry-run", env=build.environ(SSL_CERT_FILE=str(github.bundle)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mints a token per installation" in result.stdout
