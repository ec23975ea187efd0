"""Where config vars, and so keys, come from: a platform env dir, or a .env file for local runs.

Heroku passes config vars to bin/compile as ENV_DIR, one file per variable (name = variable, content
= raw value, trailing newline kept). The kit reads keys from those files, never from its own
environment: heroku-buildpack-python exports them to hooks with `$(cat file)`, which strips the final
newline OpenSSH needs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploykey.core import permissions
from deploykey.core.errors import UserError

VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_NAME = re.compile(r"^DEPLOY_KEY(?:_[A-Z0-9_]+)?$")
BINDING_TYPES = ("ssh-auth", "kubernetes.io/ssh-auth")
# A GitHub App as a binding of its own type: its entries, and the variables they stand for.
APP_BINDING_TYPE = "github-app"
APP_BINDING = {
    "app-id": "GITHUB_APP_ID",
    "private-key": "GITHUB_APP_PRIVATE_KEY",
    "installation-id": "GITHUB_APP_INSTALLATION_ID",
}


def binding_key_name(binding: str) -> str:
    """deploy-key -> DEPLOY_KEY, billing-repo -> DEPLOY_KEY_BILLING_REPO."""
    upper = re.sub(r"[^A-Za-z0-9]+", "_", binding).strip("_").upper()
    if upper in ("DEPLOY_KEY", ""):
        return "DEPLOY_KEY"
    return upper if upper.startswith("DEPLOY_KEY_") else f"DEPLOY_KEY_{upper}"


def bindings_root(platform: Path | None, environ: Mapping[str, str]) -> Path | None:
    """Where service bindings are: $SERVICE_BINDING_ROOT, then $CNB_BINDINGS, then <platform>/bindings."""
    for name in ("SERVICE_BINDING_ROOT", "CNB_BINDINGS"):
        if environ.get(name):
            return Path(environ[name])
    return platform / "bindings" if platform is not None else None


@dataclass(frozen=True)
class EnvSource:
    path: Path
    is_file: bool
    values: Mapping[str, bytes] = field(repr=False)
    # Where a value came from when not from `path` (a service binding), by name.
    origins: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> bytes | None:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else value.decode("utf-8", "replace").strip()

    def describe(self, name: str) -> str:
        if name in self.origins:
            return self.origins[name]
        return f"{name} in {self.path}" if self.is_file else str(self.path / name)

    def with_bindings(self, root: Path | None) -> EnvSource:
        """Add keys from service bindings (servicebinding.io): each binding of type ssh-auth
        (a Kubernetes `kubernetes.io/ssh-auth` secret) gives its `ssh-privatekey` as DEPLOY_KEY
        (a binding named deploy-key) or DEPLOY_KEY_<NAME>; one of type github-app gives its
        `app-id`, `private-key` (and `installation-id`) as GITHUB_APP_*. Config vars of the same
        name win."""
        values, origins = dict(self.values), dict(self.origins)
        for binding in sorted(root.iterdir()) if root is not None and root.is_dir() else []:
            kind = binding / "type"
            if not kind.is_file():
                continue
            kind_name = kind.read_bytes().decode("utf-8", "replace").strip()
            if kind_name in BINDING_TYPES:
                entries = {"ssh-privatekey": binding_key_name(binding.name)}
            elif kind_name == APP_BINDING_TYPE:
                entries = APP_BINDING
            else:
                continue
            for entry, name in entries.items():
                secret = binding / entry
                if secret.is_file() and name not in values:
                    values[name] = secret.read_bytes()
                    origins[name] = f"the binding {binding.name} ({secret})"
        return EnvSource(self.path, self.is_file, values, origins)

    def key_names(self) -> list[str]:
        """DEPLOY_KEY first, then any DEPLOY_KEY_<NAME>, sorted."""
        names = sorted(n for n in self.values if KEY_NAME.match(n))
        return sorted(names, key=lambda n: n != "DEPLOY_KEY")


def read(path: str | os.PathLike[str]) -> EnvSource:
    location = Path(path)
    try:
        if location.is_dir():
            return EnvSource(location, False, _read_dir(location))
        if location.is_file():
            return EnvSource(location, True, _read_dotenv(location))
    except PermissionError as exc:
        raise UserError(
            "env::unreadable", path=location, reason=exc.strerror or str(exc), uid=os.getuid()
        ) from None
    if location.exists() or location.is_symlink():
        raise UserError(
            "env::unreadable",
            path=location,
            reason="It is neither a directory nor a file.",
            uid=os.getuid(),
        )
    raise UserError("env::missing", path=location)


def _read_dir(directory: Path) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if VALID_NAME.match(entry.name) and entry.is_file():
                values[entry.name] = Path(entry.path).read_bytes()
    return values


def _read_dotenv(file: Path) -> dict[str, bytes]:
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    # Bytes that are not UTF-8 (a Latin-1 comment, a binary value) pass through as they are
    # (surrogateescape): only a value that is used is judged, and a key's is by keys.load.
    text = file.read_bytes().decode("utf-8", "surrogateescape")
    # dotenv_values logs "could not parse statement" and skips the line, then the key is missing:
    # the first line it cannot parse is the error (by number: its text may be a key's).
    broken = next((b.original.line for b in parse_stream(io.StringIO(text)) if b.error), None)
    if broken is not None:
        raise UserError("env::dotenv", path=file, line=broken)
    # interpolate=False: a value is taken literally; `${...}` in it is not expanded.
    parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {
        name: value.encode("utf-8", "surrogateescape")
        for name, value in parsed.items()
        if value is not None
    }


SECRETS_DIR = Path("/run/secrets")


def gather(
    environ: Mapping[str, str],
    names: tuple[str, ...] = (),
    env_dir: str | None = None,
    key_files: tuple[str, ...] = (),
    secrets_dir: Path = SECRETS_DIR,
) -> EnvSource:
    """Keys (and the token variables in `names`) for a Docker build or a CI job, lowest precedence
    first: DEPLOY_KEY* environment variables (CI secrets; BuildKit `env=` secrets), files in
    /run/secrets (BuildKit `--mount=type=secret,id=deploy_key`: the id names the variable), an env
    dir or .env file, and key files given on the command line (DEPLOY_KEY, DEPLOY_KEY_2, ...)."""
    values: dict[str, bytes] = {}
    origins: dict[str, str] = {}
    for name, value in environ.items():
        if KEY_NAME.match(name) or name in names or name.startswith("DEPLOYKEY_"):
            values[name] = value.encode()
            origins[name] = f"the environment variable {name}"
    if secrets_dir.is_dir():
        try:
            mounted = sorted(secrets_dir.iterdir())
        except PermissionError as exc:
            raise UserError(
                "env::unreadable", path=secrets_dir, reason=exc.strerror, uid=os.getuid()
            ) from None
        for secret in mounted:
            name = secret.name.upper().replace("-", "_")
            if (KEY_NAME.match(name) or name in names) and secret.is_file():
                values[name] = permissions.read_secret(secret)
                origins[name] = str(secret)
    if env_dir is not None:
        source = read(env_dir)
        values.update(source.values)
        origins.update({name: source.describe(name) for name in source.values})
    for index, file in enumerate(key_files):
        name = "DEPLOY_KEY" if index == 0 else f"DEPLOY_KEY_{index + 1}"
        path = Path(file)
        if not path.is_file():
            raise UserError("env::missing", path=path)
        values[name] = permissions.read_secret(path)
        origins[name] = str(path)
    return EnvSource(secrets_dir, False, values, origins)
