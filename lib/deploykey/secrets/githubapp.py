"""GitHub App installation tokens: no long-lived key in the build, only tokens minted for it.

With GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY set, every repository on the App's host (github.com,
or a GitHub Enterprise Server named under `github_app:` in deploykey.yml) is fetched over HTTPS
with an installation token, following GitHub's REST API (version 2022-11-28):
1. a JWT signed RS256 with the App's key (`iat` 60 s in the past for clock drift, `exp` 9 minutes
   ahead, `iss` the App), "Generating a JSON Web Token (JWT) for a GitHub App";
2. the installation of each repository's owner, `GET /repos/{owner}/{repo}/installation` (and, when
   that is 404, `GET /orgs/{owner}/installation` then `/users/{owner}/installation`, only to say
   which of "not installed" and "repository not selected" it is);
3. one token per installation, `POST /app/installations/{id}/access_tokens`, narrowed to exactly the
   repositories this build fetches and to `{"contents": "read"}`;
4. git gets it from the credential helper (credentials.py) by host and repository path, served from
   this process's memory: never in a URL, an argument, an environment or a file;
5. when the fetch ends (also on failure and on signals), `DELETE /installation/token` revokes it.

The JWT is signed by the `openssl` binary (`openssl dgst -sha256 -sign /dev/fd/N`), which reads the
App's key from a pipe (never a file; the signing input comes on stdin): every image deploykey
supports has it (it is a dependency of ca-certificates on Debian and Ubuntu, and on the Heroku
stacks), where a library
(cryptography) would be a compiled wheel of several MB for each Python and platform the bootstrap
serves. The key is validated and scanned for like a deploy key (keys.load); its fingerprint is shown
as GitHub's App settings page shows it: SHA256 of the public key's DER, in base64.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from deploykey.core import output, run, trust
from deploykey.core.childenv import secret_env
from deploykey.core.errors import UserError
from deploykey.core.sources import EnvSource
from deploykey.manifests.requirements import GitRequirement
from deploykey.secrets import credentials, keydir, keys
from deploykey.secrets.config import Settings
from deploykey.secrets.credentials import Token
from deploykey.secrets.keys import Key

APP_ID = "GITHUB_APP_ID"
PRIVATE_KEY = "GITHUB_APP_PRIVATE_KEY"
INSTALLATION_ID = "GITHUB_APP_INSTALLATION_ID"
NAMES = (APP_ID, PRIVATE_KEY, INSTALLATION_ID)
API_VERSION = "2022-11-28"
USER = "x-access-token"  # the user name git sends with an installation token
TIMEOUT = 20  # seconds, for the connection and each read (as ssh's ConnectTimeout)
DRIFT = 60  # `iat` this far in the past, as GitHub's documentation advises
LIFETIME = 540  # `exp` after now: GitHub refuses more than 10 minutes after `iat`
PERMISSIONS = {"contents": "read"}


@dataclass
class App:
    """The App this build uses; `minted` collects its tokens, for the leak check."""

    app_id: str
    key: Key
    fingerprint: str  # as GitHub shows the App's private keys
    installation_id: str | None
    host: str
    api_url: str
    git_url: str
    minted: list[Token] = field(default_factory=list)

    def serves(self, req: GitRequirement) -> bool:
        return req.host == self.host and req.scheme in ("ssh", "https")

    def describe(self) -> str:
        return f"GitHub App {self.app_id} ({self.fingerprint}) on {self.host}, API {self.api_url}"


def given(env: EnvSource) -> list[str]:
    """[GITHUB_APP_PRIVATE_KEY] when the env has it, for the lists of a build's secrets."""
    return [PRIVATE_KEY] if env.get(PRIVATE_KEY) is not None else []


def read(env: EnvSource, settings: Settings) -> App | None:
    """The App from GITHUB_APP_ID (or deploykey.yml's `app_id`) and GITHUB_APP_PRIVATE_KEY; None
    when neither is set; an error when only one is, or the key is not an RSA key."""
    configured = settings.github_app
    app_id = env.text(APP_ID) or configured.app_id
    pem = env.get(PRIVATE_KEY)
    if not app_id and not (pem and pem.strip()):
        return None
    if not app_id:
        raise UserError("app::incomplete", given=PRIVATE_KEY, missing=APP_ID, name=APP_ID)
    if not (pem and pem.strip()):
        raise UserError("app::incomplete", given=APP_ID, missing=PRIVATE_KEY, name=PRIVATE_KEY)
    key = keys.load(pem, PRIVATE_KEY, env.describe(PRIVATE_KEY))
    if key.keytype != "RSA":
        raise UserError(
            "app::key-not-rsa",
            source=key.source,
            keytype=key.keytype,
            fingerprint=key.fingerprint,
            name=PRIVATE_KEY,
        )
    host = configured.host
    api = configured.api_url or (
        "https://api.github.com" if host == "github.com" else f"https://{host}/api/v3"
    )
    # Named everywhere (the leak check's findings too) as GitHub's App page names it.
    key = dataclasses.replace(key, fingerprint=github_fingerprint(key.public))
    return App(
        app_id.strip(),
        key,
        key.fingerprint,
        env.text(INSTALLATION_ID) or configured.installation_id,
        host,
        api,
        configured.git_url or f"https://{host}",
    )


def github_fingerprint(public: str) -> str:
    """SHA256 of an RSA public key's SubjectPublicKeyInfo DER, in base64, from its OpenSSH form:
    what `openssl rsa -pubout -outform DER | openssl sha256 -binary | base64` prints, and GitHub
    lists beside an App's private keys."""
    blob = base64.b64decode(public.split()[1])
    fields, offset = [], 0
    while offset < len(blob):
        size = int.from_bytes(blob[offset : offset + 4], "big")
        fields.append(blob[offset + 4 : offset + 4 + size])
        offset += 4 + size
    _kind, exponent, modulus = fields[:3]
    rsa_key = _der(0x30, _der(0x02, modulus) + _der(0x02, exponent))
    algorithm = _der(0x30, bytes.fromhex("06092a864886f70d010101") + bytes.fromhex("0500"))
    info = _der(0x30, algorithm + _der(0x03, b"\0" + rsa_key))
    return "SHA256:" + base64.b64encode(hashlib.sha256(info).digest()).decode()


def _der(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + value


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def message(self) -> str:
        said = self.body.get("message") if isinstance(self.body, dict) else None
        return str(said or f"HTTP {self.status}")


@dataclass
class Session:
    """The App's tokens for one fetch: minted as repositories turn up, revoked at its end."""

    app: App
    key_dir: Path
    index: str  # the credential helper's lines for the build's own tokens (GITHUB_TOKEN, ...)
    server: credentials.Server  # serves the minted tokens to git's credential helper
    lines: list[str] = field(default_factory=list)
    covered: set[tuple[str, str]] = field(default_factory=set)
    installations: dict[str, dict[str, Any]] = field(default_factory=dict)  # by owner
    _jwt: tuple[float, str] | None = None

    def git_config(self) -> list[tuple[str, str]]:
        """For deploykey's fetch only: the App host's URLs, over HTTPS to `git_url`, and the
        helper asked with each repository's path (a token opens only its installation's)."""
        base = self.app.git_url + "/"
        entries = [
            (f"url.{base}.insteadOf", form)
            for form in (
                f"ssh://git@{self.app.host}/",
                f"git@{self.app.host}:",
                f"https://{self.app.host}/",
            )
            if form != base
        ]
        entries.append((f"credential.{self.app.git_url}.useHttpPath", "true"))
        return entries

    def cover(self, reqs: list[GitRequirement]) -> None:
        """A token for every repository among `reqs` on the App's host that none covers yet: one
        per installation, narrowed to those repositories."""
        wanted: dict[str, list[tuple[str, GitRequirement]]] = {}
        for req in reqs:
            if not self.app.serves(req):
                continue
            owner, _, name = req.repo.partition("/")
            if (owner.lower(), name.lower()) in self.covered:
                continue
            if not name or "/" in name:
                raise UserError(
                    "app::api",
                    status="-",
                    request=req.remote,
                    message="not an owner/repository path",
                    documentation="a GitHub repository is named OWNER/REPOSITORY.",
                )
            pairs = wanted.setdefault(owner.lower(), [])
            if all(name.lower() != seen.lower() for seen, _ in pairs):
                pairs.append((name, req))
        for owner, pairs in sorted(wanted.items()):
            try:
                installation = self._installation(owner, [name for name, _ in pairs])
            except UserError as error:
                # An https URL may be a public repository: without the App on its owner, it is
                # fetched as it is, with no token. An ssh URL always needs a credential.
                if error.slug != "app::not-installed" or any(
                    req.scheme == "ssh" for _, req in pairs
                ):
                    raise
                output.detail(
                    f"the App is not installed on {owner}: {', '.join(f'{owner}/{n}' for n, _ in pairs)} fetched with no token"
                )
                self.covered.update((owner, name.lower()) for name, _ in pairs)
                continue
            self._mint(owner, installation, pairs)

    def _installation(self, owner: str, names: list[str]) -> dict[str, Any]:
        if owner in self.installations:
            return self.installations[owner]
        installation = self._given(owner)
        if installation is None:
            # Each repository in turn: the first may be the one not selected, the others not.
            for name in names:
                found = self._app_call("GET", f"/repos/{owner}/{name}/installation", missing=True)
                if found.status != 404:
                    installation = found.body if isinstance(found.body, dict) else {}
                    break
            else:
                self._not_found(owner, names[0], names)
        assert installation is not None
        granted = installation.get("permissions") or {}
        if granted.get("contents") not in ("read", "write"):
            raise UserError(
                "app::no-contents",
                owner=owner,
                installation=installation.get("id"),
                permissions=", ".join(f"{k}: {v}" for k, v in sorted(granted.items())) or "none",
                settings_url=self._settings_url(installation, owner),
            )
        self.installations[owner] = installation
        return installation

    def _given(self, owner: str) -> dict[str, Any] | None:
        """The installation `installation_id` names, when it is the one on `owner`: an App has
        one installation per account, and the id given is for one of them (the others are
        found by their repositories)."""
        if not self.app.installation_id:
            return None
        found = self._app_call("GET", f"/app/installations/{self.app.installation_id}")
        installation = found.body if isinstance(found.body, dict) else {}
        account = installation.get("account") or {}
        if str(account.get("login") or "").lower() != owner:
            output.detail(
                f"installation {self.app.installation_id} is on {account.get('login')}, not "
                f"{owner}: {owner}'s is looked up by its repositories"
            )
            return None
        return installation

    def _unreadable(self, owner: str, names: list[str], number: Any) -> list[str]:
        """Which of `names` the installation `number` cannot read, asked one by one (a token
        request for several fails whole, naming none)."""
        unreadable = []
        for name in names:
            found = self._app_call("GET", f"/repos/{owner}/{name}/installation", missing=True)
            body = found.body if isinstance(found.body, dict) else {}
            if found.status == 404 or body.get("id") != number:
                unreadable.append(name)
        return unreadable or names

    def _not_selected(self, owner: str, names: list[str], installation: dict[str, Any]) -> NoReturn:
        raise UserError(
            "app::repository-not-selected",
            owner=owner,
            repos=", ".join(f"{owner}/{name}" for name in names),
            installation=installation.get("id"),
            settings_url=self._settings_url(installation, owner),
        )

    def _not_found(self, owner: str, repo: str, names: list[str]) -> None:
        """404 for every repository: the App is on the owner without them, or not on it."""
        for kind in ("orgs", "users"):
            other = self._app_call("GET", f"/{kind}/{owner}/installation", missing=True)
            if other.status == 200 and isinstance(other.body, dict):
                self._not_selected(owner, names, other.body)
        page = self._app_call("GET", "/app", missing=True)
        html = page.body.get("html_url") if isinstance(page.body, dict) else None
        slug = page.body.get("slug") if isinstance(page.body, dict) else None
        raise UserError(
            "app::not-installed",
            app=slug or self.app.app_id,
            owner=owner,
            repo=repo,
            host=self.app.host,
            repos=", ".join(f"{owner}/{name}" for name in names),
            install_url=f"{html}/installations/new" if html else "the App's public page",
        )

    def _settings_url(self, installation: dict[str, Any], owner: str) -> str:
        number = installation.get("id")
        account = installation.get("account") or {}
        if account.get("type") == "Organization":
            return f"https://{self.app.host}/organizations/{owner}/settings/installations/{number}"
        return f"https://{self.app.host}/settings/installations/{number}"

    def _mint(
        self, owner: str, installation: dict[str, Any], pairs: list[tuple[str, GitRequirement]]
    ) -> None:
        number = installation.get("id")
        names = sorted(name for name, _ in pairs)
        answer = self._app_call(
            "POST",
            f"/app/installations/{number}/access_tokens",
            {"repositories": names, "permissions": PERMISSIONS},
            missing=True,
        )
        if answer.status == 422 and "permission" in answer.message.lower():
            raise UserError(
                "app::no-contents",
                owner=owner,
                installation=number,
                permissions=answer.message,
                settings_url=self._settings_url(installation, owner),
            )
        if answer.status in (404, 422):
            self._not_selected(owner, self._unreadable(owner, names, number), installation)
        if answer.status != 201 or not isinstance(answer.body, dict):
            self._refused(answer, f"POST /app/installations/{number}/access_tokens")
        value = str(answer.body.get("token") or "")
        if not value:
            self._refused(answer, f"POST /app/installations/{number}/access_tokens")
        output.add_secret(value)
        token = Token(f"app token {owner} ({number})", self.app.host, USER, value.encode())
        file_name = f"app_token_{len(self.app.minted) + 1}"
        self.server.add(file_name, token.value)
        self.app.minted.append(token)
        helper_host = self.app.git_url.split("://", 1)[1].split("/", 1)[0]
        for name, req in pairs:
            self.covered.add((owner, name.lower()))
            path = req.remote.split("://", 1)[1].split("/", 1)[1].removesuffix(".git")
            self.lines.append(f"{helper_host} {USER} {file_name} {path}\n")
        self._write_index()
        granted = answer.body.get("permissions") or {}
        output.detail(
            f"minted an installation token for {owner} (installation {number}): "
            f"{', '.join(f'{owner}/{n}' for n in names)}; "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(granted.items()))}; "
            f"expires {answer.body.get('expires_at')}; revoked when the fetch ends"
        )

    def _write_index(self) -> None:
        """The helper's index, replaced whole: the App's lines (by path) before the host-wide
        lines of the build's own tokens."""
        target = self.key_dir / credentials.INDEX
        staging = target.with_name(credentials.INDEX + ".new")
        staging.unlink(missing_ok=True)
        keydir.write_new(staging, ("".join(self.lines) + self.index).encode())
        staging.replace(target)
        keydir.watch(target)

    def revoke(self) -> None:
        """DELETE /installation/token for each minted token; one that cannot be revoked expires
        within the hour, and the build says so."""
        for token in self.app.minted:
            try:
                answer = _call(
                    self.app.api_url,
                    "DELETE",
                    "/installation/token",
                    f"Bearer {token.value.decode()}",
                )
            except UserError as error:
                output.warn(
                    f"could not revoke the {token.name}: {error.title} (it expires within the hour)"
                )
                continue
            if answer.status == 204:
                output.detail(f"revoked the {token.name}: it opens nothing now")
            else:
                output.warn(
                    f"could not revoke the {token.name}: GitHub answered {answer.status} "
                    f"({answer.message}); it expires within the hour"
                )

    def _app_call(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing: bool = False
    ) -> Answer:
        """A request as the App (JWT); an error for anything but success (and, when `missing`,
        404 and 422, which the caller words)."""
        answer = _call(self.app.api_url, method, path, f"Bearer {self._token()}", body)
        if not (200 <= answer.status < 300 or (missing and answer.status in (404, 422))):
            self._refused(answer, f"{method} {path}")
        return answer

    def _refused(self, answer: Answer, request: str) -> NoReturn:
        message = answer.message
        if answer.status in (403, 429) and (
            answer.headers.get("x-ratelimit-remaining") == "0"
            or "retry-after" in answer.headers
            or "rate limit" in message.lower()
        ):
            raise UserError(
                "app::rate-limited", message=message, status=answer.status, reset=_reset(answer)
            )
        if answer.status == 401:
            lowered = message.lower()
            offset = _clock_offset(answer)
            if "'iat'" in lowered or "'exp'" in lowered or abs(offset or 0) > 30:
                raise UserError("app::clock", message=message, offset=_offset_text(offset))
            raise UserError(
                "app::rejected",
                message=message,
                app_id=self.app.app_id,
                fingerprint=self.app.fingerprint,
            )
        documentation = (
            answer.body.get("documentation_url") if isinstance(answer.body, dict) else None
        )
        raise UserError(
            "app::api",
            status=answer.status,
            request=request,
            message=message,
            documentation=f"GitHub's documentation: {documentation}" if documentation else "",
        )

    def _token(self) -> str:
        """The App's JWT, signed again when less than a minute of it is left."""
        now = time.time()
        if self._jwt is not None and self._jwt[0] - now > 60:
            return self._jwt[1]
        issued = int(now) - DRIFT
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        issuer: int | str = int(self.app.app_id) if self.app.app_id.isdigit() else self.app.app_id
        claims = {"iat": issued, "exp": int(now) + LIFETIME, "iss": issuer}
        unsigned = f"{header}.{_b64(json.dumps(claims).encode())}"
        openssl = run.which("openssl", "sign the GitHub App's JWT")
        # The key on a pipe openssl opens as /dev/fd/N, the signing input on stdin: the key is
        # never a file a process of the same user could copy (SECURITY.md).
        status, signature, said = run.binary(
            [openssl, "dgst", "-sha256", "-sign", run.PIPED],
            env=secret_env(),
            stdin=unsigned.encode(),
            secret=self.app.key.material,
        )
        if status != 0 or not signature:
            raise UserError(
                "app::rejected",
                message=f"openssl could not sign with it ({said.strip()[-200:]})",
                app_id=self.app.app_id,
                fingerprint=self.app.fingerprint,
            )
        jwt = f"{unsigned}.{_b64(signature)}"
        output.add_secret(jwt)
        self._jwt = (now + LIFETIME, jwt)
        return jwt


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _call(
    api: str, method: str, path: str, authorization: str, body: dict[str, Any] | None = None
) -> Answer:
    """One request to GitHub's REST API, with the headers its documentation asks for; the
    system's CA store (where a TLS-inspecting proxy's CA is) and SSL_CERT_FILE's (trust.py),
    HTTPS_PROXY, a timeout."""
    # Here, not at the top: ssl and urllib.request (http.client, email) are ~15 ms of every
    # command's start-up (python3 -X importtime), and only a build with a GitHub App needs them.
    import ssl
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - api_url is https, or http to this machine
        api + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": authorization,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "deploykey",
            **({"Content-Type": "application/json"} if body is not None else {}),
        },
    )
    context = trust.context()
    for attempt in (1, 2):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
                return _answer(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return _answer(error.code, error.read(), error.headers)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            if isinstance(reason, ssl.SSLCertVerificationError):
                host = api.split("://", 1)[1].split("/", 1)[0]
                said = reason.verify_message or str(reason)
                raise trust.untrusted(host, "GitHub's API", said) from None
            # One more try after a connection that broke (a reset, a TLS stream cut short): a
            # URLError broke before the request was sent whole, so GitHub cannot have acted on
            # it; after that (the answer lost), only a request that may be repeated is.
            sent = not isinstance(error, urllib.error.URLError)
            if attempt == 1 and (method in ("GET", "DELETE") or not sent):
                time.sleep(1)
                continue
            raise UserError("app::unreachable", url=api, reason=str(reason)) from None
    raise AssertionError("unreachable")


def _answer(status: int, raw: bytes, headers: Any) -> Answer:
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    return Answer(status, body, {k.lower(): v for k, v in (headers or {}).items()})


def _clock_offset(answer: Answer) -> float | None:
    """How far this machine's clock is from GitHub's (its Date header), in seconds."""
    date = answer.headers.get("date")
    if not date:
        return None
    import email.utils  # with urllib.request: only a build with a GitHub App needs it

    try:
        return time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


def _offset_text(offset: float | None) -> str:
    if offset is None:
        return "GitHub's answer had no Date header to compare this machine's clock with."
    way = "ahead of" if offset > 0 else "behind"
    return f"This machine's clock is {abs(offset):.0f} s {way} GitHub's (its Date header)."


def _reset(answer: Answer) -> str:
    if "retry-after" in answer.headers:
        return f"GitHub asks to wait {answer.headers['retry-after']} s."
    reset = answer.headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        when = time.strftime("%H:%M:%S UTC", time.gmtime(int(reset)))
        return f"The limit resets at {when}."
    return "GitHub did not say when the limit resets."
