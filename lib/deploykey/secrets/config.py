"""Settings: `deploykey.yml` in the app root (per-host ssh settings, no secrets) and DEPLOYKEY_* vars.

A DEPLOYKEY_* setting is read from the kit's own environment first (a local run, a CI job, an
earlier buildpack's export) and then from the platform's config vars (Heroku ENV_DIR): on Heroku,
config vars never reach a buildpack's environment, only its env dir.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykey.core import permissions
from deploykey.core.errors import UserError
from deploykey.core.sources import EnvSource
from deploykey.secrets import hosts

CONFIG_FILE = "deploykey.yml"
HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
HOST_FIELDS = ("hostname", "port", "user", "known_hosts")
# Control characters (a newline from a YAML block scalar `|`, a tab): `$` in a pattern matches
# before a final newline, and one in a host field splits ssh_config and every message in two.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SECTIONS = ("hosts", "keys", "tokens", "github_app")
APP_FIELDS = ("app_id", "installation_id", "host", "api_url", "git_url")
KEY_VAR = re.compile(r"^DEPLOY_KEY(_[A-Z0-9_]+)?$")
TOKEN_VAR = re.compile(r"^[A-Z][A-Z0-9_]*$")
# A repository (org/repo, group/sub/repo), a glob of them (acme/*), a host (gitlab.com), or a
# host-qualified repository (gitlab.com/group/repo).
PATTERN = re.compile(r"^[A-Za-z0-9._*-]+(/[A-Za-z0-9._*-]+)*$")
# Tokens for HTTPS, by config var: the host they open and the user name the host expects with them.
DEFAULT_TOKENS = {
    "GITHUB_TOKEN": ("github.com", "x-access-token"),
    "GITLAB_TOKEN": ("gitlab.com", "oauth2"),
    "BITBUCKET_TOKEN": ("bitbucket.org", "x-token-auth"),
}
# A positive whole number of seconds; of bytes, or of KiB, MiB, GiB (K, M, G: shifts of 10, 20, 30).
AMOUNT = {
    "seconds": re.compile(r"[1-9][0-9]{0,8}"),
    "bytes": re.compile(r"[1-9][0-9]{0,15}[KMGkmg]?"),
}
AMOUNT_FORM = {
    "seconds": "a whole number of seconds, e.g. 900",
    "bytes": "a whole number of bytes, or of KiB, MiB or GiB with K, M or G, e.g. 500M or 4G",
}
UNITS = {"K": 10, "M": 20, "G": 30}
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    choices: tuple[str, ...] | None
    meaning: str
    unit: str | None = None  # "seconds" or "bytes": a positive amount (AMOUNT)


SETTINGS = (
    Setting(
        "DEPLOYKEY_INSTALL",
        "auto",
        ("auto", "python", "venv", "off"),
        "Where requirements go. `python`: the Python an earlier buildpack put in `.heroku/python`; "
        "`venv`: a virtual environment in the app; `off`: only set ssh up and hand it to the next "
        "buildpack through `export`. `auto`: `python` when `.heroku/python` exists, else `off` on "
        "Heroku (`STACK` set: heroku/python is expected to follow), else `venv`.",
    ),
    Setting(
        "DEPLOYKEY_INSTALLER",
        "auto",
        ("auto", "uv", "pip"),
        "What installs a requirements file: `uv` (from PyPI, installed into the build cache "
        "once), `pip`, or `auto`: uv, and pip when uv cannot be had or for `-e git+...` "
        "requirements. Its cache is kept in the build cache (Heroku CACHE_DIR, a CNB cache layer, "
        "`install --cache-dir`). A uv.lock, poetry.lock or Pipfile.lock is installed with its own "
        "tool (see [Package managers](#package-managers-pip-uv-poetry-pipenv)).",
    ),
    Setting(
        "DEPLOYKEY_REQUIREMENTS",
        "requirements.txt",
        None,
        "The requirements file to install, relative to the app dir. Unset, the app's files "
        "decide as heroku-buildpack-python does (uv.lock, poetry.lock, Pipfile.lock or "
        "requirements.txt); set, this file is installed with uv or pip whatever else the app has.",
    ),
    Setting(
        "DEPLOYKEY_APP_PATH",
        "/app",
        None,
        "The path the app runs from; a virtual environment is built so that it works there.",
    ),
    Setting(
        "DEPLOYKEY_VENV", ".venv", None, "The virtual environment's directory, relative to the app."
    ),
    Setting(
        "DEPLOYKEY_SCAN_INCOMPLETE",
        "fail",
        ("fail", "warn"),
        "An archive the leak check could not unpack in full (corrupt, truncated, encrypted, past "
        "the 1 GiB bound): `fail` the build, naming each; `warn`: name them, search their bytes "
        "only, and go on (for a package that ships broken archives as test data).",
    ),
    Setting(
        "DEPLOYKEY_DRY_RUN",
        "0",
        TRUE + FALSE[:-1],
        "`1`: validate the key and print the plan; write nothing (same as `--dry-run`).",
    ),
    Setting(
        "DEPLOYKEY_FETCH_TIMEOUT",
        "600",
        None,
        "Seconds the whole fetch may take (every private repository, with the keys on the "
        "machine): past it, git and ssh are stopped, the keys removed, and the build fails naming "
        "what was still being fetched ([fetch::deadline](#fetch-deadline)). A host that keeps "
        "talking (one ref a second) is never cut by ssh's or git's silence timeouts. Ten minutes "
        "leave room within Heroku's 15-minute build limit and are many times what a fetch of "
        "real dependencies takes.",
        unit="seconds",
    ),
    Setting(
        "DEPLOYKEY_FETCH_MAX_SIZE",
        "2G",
        None,
        "What one host may send during the fetch, all its repositories together, in bytes (or "
        "with K, M, G: powers of 1024): past it, git and ssh are stopped, the keys removed, and "
        "the build fails ([fetch::too-much](#fetch-too-much)). GitHub refuses pushes over 2 GB "
        "and asks that repositories stay under 1 GB; a host sending more for one build's "
        "dependencies is taken to be broken or hostile (an endless ref advertisement fills memory "
        "and disk).",
        unit="bytes",
    ),
    Setting(
        "DEPLOYKEY_FETCHED",
        "",
        None,
        "CNB, keyless: the path in the build container where `pack build --volume` mounts the "
        "directory that `deploykey fetch --cache-dir DIR` filled outside the build; deploykey's "
        "buildpack then installs from those mirrors and needs no key "
        "([The key outside the build container](#the-key-outside-the-build-container-keyless-cnb)).",
    ),
)
SETTING = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class HostConfig:
    """How to reach one host named in requirements: where to connect and which host keys to trust."""

    name: str
    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    known_hosts: tuple[hosts.HostKey, ...] | None = None

    @property
    def address(self) -> str:
        return f"{self.hostname or self.name}:{self.port or 22}"

    def trusted(self) -> tuple[hosts.HostKey, ...]:
        """The keys ssh will accept for this host: the configured ones, else the pinned ones."""
        if self.known_hosts is not None:
            return self.known_hosts
        return hosts.pinned_for(self.name)


@dataclass(frozen=True)
class TokenConfig:
    """A token config var for HTTPS: the host (host or host:port) it is sent to, with which user."""

    name: str
    host: str
    username: str


@dataclass(frozen=True)
class AppConfig:
    """deploykey.yml's `github_app:` (no secret: the App's key is a config var or a secret).
    `api_url`: the REST API (GitHub Enterprise Server: https://HOST/api/v3); `git_url`: where git
    fetches the host's repositories over HTTPS; both derived from `host` when not given."""

    app_id: str | None = None
    installation_id: str | None = None
    host: str = "github.com"
    api_url: str | None = None
    git_url: str | None = None


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, str]
    hosts: Mapping[str, HostConfig]
    config_file: Path | None
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tokens: Mapping[str, TokenConfig] = field(default_factory=dict)
    given: frozenset[str] = frozenset()  # the DEPLOYKEY_* settings set, not defaulted
    github_app: AppConfig = field(default_factory=AppConfig)
    # deploykey.yml's parse to keep for the next build (Parsed), its bytes and the mapping.
    unkept: tuple[Parsed, bytes, Any] | None = field(default=None, compare=False, repr=False)

    def keep_parse(self) -> None:
        """Keeps deploykey.yml's parse for the next build: called once the fetch and install
        went well, before the leak check, so a build that fails leaves nothing new behind."""
        if self.unkept is not None:
            parsed, data, mapping = self.unkept
            parsed.keep(data, mapping)

    def get(self, name: str) -> str:
        return self.values[name]

    @property
    def install(self) -> str:
        return self.values["DEPLOYKEY_INSTALL"]

    @property
    def dry_run(self) -> bool:
        return self.values["DEPLOYKEY_DRY_RUN"] in TRUE

    def amount(self, name: str) -> int:
        """A setting with a unit, as a number (seconds, bytes); checked when it was read."""
        value = self.values[name]
        return int(value[:-1]) << UNITS[value[-1].upper()] if value[-1].isalpha() else int(value)

    def host(self, name: str) -> HostConfig:
        return self.hosts.get(name) or HostConfig(name)

    def token_configs(self) -> dict[str, TokenConfig]:
        """The defaults (GITHUB_TOKEN, ...), then deploykey.yml's `tokens:`, which win."""
        found = {
            name: TokenConfig(name, host, user) for name, (host, user) in DEFAULT_TOKENS.items()
        }
        found.update(self.tokens)
        return found


@dataclass(frozen=True)
class Parsed:
    """Where bin/compile keeps what PyYAML made of deploykey.yml for the next build, and the key
    it seals that with. PyYAML's import alone was 12% of the instructions of a warm build that
    restores its environment (94 of 771 million, callgrind, bench/lockfiles.py's uv app): the next
    build with the same deploykey.yml takes the mapping from the record instead, when the record's
    HMAC checks, over the sha256 of deploykey.yml's bytes as they are now and the mapping. Build
    code can write the cache, but never had the key (`bootstrap.seal_key`: from the build's
    private keys), so it can neither forge a record nor make one for other bytes; a record of
    another deploykey.yml, another key (a rotation), a link or anything but a regular file is
    not read, and deploykey.yml is parsed again. Kept by a build that went well
    (Settings.keep_parse), not in a dry run."""

    file: Path
    key: bytes

    def recorded(self, data: bytes) -> Any:
        """The mapping recorded for these bytes, or NOT_RECORDED."""
        record = permissions.read_regular(self.file, LARGEST_RECORD)
        if record is None:
            return NOT_RECORDED
        seal, body = record[:32], record[32:]
        if not hmac.compare_digest(seal, self._seal(data, body)):
            return NOT_RECORDED
        return json.loads(body)

    def keep(self, data: bytes, parsed: Any) -> None:
        """Best effort: a mapping JSON cannot give back as it is (a date, a key that is not a
        string) is not kept, nor anything where the cache is not a directory of this user's."""
        try:
            body = json.dumps(parsed, sort_keys=True).encode()
        except (TypeError, ValueError):
            return
        if json.loads(body) != parsed or len(body) + 32 > LARGEST_RECORD:
            return
        permissions.write_private(self.file, self._seal(data, body) + body)

    def _seal(self, data: bytes, body: bytes) -> bytes:
        mac = hmac.new(self.key, b"deploykey/config-parse/v1", hashlib.sha256)
        for part in (hashlib.sha256(data).digest(), body):
            mac.update(len(part).to_bytes(8, "big") + part)
        return mac.digest()


NOT_RECORDED = object()
LARGEST_RECORD = 1 << 20


def load(
    app_dir: Path,
    env: EnvSource | None,
    environ: Mapping[str, str] | None = None,
    parsed: Parsed | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    values = {setting.name: _value(setting, env, environ) for setting in SETTINGS}
    given = frozenset(s.name for s in SETTINGS if _raw(s.name, env, environ).strip())
    config_file = app_dir / CONFIG_FILE
    if config_file.is_file():
        data, mapping, recorded = _load_config(config_file, parsed)
        hosts, keys, tokens, app = _read_config(config_file, mapping)
        dry = values["DEPLOYKEY_DRY_RUN"] in TRUE
        unkept = (parsed, data, mapping) if parsed and not recorded and not dry else None
        return Settings(values, hosts, config_file, keys, tokens, given, app, unkept)
    return Settings(values, {}, None, given=given)


def _raw(name: str, env: EnvSource | None, environ: Mapping[str, str]) -> str:
    raw = environ.get(name)
    if raw is None and env is not None:
        raw = env.text(name)
    return raw or ""


def _value(setting: Setting, env: EnvSource | None, environ: Mapping[str, str]) -> str:
    raw = _raw(setting.name, env, environ)
    value = setting.default if raw.strip() == "" else raw.strip()
    if setting.unit is not None and not AMOUNT[setting.unit].fullmatch(value):
        raise UserError(
            "config::amount",
            name=setting.name,
            value=raw,
            form=AMOUNT_FORM[setting.unit],
            default=setting.default,
        )
    if setting.choices is not None:
        value = value.lower()
        if value not in setting.choices:
            raise UserError(
                "config::setting",
                name=setting.name,
                value=raw,
                choices=", ".join(setting.choices),
                default=setting.default,
            )
    return value


def _load_config(path: Path, parsed: Parsed | None) -> tuple[bytes, Any, bool]:
    """deploykey.yml's bytes, what PyYAML makes of them (or the record of that: Parsed), and
    whether it came from the record."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError("config::invalid", path=path, detail=str(exc)) from None
    mapping = parsed.recorded(raw) if parsed else NOT_RECORDED
    if mapping is not NOT_RECORDED:
        return raw, mapping, True
    return raw, _parse(path, raw), False


def _read_config(
    path: Path, data: Any
) -> tuple[dict[str, HostConfig], dict[str, tuple[str, ...]], dict[str, TokenConfig], AppConfig]:
    if data is None:
        return {}, {}, {}, AppConfig()
    if not isinstance(data, dict):
        raise UserError("config::invalid", path=path, detail="the top level must be a mapping")
    unknown = sorted(set(map(str, data)) - set(SECTIONS))
    if unknown:
        raise UserError(
            "config::invalid",
            path=path,
            detail=f"unknown key {unknown[0]!r} (known: {', '.join(SECTIONS)})",
        )
    sections = {name: data.get(name) or {} for name in SECTIONS}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise UserError("config::invalid", path=path, detail=f"`{name}` must be a mapping")
    hosts = {
        str(name): _host(path, str(name), fields) for name, fields in sections["hosts"].items()
    }
    keys = {
        str(name): _patterns(path, str(name), value) for name, value in sections["keys"].items()
    }
    tokens = {
        str(name): _token(path, str(name), value) for name, value in sections["tokens"].items()
    }
    return hosts, keys, tokens, _app(path, sections["github_app"])


def _parse(path: Path, raw: bytes) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "YAML syntax error"
        raise UserError("config::invalid", path=path, detail=f"{problem}{where}") from None
    except UnicodeDecodeError as exc:
        raise UserError("config::invalid", path=path, detail=str(exc)) from None
    except RecursionError:
        # PyYAML composes nested flow collections by recursion.
        detail = "its lists or mappings are nested too deeply"
        raise UserError("config::invalid", path=path, detail=detail) from None


# A URL deploykey sends the App's JWT or a token to: https, or http on this machine only.
APP_URL = re.compile(
    r"^(https://[A-Za-z0-9.-]+(:[0-9]+)?|http://(127\.0\.0\.1|localhost)(:[0-9]+)?)(/[A-Za-z0-9._~/-]*)?$"
)


def _app(path: Path, fields: dict[Any, Any]) -> AppConfig:
    def invalid(detail: str) -> UserError:
        return UserError("config::invalid", path=path, detail=f"github_app: {detail}")

    if _holds_private_key(fields):
        raise UserError("config::key-inside", path=path, name="github_app")
    unknown = sorted(set(map(str, fields)) - set(APP_FIELDS))
    if unknown:
        raise invalid(f"unknown setting {unknown[0]!r} (known: {', '.join(APP_FIELDS)})")
    found: dict[str, str] = {}
    for name, value in fields.items():
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text is None or CONTROL.search(text):
            raise invalid(f"{name} must be one line of text")
        found[str(name)] = text.strip()
    for name in ("app_id", "installation_id"):
        if name in found and not re.fullmatch(r"[0-9]+|Iv[0-9A-Za-z.]+", found[name]):
            raise invalid(f"{name} must be the App's number (or its client id, Iv...)")
    if "host" in found and not HOST_NAME.fullmatch(found["host"]):
        raise invalid("host must be a host name, e.g. github.com or github.example.com")
    for name in ("api_url", "git_url"):
        if name in found and not APP_URL.fullmatch(found[name]):
            raise invalid(f"{name} must be an https:// URL (http:// only to this machine)")
    return AppConfig(
        found.get("app_id"),
        found.get("installation_id"),
        found.get("host", "github.com").lower(),
        found.get("api_url", "").rstrip("/") or None,
        found.get("git_url", "").rstrip("/") or None,
    )


def _patterns(path: Path, name: str, value: Any) -> tuple[str, ...]:
    def invalid(detail: str) -> UserError:
        return UserError("config::invalid", path=path, detail=f"keys: {name}: {detail}")

    if _holds_private_key(value):
        raise UserError("config::key-inside", path=path, name=name)
    if not KEY_VAR.fullmatch(name):
        raise invalid("a key's config var is DEPLOY_KEY or DEPLOY_KEY_<NAME> (capitals, digits, _)")
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not entries:
        raise invalid("must list repositories (org/repo, org/*) or hosts (gitlab.com)")
    for entry in entries:
        if not isinstance(entry, str) or not PATTERN.match(entry):
            shown = repr(entry) if isinstance(entry, str) else reprlib.repr(entry)
            raise invalid(f"{shown} is not a repository, a glob of repositories or a host")
    return tuple(str(entry).lower().removesuffix(".git") for entry in entries)


def _holds_private_key(value: Any) -> bool:
    """Whether any string in a YAML value holds a private key. Each node once: YAML aliases make a
    value a graph, whose repr() (`&a [*b, *b, ...]` nine deep) is billions of items long."""
    seen: set[int] = set()
    pending = [value]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, str) and "PRIVATE KEY" in node:
            return True
        if isinstance(node, bytes) and b"PRIVATE KEY" in node:  # !!binary
            return True
        if isinstance(node, dict):
            pending += [*node, *node.values()]
        elif isinstance(node, (list, set, tuple)):  # set: !!set
            pending += node
    return False


def _token(path: Path, name: str, value: Any) -> TokenConfig:
    def invalid(detail: str) -> UserError:
        return UserError("config::invalid", path=path, detail=f"tokens: {name}: {detail}")

    if not TOKEN_VAR.fullmatch(name) or KEY_VAR.fullmatch(name):
        raise invalid("a token's config var name is in capitals, e.g. GITHUB_TOKEN")
    fields = {"host": value} if isinstance(value, str) else value
    if not isinstance(fields, dict) or set(map(str, fields)) - {"host", "username"}:
        raise invalid("must be a host, or a mapping with host and username")
    host, username = fields.get("host"), fields.get("username")
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", host):
        raise invalid("host must be a host name, optionally with :port")
    default_user = DEFAULT_TOKENS.get(name, ("", "x-access-token"))[1]
    if username is not None and not (
        isinstance(username, str) and re.fullmatch(r"[A-Za-z0-9._@-]+", username)
    ):
        raise invalid("username must be a user name")
    return TokenConfig(name, host.lower(), username or default_user)


def _host(path: Path, name: str, fields: Any) -> HostConfig:
    shown = repr(name) if CONTROL.search(name) else name  # one line, whatever the file holds

    def invalid(detail: str) -> UserError:
        return UserError("config::invalid", path=path, detail=f"hosts: {shown}: {detail}")

    if CONTROL.search(name):
        raise invalid(_control(name))
    if not HOST_NAME.fullmatch(name):
        raise invalid("not a host name")
    fields = fields or {}
    if not isinstance(fields, dict):
        raise invalid("must be a mapping of " + ", ".join(HOST_FIELDS))
    unknown = sorted(set(map(str, fields)) - set(HOST_FIELDS))
    if unknown:
        raise invalid(f"unknown setting {unknown[0]!r} (known: {', '.join(HOST_FIELDS)})")
    hostname, port, user = fields.get("hostname"), fields.get("port"), fields.get("user")
    for field_name, value in (("hostname", hostname), ("user", user)):
        if isinstance(value, str) and CONTROL.search(value):
            raise invalid(f"{field_name} {value!r} {_control(value)}")
    if hostname is not None and not (isinstance(hostname, str) and HOST_NAME.fullmatch(hostname)):
        raise invalid("hostname must be a host name or an IP address")
    if port is not None and not (
        isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    ):
        raise invalid("port must be a number from 1 to 65535")
    if user is not None and not (isinstance(user, str) and re.fullmatch(r"[A-Za-z0-9._-]+", user)):
        raise invalid("user must be a user name")
    return HostConfig(
        name, hostname, port, user, _known_hosts(name, fields.get("known_hosts"), invalid)
    )


def _control(value: str) -> str:
    what = "a newline" if "\n" in value or "\r" in value else "a control character"
    return f"holds {what}; write it on one line, without quotes or `|` that add one"


def _known_hosts(name: str, entries: Any, invalid: Any) -> tuple[hosts.HostKey, ...] | None:
    if entries is None:
        return None
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise invalid("known_hosts must be a list of host key lines")
    keys = []
    for index, entry in enumerate(entries, 1):
        try:
            line = entry if isinstance(entry, str) else reprlib.repr(entry)  # bounded, see above
            keys.append(hosts.parse(line, default_host=name))
        except ValueError as exc:
            raise UserError("host::known-hosts", host=name, index=index, detail=str(exc)) from None
    return tuple(keys)
