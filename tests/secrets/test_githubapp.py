"""GitHub App installation tokens, end to end: bin/compile (and the doctor) against a stand-in for
GitHub's App API that implements its documented contract with real RS256 and TLS
(tests/support/githubapi.py), and a git front end (real nginx and git http-backend) that lets through only
a live, unrevoked token covering the repository. The requirements are written as for github.com;
only `api_url` and `git_url` (as for GitHub Enterprise Server) point at the stand-ins.

The stand-in's TLS certificate is from a CA made at run time: deploykey trusts the system store,
so its processes get SSL_CERT_FILE naming the system bundle plus that CA (as an Enterprise
Server's private CA is added to a machine's store); test_the_system_store_is_what_is_trusted shows
that without it the CA is refused.
"""

from __future__ import annotations

import base64
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    APP_ID,
    APP_OWNER,
    APP_REPOS,
    APP_REQUIREMENTS,
    BIN,
    Build,
    GitHub,
    files_with_key,
    flit_package,
    key_dirs,
    silent_server,
    text_has_key,
)
from deploykey.core import sources
from deploykey.core.errors import UserError
from deploykey.secrets import config, githubapp
from support.app_hooks import hook_env, python_buildpack_pip, run_hook
from support.githubapi import make_app_key
from support.githubapp_builds import app_build, compile_app, written_hooks
from support.hostile import HOSTILE_BACKEND, take_loot

OWNER, REPOS, REQUIREMENTS = APP_OWNER, APP_REPOS, APP_REQUIREMENTS


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
        env={
            "PATH": "/usr/bin:/bin",
            "GIT_TERMINAL_PROMPT": "0",
            "HOME": str(into.parent),
            # The front end's CA, as git reads it (Debian's git reads no SSL_CERT_FILE).
            "GIT_SSL_CAINFO": str(github.bundle),
        },
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
            str(Path(__file__).parents[2] / "bin" / "deploykey"),
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
        ("clock", "app::clock", "s behind GitHub's (its Date header)"),
        ("wrong key", "app::rejected", "A JSON web token could not be decoded"),
        ("rate limited", "app::rate-limited", "The limit resets at"),
        ("unreachable", "app::unreachable", "Connection refused"),
        ("untrusted", "tls::untrusted", "is not trusted: unable to get local issuer certificate"),
        ("ssh key", "app::key-not-rsa", "ED25519"),
        ("no contents", "app::no-contents", "the installation 4"),
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
    elif case == "no contents":  # installed with Metadata read only
        if "readers/lib" not in github.api.repositories:
            github.git.add_repo("readers", "lib", flit_package("lib", "1.0"))
            github.api.install(APP_ID, "readers", ["lib"], permissions={"metadata": "read"})
        app_build(build, github, "lib @ git+ssh://git@github.com/readers/lib.git@v1.0\n")
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
    if case == "clock":  # the Date header is to the second
        seconds = re.search(r"clock is (\d+) s behind", out)
        assert seconds is not None and 3595 <= int(seconds.group(1)) <= 3605, out
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
    assert "(tls::untrusted: README.md#tls-untrusted)" in result.stdout + result.stderr
    result = build.compile("--dry-run", env=build.environ(SSL_CERT_FILE=str(github.bundle)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mints a token per installation" in result.stdout


def test_app_hooks_mint_and_revoke_within_pre_compile(build: Build, github: GitHub) -> None:
    """heroku-buildpack-python's hooks: the token is minted and revoked inside pre_compile, before
    pip runs; post_compile has no token to revoke, and scans for the App's key."""
    app_build(build, github)
    written_hooks(build)
    env = hook_env(
        build,
        None,
        SSL_CERT_FILE=str(github.bundle),
        STACK="heroku-24",
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_APP_PRIVATE_KEY=github.key_text.rstrip("\n"),
    )
    before, dirs = len(github.api.tokens), key_dirs()
    pre = run_hook(build, "pre_compile", env)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    (token,) = github.minted_since(before)
    assert token.revoked and sorted(token.repositories or []) == sorted(REPOS)
    assert key_dirs() - dirs == set()
    pip = python_buildpack_pip(build)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in pip.stdout
    post = run_hook(build, "post_compile", env)
    assert post.returncode == 0, post.stdout + post.stderr
    # pre_compile checked the app and the cache, then removed the key from ENV_DIR (Heroku's,
    # which pip's build code can read): post_compile finds nothing left to look for.
    assert "no key material found" in pre.stdout
    assert "removed GITHUB_APP_PRIVATE_KEY from" in pre.stdout
    assert "nothing to scan for" in post.stdout
    out = pre.stdout + pre.stderr + post.stdout + post.stderr
    assert token.value not in out and not text_has_key(out, github.key_text)
    assert files_with_key([build.app, build.cache, build.home], github.key_text) == []


def test_ci_setup_then_the_jobs_own_install(build: Build, github: GitHub, tmp_path: Path) -> None:
    """A CI job: the App's id and key as CI variables; setup fetches (minting and revoking),
    makes the shell forget the key, and the job's own pip installs from the mirrors."""
    app_build(build, github)
    venv = tmp_path / "venv"
    script = f"""
        set -euo pipefail
        eval "$({BIN}/deploykey setup --shell)"
        echo "during: ${{GITHUB_APP_PRIVATE_KEY:-unset}}"
        {sys.executable} -m venv {venv}
        {venv}/bin/pip install --no-cache-dir --no-input -r requirements.txt
        eval "$({BIN}/deploykey cleanup --shell)"
    """
    env = build.environ(
        SSL_CERT_FILE=str(github.bundle),
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_APP_PRIVATE_KEY=github.key_text,
        CI="true",
    )
    before = len(github.api.tokens)
    result = subprocess.run(
        ["bash", "-c", script], cwd=build.app, env=env, capture_output=True, text=True
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "during: unset" in result.stdout
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in result.stdout
    (token,) = github.minted_since(before)
    assert token.revoked
    assert token.value not in out and not text_has_key(out, github.key_text)
    assert files_with_key([build.app, venv, build.home], github.key_text) == []


def test_install_fetched_refuses_the_apps_key(build: Build, github: GitHub) -> None:
    app_build(build, github)
    result = subprocess.run(
        [str(BIN / "deploykey"), "install", "--fetched", "--cache-dir", str(build.cache)],
        cwd=build.app,
        env=build.environ(GITHUB_APP_PRIVATE_KEY=github.key_text),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "(fetch::key-present: README.md#fetch-key-present)" in result.stderr
    assert "GITHUB_APP_PRIVATE_KEY" in result.stderr


def test_a_hostile_dependency_finds_neither_the_apps_key_nor_a_live_token(
    build: Build, github: GitHub
) -> None:
    """tests/attacks/test_hostile.py's backend, served by the App: while it builds, it searches every
    process, the env dir, /dev/shm, TMPDIR, HOME and git's credential helpers."""
    if f"{OWNER}/hostile" not in github.api.repositories:
        github.git.add_repo(
            OWNER,
            "hostile",
            {
                **flit_package("hostile", "1.0", backend="hostile_backend"),
                "hostile_backend.py": HOSTILE_BACKEND,
            },
        )
    installation = next(i for i in github.api.installations.values() if i.owner == OWNER)
    installation.repositories = [*(installation.repositories or []), "hostile"]
    app_build(build, github, f"hostile @ git+ssh://git@github.com/{OWNER}/hostile.git@v1.0\n")
    before = len(github.api.tokens)
    result = compile_app(build, github)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    loot = take_loot(build)
    assert b"== environ" in loot and b"== git config" in loot and b"== cmdline" in loot
    assert str(build.env_dir).encode() in loot
    (token,) = github.minted_since(before)
    assert token.revoked
    assert token.value.encode() not in loot
    assert not text_has_key(loot.decode("utf-8", "replace"), github.key_text)
    assert files_with_key([build.app, build.cache, build.home], github.key_text) == []


def test_a_given_installation_id_is_used_as_it_is(build: Build, github: GitHub) -> None:
    installation = next(i for i in github.api.installations.values() if i.owner == OWNER)
    app_build(build, github, installation_id=installation.id)
    asked = len(github.api.requests)
    result = compile_app(build, github)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = [path for _method, path, _status in github.api.requests[asked:]]
    assert not [path for path in paths if path.endswith("/installation")]
    assert f"/app/installations/{installation.id}/access_tokens" in paths


def test_github_enterprise_server_defaults(tmp_path: Path) -> None:
    (tmp_path / "deploykey.yml").write_text("github_app: {host: GitHub.Example.com}\n")
    pem = tmp_path / "app.pem"
    make_app_key(pem)
    env = sources.EnvSource(
        tmp_path, False, {"GITHUB_APP_ID": b"7", "GITHUB_APP_PRIVATE_KEY": pem.read_bytes()}
    )
    app = githubapp.read(env, config.load(tmp_path, env))
    assert app is not None
    assert (app.host, app.api_url, app.git_url) == (
        "github.example.com",
        "https://github.example.com/api/v3",
        "https://github.example.com",
    )
    # As GitHub lists the App's keys: `openssl rsa -pubout -outform DER | openssl sha256`.
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"], capture_output=True
    ).stdout
    digest = subprocess.run(["openssl", "sha256", "-binary"], input=der, capture_output=True)
    assert app.fingerprint == "SHA256:" + base64.b64encode(digest.stdout).decode()


@pytest.mark.parametrize(
    ("yml", "detail"),
    [
        ("github_app: {api_url: 'http://api.example.com'}", "api_url must be an https:// URL"),
        ("github_app: {app_id: 'twelve'}", "app_id must be the App's number"),
        ("github_app: {secret: x}", "unknown setting 'secret'"),
    ],
)
def test_github_app_settings_are_checked(tmp_path: Path, yml: str, detail: str) -> None:
    (tmp_path / "deploykey.yml").write_text(yml + "\n")
    with pytest.raises(UserError) as raised:
        config.load(tmp_path, None)
    assert detail in raised.value.title


def test_a_binding_of_type_github_app(tmp_path: Path) -> None:
    """CNB: the App as a service binding (servicebinding.io), like a key of type ssh-auth."""
    binding = tmp_path / "bindings" / "our-app"
    binding.mkdir(parents=True)
    (binding / "type").write_text("github-app\n")
    (binding / "app-id").write_text("77\n")
    make_app_key(binding / "private-key")
    env = sources.EnvSource(tmp_path, False, {}).with_bindings(tmp_path / "bindings")
    app = githubapp.read(env, config.load(tmp_path, env))
    assert app is not None and app.app_id == "77"
    assert app.key.source == f"the binding our-app ({binding / 'private-key'})"


@pytest.fixture
def silent_git() -> Iterator[str]:
    """A git front end that accepts every connection and never sends a byte (a stuck proxy)."""
    with silent_server() as (port, _accepted):
        yield f"http://127.0.0.1:{port}"


def test_a_signal_during_the_fetch_revokes_the_token(
    build: Build, github: GitHub, silent_git: str
) -> None:
    app_build(build, github, git_url=silent_git)
    before = len(github.api.tokens)
    env = build.environ(SSL_CERT_FILE=str(github.bundle), DEPLOYKEY_INSTALL="venv")
    argv = [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir)]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    said = []
    for line in process.stdout:
        said.append(line)
        if "minted an installation token" in line:
            time.sleep(1)  # git is connecting to the silent front end now
            process.send_signal(signal.SIGTERM)
            break
    said += process.stdout.readlines()
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, "".join(said)
    (token,) = github.minted_since(before)
    assert token.revoked, "".join(said)
    assert "revoked the app token" in "".join(said)


def test_a_front_end_that_never_answers_fails_after_20_seconds(
    build: Build, github: GitHub, silent_git: str
) -> None:
    """git has no timeout of its own; http.lowSpeedTime gives it one. The subprocess timeout
    only tells a hang from an answer."""
    app_build(build, github, git_url=silent_git)
    before = len(github.api.tokens)
    result = build.compile(
        env=build.environ(SSL_CERT_FILE=str(github.bundle), DEPLOYKEY_INSTALL="venv"), timeout=180
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Operation too slow" in out
    assert all(token.revoked for token in github.minted_since(before))


def test_a_warm_rebuild_mints_no_token(build: Build, github: GitHub) -> None:
    """The mirrors in the build cache already hold both tags: the fetch asks no host, so the
    App asks GitHub for nothing."""
    app_build(build, github)
    first = compile_app(build, github)
    assert first.returncode == 0, first.stdout + first.stderr
    build.set_key(github.key_text, "GITHUB_APP_PRIVATE_KEY")  # Heroku's next build's ENV_DIR
    before, asked = len(github.api.tokens), len(github.api.requests)
    again = compile_app(build, github)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("(in the mirror, no network)") == 2
    assert github.minted_since(before) == []
    assert github.api.requests[asked:] == []


@pytest.fixture
def flaky_api(github: GitHub) -> Iterator[tuple[str, list[int]]]:
    """A TCP relay to the API stand-in that cuts its first connection at once (a reset on the way,
    a TLS stream cut short) and relays the others byte for byte."""
    relay = socket.socket()
    relay.bind(("127.0.0.1", 0))
    relay.listen(16)
    port = int(github.api.url.rsplit(":", 1)[1])
    accepted: list[int] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def serve() -> None:
        while True:
            try:
                client, _ = relay.accept()
            except OSError:
                return
            accepted.append(1)
            if len(accepted) == 1:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.1:{relay.getsockname()[1]}", accepted
    relay.close()


def test_a_connection_cut_before_the_request_is_tried_again(
    build: Build, github: GitHub, flaky_api: tuple[str, list[int]]
) -> None:
    url, accepted = flaky_api
    app_build(build, github, api_url=url)
    before = len(github.api.tokens)
    result = compile_app(build, github)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(accepted) > 1
    (token,) = github.minted_since(before)
    assert token.revoked
