"""A GitHub App on a GitHub Enterprise Server behind a private CA (issue 24), as a user sets it up
from the README: `github_app:` with `host` and `api_url` (and `git_url`: the stand-in listens on
a port of its own, where a real server has 443), requirements kept as `git+ssh://git@HOST/...`,
no `hosts:` entry and no host key anywhere, and SSL_CERT_FILE naming the private CA alone.

The server is tests/support/githubapi.py's stand-in: its git front end (real nginx, git http-backend)
serves HTTPS with a certificate from a CA made when the tests run, and the REST API under /api/v3
as an Enterprise Server does. Its host is `localhost` (the name the certificate holds besides
127.0.0.1). Nothing here trusts that CA but what the README documents: SSL_CERT_FILE.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    APP_ID,
    APP_OWNER,
    APP_REPOS,
    BIN,
    Build,
    GitHub,
    flit_package,
    text_has_key,
)
from support import installers
from support.app_hooks import hook_env, python_buildpack_pip, run_hook
from support.ghes import HOST, REQUIREMENTS, enterprise_yml
from support.githubapp_builds import written_hooks
from support.heroku_apps import tools
from support.installers import Tools
from support.lockfile_apps import compile_env, run_compile, tool_links

__all__ = ["tools"]  # a fixture, from tests/support/heroku_apps.py


def enterprise_app(
    build: Build, github: GitHub, requirements: str = REQUIREMENTS, **yml: object
) -> None:
    (build.app / "requirements.txt").write_text(requirements)
    (build.app / "deploykey.yml").write_text(enterprise_yml(github, **yml))
    build.set_key(str(APP_ID), "GITHUB_APP_ID")
    build.set_key(github.key_text, "GITHUB_APP_PRIVATE_KEY")


def compile_enterprise(
    build: Build, github: GitHub, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """bin/compile as on Heroku (STACK), into a venv, SSL_CERT_FILE naming the private CA only."""
    environ = build.environ(
        SSL_CERT_FILE=str(github.api.ca_file), DEPLOYKEY_INSTALL="venv", STACK="heroku-24"
    )
    environ.update(env)
    return build.compile(*args, env={k: v for k, v in environ.items() if v})


def test_an_enterprise_server_with_a_private_ca_builds_as_the_readme_says(
    build: Build, github: GitHub
) -> None:
    """No host key for the Enterprise host (nothing goes over ssh), git trusts the CA that
    SSL_CERT_FILE names (Debian's git, libcurl with GnuTLS, does not read SSL_CERT_FILE), and
    the API is asked at HOST/api/v3."""
    enterprise_app(build, github)
    # README step 3 on Heroku: the CA committed with the app, SSL_CERT_FILE a config var naming
    # it (config vars reach bin/compile only as ENV_DIR's files).
    (build.app / "certs").mkdir()
    shutil.copy(github.api.ca_file, build.app / "certs" / "ghes-ca.pem")
    build.set_key("certs/ghes-ca.pem", "SSL_CERT_FILE")
    asked, before = len(github.api.requests), len(github.api.tokens)
    result = compile_enterprise(build, github, SSL_CERT_FILE="")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in result.stdout
    assert build.run_app("import private_utils, private_extra").returncode == 0
    (token,) = github.minted_since(before)
    assert sorted(token.repositories or []) == sorted(APP_REPOS) and token.revoked
    # The transport of each repository is said: HTTPS with the App's token, no ssh.
    assert f"{HOST}: no ssh (every repository there is fetched over HTTPS" in result.stdout
    assert result.stdout.count("(fetched over HTTPS)") == 2
    ca = build.app / "certs" / "ghes-ca.pem"
    assert f"SSL_CERT_FILE: {ca} ({build.env_dir / 'SSL_CERT_FILE'})" in result.stdout
    assert f"HTTPS: trusting the system store and SSL_CERT_FILE ({ca})" in result.stdout
    assert github.api.requests[asked:], "the API was asked through HOST/api/v3"
    assert not text_has_key(out, github.key_text) and token.value not in out
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()


@pytest.mark.parametrize("setting", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_the_doctor_says_which_transport_each_repository_uses(
    build: Build, github: GitHub, tmp_path: Path, setting: str
) -> None:
    """The doctor, with the CA named by SSL_CERT_FILE, or in a directory of PEM files (not
    rehashed) that SSL_CERT_DIR names."""
    enterprise_app(build, github)
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(github.api.ca_file, certs / "ghes-ca.pem")
    named = certs / "ghes-ca.pem" if setting == "SSL_CERT_FILE" else certs
    result = subprocess.run(
        [str(BIN / "deploykey"), "doctor", str(build.app)],
        env=build.environ(**{setting: str(named)}, ENV_DIR=str(build.env_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(fetched over HTTPS)") == 2
    assert result.stdout.count(f"via GitHub App {APP_ID}'s installation token") == 2


@pytest.mark.parametrize("given", ["nothing", "the system store only"])
def test_without_the_ca_the_error_is_a_certificate_error_naming_the_setting(
    build: Build, github: GitHub, given: str
) -> None:
    enterprise_app(build, github)
    result = compile_enterprise(
        build,
        github,
        SSL_CERT_FILE="" if given == "nothing" else "/etc/ssl/certs/ca-certificates.crt",
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "(tls::untrusted: README.md#tls-untrusted)" in out
    assert f"The certificate of {HOST}:" in out and "SSL_CERT_FILE" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("given", [False, True])
def test_a_token_fetch_over_https_trusts_the_same_setting(
    build: Build, github: GitHub, given: bool
) -> None:
    """A token (`tokens:`) for the server's git over HTTPS, no App: without the CA, git's
    refusal of the certificate is said as such, naming SSL_CERT_FILE (not "repository not
    found"); with it, git gets past TLS to the server, which refuses the token (not an App's)."""
    port = github.git.url.rsplit(":", 1)[1]
    build.set_key("not-a-live-token", "GHE_TOKEN")
    (build.app / "requirements.txt").write_text(
        f"private-utils @ git+https://{HOST}:{port}/{APP_OWNER}/private-utils.git@v1.0\n"
    )
    (build.app / "deploykey.yml").write_text(
        f"tokens:\n  GHE_TOKEN: {{host: '{HOST}:{port}', username: x-access-token}}\n"
    )
    ca = str(github.api.ca_file) if given else ""
    result = compile_enterprise(build, github, SSL_CERT_FILE=ca)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    untrusted = f"The certificate of {HOST}:{port} is not trusted"
    if given:
        assert untrusted not in out
        assert f"{HOST}:{port} refused the token GHE_TOKEN." in out
    else:
        assert untrusted in out and "server certificate verification failed" in out
        assert "set SSL_CERT_FILE to a PEM file holding that CA's certificate" in out
    assert not (build.env_dir / "GHE_TOKEN").exists()


def test_a_failed_app_lookup_removes_the_key_from_env_dir_too(build: Build, github: GitHub) -> None:
    """README: the key config vars leave this build's ENV_DIR "also when a fetch fails"; the
    App's key too, when GitHub says the App is not installed on the owner."""
    enterprise_app(build, github, f"lib @ git+ssh://git@{HOST}/elsewhere/lib.git@v1.0\n")
    result = compile_enterprise(build, github)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "(app::not-installed: README.md#app-not-installed)" in out
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()
    assert (build.env_dir / "GITHUB_APP_ID").exists()
    assert "removed GITHUB_APP_PRIVATE_KEY from" in result.stdout


@pytest.mark.parametrize("installation_id", [False, True])
def test_not_selected_names_exactly_the_repositories_it_cannot_read(
    build: Build, github: GitHub, installation_id: bool
) -> None:
    """private-utils is selected, private-secret is not: the error names private-secret only."""
    if f"{APP_OWNER}/private-secret" not in github.api.repositories:
        github.git.add_repo(APP_OWNER, "private-secret", flit_package("private_secret", "1.0"))
    requirements = (
        f"private-utils @ git+ssh://git@{HOST}/{APP_OWNER}/private-utils.git@v1.0\n"
        f"private-secret @ git+ssh://git@{HOST}/{APP_OWNER}/private-secret.git@v1.0\n"
    )
    installation = next(i for i in github.api.installations.values() if i.owner == APP_OWNER)
    extra = {"installation_id": installation.id} if installation_id else {}
    enterprise_app(build, github, requirements, **extra)
    result = compile_enterprise(build, github)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "(app::repository-not-selected: README.md#app-repository-not-selected)" in out
    said = [line for line in out.splitlines() if line.startswith(" !")]
    assert (
        f" !     The App's installation on {APP_OWNER} cannot read {APP_OWNER}/private-secret"
        in said
    )
    assert not [line for line in said if "private-utils" in line], said
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()


def test_two_owners_with_two_installations(build: Build, github: GitHub) -> None:
    """An installation id given for acme: initech's installation is found for initech, not
    acme's used for it (which GitHub refuses as "not selected")."""
    if "initech/tps" not in github.api.repositories:
        github.git.add_repo("initech", "tps", flit_package("tps", "1.0"))
        github.api.install(APP_ID, "initech", ["tps"])
    acme = next(i for i in github.api.installations.values() if i.owner == APP_OWNER)
    requirements = REQUIREMENTS + f"tps @ git+ssh://git@{HOST}/initech/tps.git@v1.0\n"
    enterprise_app(build, github, requirements, installation_id=acme.id)
    before = len(github.api.tokens)
    result = compile_enterprise(build, github)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Successfully installed private-extra-1.0 private-utils-1.0 tps-1.0" in result.stdout
    tokens = github.minted_since(before)
    assert sorted((t.installation, tuple(sorted(t.repositories or []))) for t in tokens) == sorted(
        [
            (acme.id, tuple(sorted(APP_REPOS))),
            (
                next(i.id for i in github.api.installations.values() if i.owner == "initech"),
                ("tps",),
            ),
        ]
    )
    assert all(t.revoked for t in tokens)


# ---------------------------------------------------------------- the installers trust it too


@pytest.fixture
def private_index(github: GitHub, build: Build, tmp_path: Path) -> Iterator[str]:
    """A package index (PEP 503 "simple" pages) over HTTPS on 127.0.0.1, its certificate from the
    same private CA: flit_core from the tests' wheelhouse, as a private mirror of PyPI would serve
    it. Its URL names the host `localhost`."""
    wheel = next(build.wheelhouse.glob("flit_core-*.whl"))
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    shutil.copy(wheel, root / "files" / wheel.name)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / "flit-core").mkdir(parents=True)
    (root / "simple" / "flit-core" / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a>'
        "</body></html>\n"
    )
    (root / "simple" / "index.html").write_text('<a href="flit-core/">flit-core</a>\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(github.api.root / "server.pem", github.api.root / "server-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def test_poetry_trusts_the_ca_ssl_cert_file_names(
    build: Build, github: GitHub, tools: Tools, private_index: str
) -> None:
    """Issue 24 item 6: Poetry's requests reads certifi's bundle, not the system store nor
    SSL_CERT_FILE; deploykey hands it REQUESTS_CA_BUNDLE, one bundle of the system store and the
    CA SSL_CERT_FILE names, so `poetry sync` reaches an index behind the private CA."""
    (build.app / "requirements.txt").unlink()
    (build.app / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["flit-core==3.9.0"]\n\n'
        "[tool.poetry]\npackage-mode = false\n\n"
        f'[[tool.poetry.source]]\nname = "private"\nurl = "{private_index}"\n'
        'priority = "primary"\n'
    )
    (build.app / "deploykey.yml").write_text(enterprise_yml(github))
    build.set_key(str(APP_ID), "GITHUB_APP_ID")
    build.set_key(github.key_text, "GITHUB_APP_PRIVATE_KEY")
    reach = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    # The developer locks it, with the CA where their Poetry reads it.
    scratch = build.root / "scratch"
    lock_env = installers.tool_env(tools, build.home, scratch)
    lock_env.update(reach, REQUESTS_CA_BUNDLE=str(github.bundle))
    locked = subprocess.run(
        [str(tools.poetry), "lock"], cwd=build.app, env=lock_env, capture_output=True, text=True
    )
    assert locked.returncode == 0, locked.stdout + locked.stderr
    links = tool_links(tools, scratch)
    env = compile_env(build, tools, links, SSL_CERT_FILE=str(github.api.ca_file), **reach)
    result = run_compile(build, env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    ran = build.run_app("import flit_core; print(flit_core.__version__)")
    assert ran.stdout.strip() == "3.9.0", ran.stderr
    assert not text_has_key(out, github.key_text)


def test_fetch_then_install_fetched_as_in_a_dockerfile(
    build: Build, github: GitHub, tmp_path: Path
) -> None:
    """examples/docker's two steps: `deploykey fetch` with the App's key as a secret (--env-dir
    stands for its RUN's secret mount) and `ENV SSL_CERT_FILE=` naming the CA; then `install
    --fetched` with no key, from the mirrors, asking the server nothing."""
    enterprise_app(build, github)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "GITHUB_APP_PRIVATE_KEY").write_text(github.key_text)
    cache, venv = tmp_path / "mount", tmp_path / "venv"
    cache.mkdir()
    env = build.environ(SSL_CERT_FILE=str(github.api.ca_file), GITHUB_APP_ID=str(APP_ID))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "deploykey"), *args], cwd=build.app, env=env, capture_output=True, text=True
        )

    before = len(github.api.tokens)
    fetched = run("fetch", "--cache-dir", str(cache), "--env-dir", str(secrets))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    (token,) = github.minted_since(before)
    assert token.revoked
    access = github.git.access_log()
    installed = run("install", "--fetched", "--cache-dir", str(cache), "--venv", str(venv))
    out = installed.stdout + installed.stderr
    assert installed.returncode == 0, out
    assert list(venv.glob("lib/python3*/site-packages/private_utils"))
    assert github.git.access_log() == access
    assert token.value not in out and not text_has_key(out, github.key_text)


def test_app_hooks_on_an_enterprise_server(build: Build, github: GitHub) -> None:
    """heroku-buildpack-python's hooks: pre_compile reads SSL_CERT_FILE from the config vars
    (ENV_DIR) as compile does, fetches over HTTPS with no host key, and revokes before pip."""
    enterprise_app(build, github)
    (build.app / "certs").mkdir()
    shutil.copy(github.api.ca_file, build.app / "certs" / "ghes-ca.pem")
    build.set_key("certs/ghes-ca.pem", "SSL_CERT_FILE")
    written_hooks(build)
    env = hook_env(
        build,
        None,
        STACK="heroku-24",
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_APP_PRIVATE_KEY=github.key_text.rstrip("\n"),
        SSL_CERT_FILE="certs/ghes-ca.pem",  # sub_env exports every config var to the hooks
    )
    before = len(github.api.tokens)
    pre = run_hook(build, "pre_compile", env)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    (token,) = github.minted_since(before)
    assert token.revoked and sorted(token.repositories or []) == sorted(APP_REPOS)
    pip = python_buildpack_pip(build)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in pip.stdout
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()


@pytest.mark.parametrize("named", ["certs/missing.pem", "requirements.txt"])
def test_a_setting_that_names_no_certificate_is_said(
    build: Build, github: GitHub, named: str
) -> None:
    """SSL_CERT_FILE as a config var naming a file the app lacks, or one with no certificate."""
    enterprise_app(build, github)
    build.set_key(named, "SSL_CERT_FILE")
    result = compile_enterprise(build, github, SSL_CERT_FILE="")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "(tls::setting: README.md#tls-setting)" in out
    assert f"SSL_CERT_FILE names {build.app / named}, which deploykey cannot use" in out
    assert "Traceback" not in out
    assert not (build.env_dir / "GITHUB_APP_PRIVATE_KEY").exists()
