"""A stand-in for GitHub's App-token REST API over real TLS, and github.com's git front end.

GitHubAPI answers the documented endpoints a GitHub App uses to get a short-lived git credential:
it verifies each App JWT (RS256, with `cryptography`) against the App's public key, finds
installations, mints installation access tokens narrowed to repositories and permissions, and
revokes them. Errors come back as GitHub sends them: the status, and JSON `message`,
`documentation_url`, `status`. Each behaviour cites the page it follows; the wording of errors
that the documentation does not quote comes from public reports, cited where used.

GitHubGit serves git repositories at /{owner}/{repo}.git through nginx and `git http-backend`
(tests/support/httpserver.py), and asks GitHubAPI about every request (nginx `auth_request`): only
`x-access-token:<live installation token>` whose token covers the repository with contents:read
may fetch, as on github.com.

Nothing here is GitHub's code; the keys, the CA and the tokens are made when a test runs.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http.server
import json
import re
import secrets
import shutil
import ssl
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.gitserver import make_bare_repo
from support.httpserver import GitHttpServer

DOCS = "https://docs.github.com/rest"
APPS_DOCS = "https://docs.github.com/rest/apps/apps"
# https://docs.github.com/en/rest/about-the-rest-api/api-versions : requests without the header
# get the default version; the versions the published OpenAPI description lists (2026-03-10 is
# github/rest-api-description's api.github.com.2026-03-10.yaml).
DEFAULT_API_VERSION = "2022-11-28"
API_VERSIONS = ("2022-11-28", "2026-03-10")
# https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
# "exp ... must be no more than 10 minutes into the future".
JWT_MAX_AHEAD = 600
# https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
# "Installation tokens expire one hour from the time you create them."
TOKEN_LIFETIME = 3600
RATE_LIMIT = 5000  # https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
LEVELS = {"read": 1, "write": 2, "admin": 3}  # components/schemas/app-permissions' values

# The JWT refusals GitHub sends (401). The documentation does not quote them; these are the texts
# clients match: octokit/auth-app.js src/hook.ts (the two clock-skew messages), and issue threads:
# octokit/auth-app.js#375 ("could not be decoded", also for the right key with another App's id),
# actions/create-github-app-token#153 (same), #386 ("'Issuer' claim ('iss') must be an Integer"),
# and public client code quoting "'Expiration time' claim ('exp') is too far in the future".
JWT_UNDECODABLE = "A JSON web token could not be decoded"
JWT_ISS = "'Issuer' claim ('iss') must be an Integer"
JWT_IAT = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which"
    " the assertion expires"
)
JWT_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
# A well-signed JWT whose `iss` names no App: 404 (actions/create-github-app-token#76,
# octokit/authentication-strategies.js#165).
INTEGRATION_NOT_FOUND = "Integration not found"
# POST .../access_tokens refusals (422), as recorded from api.github.com in PyGithub's
# tests/ReplayData/GithubIntegration.testGetAccessTokenWithInvalidPermissions.txt and quoted in
# many issue threads for the repository case.
NOT_IN_INSTALLATION = (
    "There is at least one repository that does not exist or is not accessible to the parent"
    " installation."
)
PERMISSIONS_NOT_GRANTED = "The permissions requested are not granted to this installation."
# https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent
# "Requests with no User-Agent header will be rejected ... 403 Forbidden"; the text/html body is
# the one the documentation showed for it.
NO_USER_AGENT = (
    "Request forbidden by administrative rules.\n"
    "Please make sure your request has a User-Agent header.\n"
    "Check https://developer.github.com for other possible causes.\n"
)

# github.com's git front end over HTTPS. 401 with a Basic challenge so git asks its credential
# helper; the text is what github.com says to a rejected password or token (public reports of
# `remote: Invalid username or token. ...` / `fatal: Authentication failed`). A token that cannot
# see the repository gets "Repository not found." (404), as
# https://docs.github.com/en/repositories/creating-and-managing-repositories/troubleshooting-cloning-errors#error-repository-not-found
# says, also for an App token without contents access (src-d/lookout#365). A push with a token that
# may only read gets 403 "Write access to repository not granted." (moghtech/komodo#1482).
GIT_BAD_CREDENTIALS = (
    "Invalid username or token. Password authentication is not supported for Git operations.\n"
)
GIT_NOT_FOUND = "Repository not found.\n"
GIT_READ_ONLY = "Write access to repository not granted.\n"
# https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation
# "use the installation access token as the HTTP password": git clone https://x-access-token:TOKEN@...
GIT_USER = "x-access-token"
# The tests' stand-in for github.com's git front end asking "may this request fetch?". Not a
# GitHub endpoint: nginx calls it, nobody else should.
GIT_FRONT_END = "/_deploykey-tests/git-front-end"


@dataclass
class Installation:
    id: int
    app_id: int
    owner: str
    repositories: list[str] | None  # repository names under owner; None: all of them
    permissions: dict[str, str]
    account_type: str = "Organization"  # or "User"


@dataclass
class Token:
    value: str
    installation: int
    repositories: list[str] | None  # repository names under the installation's owner; None: all
    permissions: dict[str, str]
    expires_at: float  # the server's clock, epoch seconds
    revoked: bool = False


@dataclass
class _App:
    id: int
    public_key: rsa.RSAPublicKey
    client_id: str
    slug: str


class _Refusal(Exception):
    def __init__(
        self, status: int, message: str, docs: str = DOCS, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.docs = status, message, docs
        self.headers = headers or {}


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def make_app_key(path: Path) -> bytes:
    """An App's private key as GitHub's settings page downloads it (PKCS#1, "BEGIN RSA PRIVATE
    KEY"), written to PATH (0600); returns the public key PEM for add_app."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class GitHubAPI:
    """HTTPS on 127.0.0.1 (a CA and server certificate made at start), one thread per request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps: dict[int, _App] = {}
        self.installations: dict[int, Installation] = {}
        self.repositories: dict[str, int] = {}  # "owner/name" -> id
        self.tokens: list[Token] = []
        self.requests: list[tuple[str, str, int]] = []  # method, path with query, status
        self.git_requests: list[tuple[str, str, int]] = []  # method, git URL path, verdict
        self.clock_offset = 0.0  # seconds the server's clock is ahead of this machine's
        self.rate_limited = False
        self.rate_limit_status = 403  # the docs: "a 403 or 429 response"
        # The stateless token format (ghs_APPID_JWT) GitHub is rolling out; a request's
        # X-GitHub-Stateless-S2S-Token header overrides it, as on GitHub (see _new_token).
        self.stateless_tokens = False
        self.used = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ca_file = root / "ca.pem"
        self.url = ""

    @classmethod
    def start(cls, root: Path) -> GitHubAPI:
        root.mkdir(parents=True, exist_ok=True)
        api = cls(root)
        cert, key = _make_tls(root)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = _Server(("127.0.0.1", 0), _Handler)
        server.api = api
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        # serve_forever selects, then accepts: a connection reset in between would leave a
        # blocking accept() waiting for the next one (and stop() waiting for it forever). With a
        # timeout the accept gives up, and the sockets it returns are blocking all the same.
        server.socket.settimeout(1)
        api._server = server
        api.url = f"https://127.0.0.1:{server.server_address[1]}"
        api._thread = threading.Thread(target=server.serve_forever, daemon=True)
        api._thread.start()
        return api

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # ------------------------------------------------------------------------------- test setup

    def add_app(
        self,
        app_id: int,
        public_key_pem: bytes,
        client_id: str = "Iv1.xxx",
        slug: str = "deploykey-test",
    ) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        assert isinstance(key, rsa.RSAPublicKey), "a GitHub App key is RSA"
        self.apps[app_id] = _App(app_id, key, client_id, slug)

    def add_repository(self, owner: str, name: str) -> int:
        """Make OWNER/NAME exist (an installation on all of OWNER's repositories covers it)."""
        full = self._repository(owner, name) or f"{owner}/{name}"
        return self.repositories.setdefault(full, 1296269 + 2 * len(self.repositories))

    def install(
        self,
        app_id: int,
        owner: str,
        repositories: list[str] | None,
        permissions: dict[str, str] | None = None,
        account_type: str = "Organization",
    ) -> Installation:
        for name in repositories or []:
            self.add_repository(owner, name)
        installation = Installation(
            id=40000 + len(self.installations) + 1,
            app_id=app_id,
            owner=owner,
            repositories=repositories,
            permissions=permissions or {"contents": "read", "metadata": "read"},
            account_type=account_type,
        )
        self.installations[installation.id] = installation
        return installation

    def now(self) -> float:
        return time.time() + self.clock_offset

    def allows(self, token: str, owner: str, repo: str) -> bool:
        """TOKEN is live (not expired, not revoked) and may read OWNER/REPO's contents."""
        found = self._live_token(token)
        return found is not None and self._covers(found, owner, repo, "read")

    # ----------------------------------------------------------------------------- the routes

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        with self._lock:
            path = urlsplit(target).path
            if path.startswith(GIT_FRONT_END + "/"):
                return self._git_front_end(path, headers)
            if not headers.get("User-Agent"):
                return _Reply(403, NO_USER_AGENT.encode(), {"Content-Type": "text/html"})
            try:
                reply = self._api(method, path, headers, body)
            except _Refusal as refusal:
                payload = {
                    "message": refusal.message,
                    "documentation_url": refusal.docs,
                    "status": str(refusal.status),
                }
                reply = _Reply(refusal.status, _json(payload), dict(refusal.headers))
            if "x-ratelimit-remaining" not in reply.headers:
                self.used += 1
                reply.headers.update(self._rate_headers())
            version = headers.get("X-GitHub-Api-Version") or DEFAULT_API_VERSION
            reply.headers["X-GitHub-Api-Version-Selected"] = version
            reply.headers["X-GitHub-Request-Id"] = secrets.token_hex(8).upper()
            return reply

    def _api(self, method: str, path: str, headers: Any, body: bytes) -> _Reply:
        version = headers.get("X-GitHub-Api-Version")
        if version is not None and version not in API_VERSIONS:
            # https://docs.github.com/en/rest/about-the-rest-api/api-versions (the status for a
            # version that never existed is not documented; 400, as for other bad requests).
            raise _Refusal(400, f"Unsupported 'X-GitHub-Api-Version' header: {version}")
        if self.rate_limited:
            self._rate_limit(headers)
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/app", self._get_app),
            ("GET", r"/app/installations/(\d+)", self._get_installation),
            ("GET", r"/repos/([^/]+)/([^/]+)/installation", self._repo_installation),
            ("GET", r"/orgs/([^/]+)/installation", self._org_installation),
            ("GET", r"/users/([^/]+)/installation", self._user_installation),
            ("POST", r"/app/installations/(\d+)/access_tokens", self._create_token),
            ("DELETE", r"/installation/token", self._revoke_token),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and method == route_method:
                return handler(headers, body, *match.groups())  # type: ignore[no-any-return]
        raise _Refusal(404, "Not Found")

    # https://docs.github.com/en/rest/apps/apps#get-the-authenticated-app
    def _get_app(self, headers: Any, body: bytes) -> _Reply:
        app = self._authenticate_app(headers)
        installations = sum(1 for i in self.installations.values() if i.app_id == app.id)
        return _Reply(200, _json(self._app_json(app) | {"installations_count": installations}))

    # https://docs.github.com/en/rest/apps/apps#get-an-installation-for-the-authenticated-app
    def _get_installation(self, headers: Any, body: bytes, installation_id: str) -> _Reply:
        app = self._authenticate_app(headers)
        installation = self.installations.get(int(installation_id))
        if installation is None or installation.app_id != app.id:
            raise _Refusal(
                404, "Not Found", f"{APPS_DOCS}#get-an-installation-for-the-authenticated-app"
            )
        return _Reply(200, _json(self._installation_json(installation)))

    # https://docs.github.com/en/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
    def _repo_installation(self, headers: Any, body: bytes, owner: str, repo: str) -> _Reply:
        app = self._authenticate_app(headers)
        for installation in self._installations_of(app, owner):
            probe = Token("", installation.id, None, {}, 0)
            if self._covers(probe, owner, repo, None):
                return _Reply(200, _json(self._installation_json(installation)))
        raise _Refusal(
            404, "Not Found", f"{APPS_DOCS}#get-a-repository-installation-for-the-authenticated-app"
        )

    # https://docs.github.com/en/rest/apps/apps#get-an-organization-installation-for-the-authenticated-app
    def _org_installation(self, headers: Any, body: bytes, org: str) -> _Reply:
        app = self._authenticate_app(headers)
        for installation in self._installations_of(app, org):
            if installation.account_type == "Organization":
                return _Reply(200, _json(self._installation_json(installation)))
        raise _Refusal(
            404,
            "Not Found",
            f"{APPS_DOCS}#get-an-organization-installation-for-the-authenticated-app",
        )

    # https://docs.github.com/en/rest/apps/apps#get-a-user-installation-for-the-authenticated-app
    # (an organization is also found here: the REST API's users/{username} resolves organizations;
    # the docs do not say either way for this endpoint.)
    def _user_installation(self, headers: Any, body: bytes, user: str) -> _Reply:
        app = self._authenticate_app(headers)
        for installation in self._installations_of(app, user):
            return _Reply(200, _json(self._installation_json(installation)))
        raise _Refusal(
            404, "Not Found", f"{APPS_DOCS}#get-a-user-installation-for-the-authenticated-app"
        )

    # https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
    def _create_token(self, headers: Any, body: bytes, installation_id: str) -> _Reply:
        docs = f"{APPS_DOCS}#create-an-installation-access-token-for-an-app"
        app = self._authenticate_app(headers)
        installation = self.installations.get(int(installation_id))
        if installation is None or installation.app_id != app.id:
            raise _Refusal(404, "Not Found", docs)
        request = _parse_token_request(body, docs)
        # "If you don't use repositories or repository_ids ... access to all repositories that
        # the installation was granted access to." "The installation access token cannot be
        # granted access to repositories that the installation was not granted access to."
        owner = installation.owner
        by_id = {number: full for full, number in self.repositories.items()}
        wanted = [f"{owner}/{name}" for name in request["repositories"]]
        wanted += [by_id.get(number, "") for number in request["repository_ids"]]
        probe = Token("", installation.id, None, {}, 0)
        names = set()
        for full in wanted:
            account, _, name = full.partition("/")
            if account.casefold() != owner.casefold() or not self._covers(probe, owner, name, None):
                raise _Refusal(422, NOT_IN_INSTALLATION, docs)
            names.add(str(self._repository(owner, name)).partition("/")[2])
        # "If permissions is not specified, the installation access token will have all of the
        # permissions that were granted to the app. The installation access token cannot be
        # granted permissions that the app was not granted."
        permissions = request["permissions"] or dict(installation.permissions)
        for name, level in permissions.items():
            granted = LEVELS.get(installation.permissions.get(name, ""), 0)
            if LEVELS.get(level, 99) > granted:
                raise _Refusal(422, PERMISSIONS_NOT_GRANTED, docs)
        repositories = sorted(names) or None
        if repositories is None and installation.repositories is not None:
            repositories = list(installation.repositories)
        token = Token(
            value=self._new_token(app, headers),
            installation=installation.id,
            repositories=repositories,
            permissions=permissions,
            expires_at=float(int(self.now()) + TOKEN_LIFETIME),
        )
        self.tokens.append(token)
        answer: dict[str, Any] = {
            "token": token.value,
            "expires_at": _iso(token.expires_at),
            "permissions": token.permissions,
            "repository_selection": "all" if repositories is None else "selected",
        }
        if repositories is not None:
            answer["repositories"] = [self._repository_json(installation, n) for n in repositories]
        return _Reply(201, _json(answer))

    # https://docs.github.com/en/rest/apps/installations#revoke-an-installation-access-token
    # "Revokes the installation token you're using to authenticate"; 204. Either scheme works for
    # a token (data/reusables/getting-started/bearer-vs-token.md).
    def _revoke_token(self, headers: Any, body: bytes) -> _Reply:
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        token = self._live_token(credential.strip())
        if scheme.lower() not in ("bearer", "token") or token is None:
            raise _Refusal(401, "Bad credentials")
        token.revoked = True
        return _Reply(204)

    # --------------------------------------------------------------------------- the App's JWT

    def _authenticate_app(self, headers: Any) -> _App:
        """The App whose JWT authorizes this request, checked as
        https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
        describes: RS256, signed by the App's key, `iss` its app id or client id, `exp` no more
        than 10 minutes ahead. A JWT goes with `Authorization: Bearer` only (bearer-vs-token.md)."""
        authorization = headers.get("Authorization")
        if not authorization:
            raise _Refusal(401, "Requires authentication")  # OpenAPI: requires_authentication
        scheme, _, jwt = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise _Refusal(401, JWT_UNDECODABLE)
        try:
            encoded_header, encoded_claims, encoded_signature = jwt.strip().split(".")
            header = json.loads(_unb64(encoded_header))
            claims = json.loads(_unb64(encoded_claims))
            signature = _unb64(encoded_signature)
        except (ValueError, binascii.Error):
            raise _Refusal(401, JWT_UNDECODABLE) from None
        if (
            not isinstance(header, dict)
            or header.get("alg") != "RS256"
            or not isinstance(claims, dict)
        ):
            raise _Refusal(401, JWT_UNDECODABLE)
        app = self._issuer(claims.get("iss"))
        try:
            app.public_key.verify(
                signature,
                f"{encoded_header}.{encoded_claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise _Refusal(401, JWT_UNDECODABLE) from None
        now = int(self.now())
        iat, exp = claims.get("iat"), claims.get("exp")
        # The docs recommend backdating iat by 60 s "to protect against clock drift": an iat
        # later than the server's clock is refused. How much GitHub tolerates is not documented;
        # this server tolerates none.
        if not _is_int(iat) or iat > now:
            raise _Refusal(401, JWT_IAT)
        if not _is_int(exp) or exp <= now:
            raise _Refusal(401, JWT_EXPIRED)
        # Measured from the server's clock, not from iat: the docs' own example signs
        # iat = now - 60 with exp = now + 600.
        if exp > now + JWT_MAX_AHEAD:
            raise _Refusal(401, JWT_TOO_FAR)
        return app

    def _issuer(self, iss: Any) -> _App:
        # "iss: The client ID or application ID of your GitHub App" (either type, as JSON number
        # or string: the docs' Ruby example sends the id as a string).
        if isinstance(iss, str) and not iss.isdigit():
            for app in self.apps.values():
                if app.client_id == iss:
                    return app
            raise _Refusal(401, JWT_ISS)
        if isinstance(iss, bool) or not isinstance(iss, (int, str)):
            raise _Refusal(401, JWT_ISS)
        app_found = self.apps.get(int(iss))
        if app_found is None:
            raise _Refusal(404, INTEGRATION_NOT_FOUND)
        return app_found

    # ----------------------------------------------------------------------- tokens and access

    def _new_token(self, app: _App, headers: Any) -> str:
        """`ghs_` and 36 characters (the docs' example token), or the stateless ghs_APPID_JWT
        format: "a ghs_-prefixed JWT ... longer (~520 characters) and contains two dots", forced
        either way by X-GitHub-Stateless-S2S-Token: enabled|disabled; any other value is ignored.
        https://github.blog/changelog/2026-05-15-github-app-installation-tokens-per-request-override-header/"""
        alphabet = string.ascii_letters + string.digits
        override = headers.get("X-GitHub-Stateless-S2S-Token")
        stateless = {"enabled": True, "disabled": False}.get(override or "", self.stateless_tokens)
        if not stateless:
            return "ghs_" + "".join(secrets.choice(alphabet) for _ in range(36))
        # GitHub's recommended pattern for both formats is ghs_[A-Za-z0-9\._]{36,}.
        alphabet += "_"
        parts = ["".join(secrets.choice(alphabet) for _ in range(n)) for n in (36, 400, 70)]
        return f"ghs_{app.id}_" + ".".join(parts)

    def _live_token(self, value: str) -> Token | None:
        for token in self.tokens:
            if secrets.compare_digest(token.value, value):
                live = not token.revoked and self.now() < token.expires_at
                return token if live else None
        return None

    def _covers(self, token: Token, owner: str, repo: str, contents: str | None) -> bool:
        """TOKEN's installation and narrowing include OWNER/REPO (an existing repository), and
        its contents permission is at least CONTENTS (None: no permission needed)."""
        installation = self.installations[token.installation]
        if installation.owner.casefold() != owner.casefold():
            return False
        if self._repository(owner, repo) is None:
            return False
        for names in (installation.repositories, token.repositories):
            if names is not None and repo.casefold() not in {n.casefold() for n in names}:
                return False
        if contents is None:
            return True
        return LEVELS.get(token.permissions.get("contents", ""), 0) >= LEVELS[contents]

    def _repository(self, owner: str, name: str) -> str | None:
        """OWNER/NAME as created, if it exists ("The name is not case sensitive": the docs of
        each {owner}/{repo} parameter)."""
        wanted = f"{owner}/{name}".casefold()
        return next((full for full in self.repositories if full.casefold() == wanted), None)

    # ------------------------------------------------------------------- github.com's git side

    def _git_front_end(self, path: str, headers: Any) -> _Reply:
        """nginx's questions about a git request (X-Original-Method, X-Original-URI): `/auth`
        answers 204, 401 or 403 (what auth_request accepts), `/refusal` the reply git gets."""
        method = headers.get("X-Original-Method", "GET")
        uri = headers.get("X-Original-URI", "")
        status, text = self._git_verdict(method, uri, headers.get("Authorization", ""))
        if path.endswith("/auth"):
            self.git_requests.append((method, uri, status))
            return _Reply(403 if status == 404 else status)
        reply = _Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        if status == 401:
            reply.headers["WWW-Authenticate"] = 'Basic realm="GitHub"'
        return reply

    def _git_verdict(self, method: str, uri: str, authorization: str) -> tuple[int, str]:
        url = urlsplit(uri)
        match = re.fullmatch(r"/([^/]+)/([^/]+?)(?:\.git)?(/.*)?", url.path)
        service = parse_qs(url.query).get("service", [""])[0]
        writes = service == "git-receive-pack" or url.path.endswith("/git-receive-pack")
        scheme, _, encoded = authorization.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            user = password = ""
        token = self._live_token(password) if scheme.lower() == "basic" else None
        if token is None or user != GIT_USER:
            return 401, GIT_BAD_CREDENTIALS
        if match is None or not self._covers(token, match[1], match[2], "read"):
            return 404, GIT_NOT_FOUND
        if writes and not self._covers(token, match[1], match[2], "write"):
            return 403, GIT_READ_ONLY
        return 204, ""

    # ---------------------------------------------------------------------------- rate limits

    def _rate_headers(self, remaining: int | None = None) -> dict[str, str]:
        """https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
        #checking-the-status-of-your-rate-limit: the headers sent with each response."""
        used = RATE_LIMIT if remaining == 0 else min(self.used, RATE_LIMIT)
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(RATE_LIMIT - used if remaining is None else remaining),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(int(self.now()) + 1800),
            "x-ratelimit-resource": "core",
        }

    def _rate_limit(self, headers: Any) -> None:
        """ "If you exceed your primary rate limit, you will receive a 403 or 429 response, and
        the x-ratelimit-remaining header will be 0." (same page, #exceeding-the-rate-limit). The
        message is the one GitHub sends (not quoted by the docs; public reports)."""
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        token = self._live_token(credential.strip()) if scheme else None
        who = f"installation ID {token.installation}" if token else "127.0.0.1"
        raise _Refusal(
            self.rate_limit_status,
            f"API rate limit exceeded for {who}.",
            "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            self._rate_headers(remaining=0),
        )

    # ------------------------------------------------------------------------ response bodies

    def _installations_of(self, app: _App, owner: str) -> list[Installation]:
        return [
            i
            for i in self.installations.values()
            if i.app_id == app.id and i.owner.casefold() == owner.casefold()
        ]

    def _account_json(self, login: str, number: int, kind: str) -> dict[str, Any]:
        """components/schemas/simple-user: every required field."""
        users = f"{self.url}/users/{login}"
        return {
            "login": login,
            "id": number,
            "node_id": _node_id(kind, number),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{number}?v=4",
            "gravatar_id": "",
            "url": f"{self.url}/{'orgs' if kind == 'Organization' else 'users'}/{login}",
            "html_url": f"https://github.com/{login}",
            "followers_url": f"{users}/followers",
            "following_url": f"{users}/following{{/other_user}}",
            "gists_url": f"{users}/gists{{/gist_id}}",
            "starred_url": f"{users}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{users}/subscriptions",
            "organizations_url": f"{users}/orgs",
            "repos_url": f"{users}/repos",
            "events_url": f"{users}/events{{/privacy}}",
            "received_events_url": f"{users}/received_events",
            "type": kind,
            "site_admin": False,
        }

    def _app_json(self, app: _App) -> dict[str, Any]:
        """components/schemas/integration."""
        return {
            "id": app.id,
            "slug": app.slug,
            "client_id": app.client_id,
            "node_id": _node_id("Integration", app.id),
            "owner": self._account_json("deploykey-tests", 9000, "Organization"),
            "name": app.slug,
            "description": "",
            "external_url": "https://example.com",
            "html_url": f"https://github.com/apps/{app.slug}",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "permissions": {"contents": "read", "metadata": "read"},
            "events": [],
        }

    def _installation_json(self, installation: Installation) -> dict[str, Any]:
        """components/schemas/installation: every required field."""
        app = self.apps[installation.app_id]
        owner_id = 7000 + sum(ord(c) for c in installation.owner.casefold())
        return {
            "id": installation.id,
            "account": self._account_json(installation.owner, owner_id, installation.account_type),
            "repository_selection": "all" if installation.repositories is None else "selected",
            "access_tokens_url": f"{self.url}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.url}/installation/repositories",
            "html_url": f"https://github.com/organizations/{installation.owner}/settings/installations/{installation.id}",
            "app_id": app.id,
            "client_id": app.client_id,
            "target_id": owner_id,
            "target_type": installation.account_type,
            "permissions": installation.permissions,
            "events": [],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "app_slug": app.slug,
            "suspended_by": None,
            "suspended_at": None,
        }

    def _repository_json(self, installation: Installation, name: str) -> dict[str, Any]:
        """components/schemas/repository: every required field."""
        full = str(self._repository(installation.owner, name))
        number, (owner, _, name) = self.repositories[full], full.partition("/")
        api = f"{self.url}/repos/{owner}/{name}"
        templated = {
            "archive": "/{archive_format}{/ref}", "assignees": "/assignees{/user}",
            "blobs": "/git/blobs{/sha}", "branches": "/branches{/branch}",
            "collaborators": "/collaborators{/collaborator}", "comments": "/comments{/number}",
            "commits": "/commits{/sha}", "compare": "/compare/{base}...{head}",
            "contents": "/contents/{+path}", "contributors": "/contributors",
            "deployments": "/deployments", "downloads": "/downloads", "events": "/events",
            "forks": "/forks", "git_commits": "/git/commits{/sha}", "git_refs": "/git/refs{/sha}",
            "git_tags": "/git/tags{/sha}", "hooks": "/hooks",
            "issue_comment": "/issues/comments{/number}", "issue_events": "/issues/events{/number}",
            "issues": "/issues{/number}", "keys": "/keys{/key_id}", "labels": "/labels{/name}",
            "languages": "/languages", "merges": "/merges", "milestones": "/milestones{/number}",
            "notifications": "/notifications{?since,all,participating}",
            "pulls": "/pulls{/number}", "releases": "/releases{/id}",
            "stargazers": "/stargazers", "statuses": "/statuses/{sha}",
            "subscribers": "/subscribers", "subscription": "/subscription", "tags": "/tags",
            "teams": "/teams", "trees": "/git/trees{/sha}",
        }  # fmt: skip
        html = f"https://github.com/{owner}/{name}"
        return {
            "id": number,
            "node_id": _node_id("Repository", number),
            "name": name,
            "full_name": f"{owner}/{name}",
            "owner": self._installation_json(installation)["account"],
            "private": True,
            "html_url": html,
            "description": None,
            "fork": False,
            "url": api,
            **{f"{key}_url": api + suffix for key, suffix in templated.items()},
            "git_url": f"git://github.com/{owner}/{name}.git",
            "ssh_url": f"git@github.com:{owner}/{name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": "main",
            "open_issues": 0,
            "open_issues_count": 0,
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "archived": False,
            "disabled": False,
            "license": None,
            "pushed_at": "2024-01-01T00:00:00Z",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }


@dataclass
class GitHubGit:
    """github.com's (or a GitHub Enterprise Server's) git front end for the tests: HTTPS on
    127.0.0.1 with a certificate for 127.0.0.1 and localhost from the CA made at run time (the
    API stand-in's, `api.ca_file`), repositories at /{owner}/{repo}.git and /{owner}/{repo}, each
    request allowed or refused by GitHubAPI; and the API itself under /api/v3, where a GitHub
    Enterprise Server serves it (https://docs.github.com/en/enterprise-server@3.14/rest/quickstart:
    "http(s)://HOSTNAME/api/v3")."""

    api: GitHubAPI
    server: GitHttpServer

    @classmethod
    def start(cls, api: GitHubAPI) -> GitHubGit:
        upstream = f"""
            proxy_pass {api.url};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {api.ca_file};
            proxy_ssl_name localhost;
        """
        # auth_request lets a subrequest's 2xx through and turns its 401 and 403 into the same
        # status (anything else is a 500), so a refusal is fetched again whole from /refusal:
        # its real status (404 included), the Basic challenge and the text git shows.
        extra = f"""
            location /api/v3/ {{
                proxy_pass {api.url}/;
                proxy_ssl_verify on;
                proxy_ssl_trusted_certificate {api.ca_file};
                proxy_ssl_name localhost;
            }}
            location = {GIT_FRONT_END}/auth {{ internal; {upstream} }}
            location @refusal {{
                rewrite ^ {GIT_FRONT_END}/refusal break;
                {upstream}
            }}
        """
        guard = r"""
            rewrite "^(/[^/]+/[^/]+?)(?:\.git)?(/(?:info/refs|HEAD|objects/.+|git-upload-pack|git-receive-pack))$" $1.git$2 break;
            auth_request @GIT_FRONT_END@/auth;
            error_page 401 403 = @refusal;
        """.replace("@GIT_FRONT_END@", GIT_FRONT_END)
        tls = (api.root / "server.pem", api.root / "server-key.pem")
        server = GitHttpServer.create_guarded(guard, extra, tls)
        server.start()
        return cls(api, server)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def enterprise_url(self) -> str:
        """The front end as a GitHub Enterprise Server's host name (localhost) names it."""
        return self.url.replace("127.0.0.1", "localhost")

    def add_repo(
        self, owner: str, name: str, files: dict[str, str], tags: tuple[str, ...] = ("v1.0",)
    ) -> None:
        self.api.add_repository(owner, name)
        make_bare_repo(self.server.root, f"{owner}/{name}", files, tags)

    def add_copy(self, owner: str, name: str, bare: Path) -> None:
        """OWNER/NAME served as a copy of an existing bare repository: the same commits, so that
        a lockfile made against another server (tests/support/gitserver.py) pins commits found here."""
        self.api.add_repository(owner, name)
        shutil.copytree(bare, self.server.root / "repos" / owner / f"{name}.git")

    def access_log(self) -> str:
        return self.server.access_log()

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------------- plumbing


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    api: GitHubAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed in the stand-in itself: written to api.log, which a failing test
        can be read beside (pytest keeps its last temp dirs)."""
        import traceback

        with (self.api.root / "api.log").open("a") as log:
            log.write(f"ERROR serving {client_address}:\n{traceback.format_exc()}\n")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def version_string(self) -> str:
        return "github.com"  # the Server header api.github.com sends

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        api = self.server.api
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = api.handle(method, self.path, self.headers, body)
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json; charset=utf-8"} | reply.headers
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)
        if not self.path.startswith(GIT_FRONT_END + "/"):
            api.requests.append((method, self.path, reply.status))

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header shows the server's clock: clients (octokit) correct their skew by it.
        return email.utils.formatdate(self.server.api.now(), usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        with (self.server.api.root / "api.log").open("a") as log:
            log.write(format % args + "\n")


def _parse_token_request(body: bytes, docs: str) -> dict[str, Any]:
    """The optional JSON body; wrong shapes are 400 "Problems parsing JSON", as api.github.com
    answered in PyGithub's ReplayData/GithubIntegration.testGetAccessTokenWithInvalidData.txt."""
    try:
        request = json.loads(body or b"{}")
        assert isinstance(request, dict)
        names, ids = (
            request.setdefault("repositories", []),
            request.setdefault("repository_ids", []),
        )
        assert isinstance(names, list) and all(isinstance(n, str) for n in names)
        assert isinstance(ids, list) and all(_is_int(n) for n in ids)
        permissions = request.setdefault("permissions", {})
        assert isinstance(permissions, dict)
        assert all(isinstance(v, str) for v in permissions.values())
    except (ValueError, AssertionError, TypeError):
        raise _Refusal(400, "Problems parsing JSON", docs) from None
    return request


def _make_tls(root: Path) -> tuple[Path, Path]:
    """A CA (ROOT/ca.pem, for clients to trust) and a certificate for 127.0.0.1 and localhost."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykey tests GitHub API CA")])

    def builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        builder(name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = root / "server.pem", root / "server-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()
