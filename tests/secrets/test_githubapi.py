"""The GitHub stand-in (githubapi.py) keeps GitHub's App-token contract, so the product's tests prove
something: JWTs are checked with real RS256 signatures and GitHub's clock rules, tokens are narrowed
and revoked as documented, and the git front end lets only a live token fetch the repositories it
covers, through the real git, nginx and git http-backend.

The JWTs here are signed with `cryptography` directly, not by the product's code.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.githubapi import GitHubAPI, GitHubGit, make_app_key

APP_ID = 31337
CLIENT_ID = "Iv23liDeployKeyTest"


@pytest.fixture(scope="module")
def app_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("app") / "deploykey-test.private-key.pem"
    return path, make_app_key(path)


@pytest.fixture
def api(tmp_path: Path, app_key: tuple[Path, bytes]) -> Iterator[GitHubAPI]:
    server = GitHubAPI.start(tmp_path / "api")
    server.add_app(APP_ID, app_key[1], client_id=CLIENT_ID)
    server.install(APP_ID, "acme", ["utils", "models"])
    yield server
    server.stop()


@pytest.fixture
def github(api: GitHubAPI) -> Iterator[GitHubGit]:
    git = GitHubGit.start(api)
    git.add_repo("acme", "utils", {"README": "utils\n"})
    git.add_repo("acme", "models", {"README": "models\n"})
    yield git
    git.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key_path: Path, claims: dict[str, Any]) -> str:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    head = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(signature)}"


def app_jwt(key_path: Path, iss: Any = APP_ID, iat: int = -60, exp: int = 540) -> str:
    """The JWT the docs describe: iat backdated 60 s, exp within 10 minutes."""
    now = int(time.time())
    return sign(key_path, {"iat": now + iat, "exp": now + exp, "iss": iss})


def call(
    api: GitHubAPI,
    method: str,
    path: str,
    auth: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPMessage]:
    """One HTTPS request, verified against the stand-in's CA, as a client that sends what it is
    told (no default User-Agent)."""
    context = ssl.create_default_context(cafile=str(api.ca_file))
    host, port = api.url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    sent = {"User-Agent": "deploykey-tests", "Accept": "application/vnd.github+json"}
    sent |= headers or {}
    if auth:
        sent["Authorization"] = auth
    payload = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=payload, headers={k: v for k, v in sent.items() if v})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    kind = response.headers.get("Content-Type", "")
    answer = json.loads(raw) if raw and kind.startswith("application/json") else raw.decode()
    return response.status, answer, response.headers


def refusal(
    status: int, message: str, docs: str = "https://docs.github.com/rest"
) -> dict[str, str]:
    return {"message": message, "documentation_url": docs, "status": str(status)}


def mint(api: GitHubAPI, key: Path, installation: int, **body: Any) -> tuple[int, Any]:
    path = f"/app/installations/{installation}/access_tokens"
    status, answer, _ = call(api, "POST", path, f"Bearer {app_jwt(key)}", body)
    return status, answer


# ---------------------------------------------------------------------------------- the App JWT


@pytest.mark.parametrize("iss", [APP_ID, str(APP_ID), CLIENT_ID])
def test_the_app_is_found_by_a_jwt_naming_its_id_or_client_id(
    api: GitHubAPI, app_key: tuple[Path, bytes], iss: Any
) -> None:
    status, answer, headers = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0], iss=iss)}")
    assert (status, answer["id"], answer["client_id"]) == (200, APP_ID, CLIENT_ID)
    assert headers["X-GitHub-Api-Version-Selected"] == "2022-11-28"  # the default version


def test_a_jwt_signed_by_another_key_is_refused(api: GitHubAPI, tmp_path: Path) -> None:
    make_app_key(tmp_path / "other.pem")
    status, answer, _ = call(api, "GET", "/app", f"Bearer {app_jwt(tmp_path / 'other.pem')}")
    assert (status, answer) == (401, refusal(401, "A JSON web token could not be decoded"))


def test_an_exp_more_than_ten_minutes_ahead_is_refused(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    status, answer, _ = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0], exp=602)}")
    message = "'Expiration time' claim ('exp') is too far in the future"
    assert (status, answer) == (401, refusal(401, message))
    assert call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0], exp=600)}")[0] == 200


def test_an_expired_jwt_is_refused(api: GitHubAPI, app_key: tuple[Path, bytes]) -> None:
    jwt = app_jwt(app_key[0], iat=-700, exp=-100)
    status, answer, _ = call(api, "GET", "/app", f"Bearer {jwt}")
    message = (
        "'Expiration time' claim ('exp') must be a numeric value representing the future time"
        " at which the assertion expires"
    )
    assert (status, answer) == (401, refusal(401, message))


def test_a_server_clock_behind_refuses_iat_and_shows_its_time(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    api.clock_offset = -90
    status, answer, headers = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0])}")
    message = (
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion"
        " was issued"
    )
    assert (status, answer) == (401, refusal(401, message))
    behind = time.time() - parsedate_to_datetime(headers["Date"]).timestamp()
    assert 85 <= behind <= 95  # octokit corrects its clock from this header


def test_a_jwt_naming_no_app_is_not_found(api: GitHubAPI, app_key: tuple[Path, bytes]) -> None:
    status, answer, _ = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0], iss=4040)}")
    assert (status, answer) == (404, refusal(404, "Integration not found"))


def test_a_jwt_goes_with_bearer_only(api: GitHubAPI, app_key: tuple[Path, bytes]) -> None:
    status, answer, _ = call(api, "GET", "/app", f"token {app_jwt(app_key[0])}")
    assert (status, answer) == (401, refusal(401, "A JSON web token could not be decoded"))


# -------------------------------------------------------------------- what every request meets


def test_a_request_without_user_agent_is_forbidden(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    jwt = app_jwt(app_key[0])
    status, answer, headers = call(api, "GET", "/app", f"Bearer {jwt}", headers={"User-Agent": ""})
    assert (status, headers["Content-Type"]) == (403, "text/html")
    assert answer.startswith("Request forbidden by administrative rules.\n")


def test_a_rate_limited_answer_carries_the_documented_headers(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    status, _, headers = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0])}")
    assert (status, headers["x-ratelimit-remaining"], headers["x-ratelimit-used"]) == (
        200,
        "4999",
        "1",
    )
    api.rate_limited = True
    status, answer, headers = call(api, "GET", "/app", f"Bearer {app_jwt(app_key[0])}")
    assert status == 403
    assert answer["message"] == "API rate limit exceeded for 127.0.0.1."
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-limit"] == headers["x-ratelimit-used"] == "5000"
    assert int(headers["x-ratelimit-reset"]) > time.time()
    assert headers["x-ratelimit-resource"] == "core"


# ------------------------------------------------------------------------- installation tokens


def test_installations_are_found_by_repository_organization_and_user(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    auth = f"Bearer {app_jwt(app_key[0])}"
    for path in (
        "/repos/acme/utils/installation",
        "/orgs/acme/installation",
        "/users/acme/installation",
    ):
        status, answer, _ = call(api, "GET", path, auth)
        assert (status, answer["id"], answer["app_id"]) == (200, 40001, APP_ID), path
        assert answer["access_tokens_url"] == f"{api.url}/app/installations/40001/access_tokens"
    assert call(api, "GET", "/repos/acme/secret/installation", auth)[0] == 404
    assert call(api, "GET", "/repos/other/utils/installation", auth)[0] == 404


def test_a_token_is_narrowed_to_the_repositories_and_permissions_asked(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    status, answer = mint(
        api, app_key[0], 40001, repositories=["utils"], permissions={"contents": "read"}
    )
    assert status == 201
    assert re.fullmatch(r"ghs_[A-Za-z0-9]{36}", answer["token"])
    expires = time.mktime(time.strptime(answer["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 3590 < expires - time.time() <= 3600
    assert answer["permissions"] == {"contents": "read"}
    assert answer["repository_selection"] == "selected"
    assert [r["full_name"] for r in answer["repositories"]] == ["acme/utils"]
    assert api.allows(answer["token"], "acme", "utils")
    assert not api.allows(answer["token"], "acme", "models")
    status, answer = mint(api, app_key[0], 40001, repository_ids=[api.repositories["acme/models"]])
    assert [r["full_name"] for r in answer["repositories"]] == ["acme/models"]
    assert answer["permissions"] == {"contents": "read", "metadata": "read"}


def test_a_token_is_refused_beyond_the_installation(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    docs = "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"
    status, answer = mint(api, app_key[0], 40001, repositories=["utils", "secret"])
    message = "There is at least one repository that does not exist or is not accessible to the parent installation."
    assert (status, answer) == (422, refusal(422, message, docs))
    status, answer = mint(api, app_key[0], 40001, permissions={"contents": "write"})
    message = "The permissions requested are not granted to this installation."
    assert (status, answer) == (422, refusal(422, message, docs))
    assert mint(api, app_key[0], 49999)[0] == 404
    assert mint(api, app_key[0], 40001, repositories="utils")[0] == 400
    assert api.tokens == []


def test_a_revoked_token_is_dead(api: GitHubAPI, app_key: tuple[Path, bytes]) -> None:
    token = mint(api, app_key[0], 40001, repositories=["utils"])[1]["token"]
    assert call(api, "DELETE", "/installation/token", f"token {token}")[0] == 204
    assert not api.allows(token, "acme", "utils")
    status, answer, _ = call(api, "DELETE", "/installation/token", f"Bearer {token}")
    assert (status, answer) == (401, refusal(401, "Bad credentials"))


def test_the_stateless_token_format_is_given_on_request(
    api: GitHubAPI, app_key: tuple[Path, bytes]
) -> None:
    path = "/app/installations/40001/access_tokens"
    headers = {"X-GitHub-Stateless-S2S-Token": "enabled"}
    status, answer, _ = call(api, "POST", path, f"Bearer {app_jwt(app_key[0])}", {}, headers)
    token = answer["token"]
    assert status == 201 and token.startswith(f"ghs_{APP_ID}_") and token.count(".") == 2
    assert 500 < len(token) < 540 and re.fullmatch(r"ghs_[A-Za-z0-9\._]{36,}", token)
    assert api.allows(token, "acme", "models")


def test_no_secret_is_ever_in_a_url(api: GitHubAPI, app_key: tuple[Path, bytes]) -> None:
    token = mint(api, app_key[0], 40001)[1]["token"]
    call(api, "DELETE", "/installation/token", f"Bearer {token}")
    assert [(m, p) for m, p, _ in api.requests] == [
        ("POST", "/app/installations/40001/access_tokens"),
        ("DELETE", "/installation/token"),
    ]


# ------------------------------------------------------------------------- the git front end


def git(*args: str, token: str, cwd: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    """The real git, given the token by a credential helper (never in a URL or argument), and
    the front end's CA as git reads it (GIT_SSL_CAINFO: Debian's git reads no SSL_CERT_FILE)."""
    helper = (
        '!f() { test "$1" = get && printf "username=x-access-token\\npassword=%s\\n" "$TOKEN"; }; f'
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "TOKEN": token,
        "GIT_SSL_CAINFO": str(ca),
    }
    command = ["git", "-c", "credential.helper=", "-c", f"credential.helper={helper}", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_token_clones_its_repository_and_no_other(
    api: GitHubAPI, github: GitHubGit, app_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    token = mint(api, app_key[0], 40001, repositories=["utils"])[1]["token"]
    cloned = git(
        "clone", f"{github.url}/acme/utils.git", "utils", token=token, cwd=tmp_path, ca=api.ca_file
    )
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "utils" / "README").read_text() == "utils\n"
    bare = git(
        "clone",
        f"{github.url}/acme/utils",
        "utils-bare-url",
        token=token,
        cwd=tmp_path,
        ca=api.ca_file,
    )
    assert bare.returncode == 0, bare.stderr
    refused = git(
        "clone", f"{github.url}/acme/models.git", token=token, cwd=tmp_path, ca=api.ca_file
    )
    assert refused.returncode == 128
    assert "remote: Repository not found.\n" in refused.stderr
    assert f"fatal: repository '{github.url}/acme/models.git/' not found" in refused.stderr
    assert token not in github.access_log()


@pytest.mark.parametrize("death", ["revoked", "expired"])
def test_a_dead_token_cannot_clone(
    api: GitHubAPI, github: GitHubGit, app_key: tuple[Path, bytes], tmp_path: Path, death: str
) -> None:
    token = mint(api, app_key[0], 40001, repositories=["utils"])[1]["token"]
    if death == "revoked":
        call(api, "DELETE", "/installation/token", f"Bearer {token}")
    else:
        api.clock_offset = 3601
    refused = git(
        "clone", f"{github.url}/acme/utils.git", token=token, cwd=tmp_path, ca=api.ca_file
    )
    assert refused.returncode == 128
    assert "remote: Invalid username or token." in refused.stderr
    assert f"fatal: Authentication failed for '{github.url}/acme/utils.git/'" in refused.stderr


def test_a_read_token_cannot_push(
    api: GitHubAPI, github: GitHubGit, app_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    token = mint(api, app_key[0], 40001, repositories=["utils"])[1]["token"]
    assert (
        git(
            "clone", f"{github.url}/acme/utils.git", token=token, cwd=tmp_path, ca=api.ca_file
        ).returncode
        == 0
    )
    pushed = git(
        "push",
        "origin",
        "HEAD:refs/heads/other",
        token=token,
        cwd=tmp_path / "utils",
        ca=api.ca_file,
    )
    assert pushed.returncode == 128
    assert "remote: Write access to repository not granted.\n" in pushed.stderr


def test_the_front_end_serves_partial_clones_and_commits_by_id(
    api: GitHubAPI, github: GitHubGit, app_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    """As github.com does: `--filter=blob:none` gets a partial clone (no blob until it is read;
    without uploadpack.allowFilter the server ignores the filter and sends every blob), and a
    commit is fetched by its id alone."""
    token = mint(api, app_key[0], 40001, repositories=["utils"])[1]["token"]
    url = f"{github.url}/acme/utils.git"
    partial = git(
        "clone",
        "--bare",
        "--filter=blob:none",
        url,
        "partial",
        token=token,
        cwd=tmp_path,
        ca=api.ca_file,
    )
    assert partial.returncode == 0, partial.stderr
    promisor = git(
        "config", "remote.origin.promisor", token=token, cwd=tmp_path / "partial", ca=api.ca_file
    )
    assert promisor.stdout.strip() == "true"
    missing = git(
        "rev-list",
        "--objects",
        "--missing=print",
        "--all",
        token=token,
        cwd=tmp_path / "partial",
        ca=api.ca_file,
    )
    assert [line for line in missing.stdout.splitlines() if line.startswith("?")], missing.stdout
    head = git("rev-parse", "HEAD", token=token, cwd=tmp_path / "partial", ca=api.ca_file)
    empty = tmp_path / "by-id"
    assert (
        git("init", "--bare", str(empty), token=token, cwd=tmp_path, ca=api.ca_file).returncode == 0
    )
    fetched = git("fetch", url, head.stdout.strip(), token=token, cwd=empty, ca=api.ca_file)
    assert fetched.returncode == 0, fetched.stderr
