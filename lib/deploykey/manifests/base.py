"""What every manifest reader shares: parsing TOML and JSON, git URLs, and where a URL sits.

Each reader turns the entries of its format into calls on a `Collector`, which normalises the git
URL to a `GitRequirement` (ssh ones in `Requirements.git`, https ones in `Requirements.https`) and
finds the line the URL is written on by searching the file's text.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from deploykey.core.errors import UserError
from deploykey.manifests import requirements
from deploykey.manifests.requirements import GitRequirement, Requirements

# The URL forms uv, Poetry, Pipenv and PEP 751 write in a `git =` / `url =` value: `ssh://`,
# `git+ssh://`, `https://` (and `git+https://`), and git's scp-like `user@host:path`, which Poetry
# and Pipenv pass to git as it is. A query (`?tag=`) or fragment (`#commit`) is split off by the
# reader that knows what it means.
SSH = re.compile(
    r"(?:git\+)?ssh://(?:(?P<user>[^@/\s]+)@)?(?P<host>[^/:@\s]+)(?::(?P<port>[^/\s]*))?"
    r"(?P<path>/[^?#\s]*)"
)
HTTP = re.compile(
    r"(?:git\+)?(?P<scheme>https?)://(?:[^@/\s]+@)?(?P<host>[^/:@\s]+)(?::(?P<port>[0-9]+))?"
    r"(?P<path>/[^?#\s]*)"
)
# The user starts where no user character precedes it (linear; see scan.URL_CREDENTIALS).
SCP_LIKE = re.compile(
    r"(?:git\+)?(?<![A-Za-z0-9._-])(?P<user>[A-Za-z0-9._-]+)@(?P<host>[^:/\s]+):(?P<path>[^?#\s]+)"
)
PEP508_GIT = re.compile(r"git\+[A-Za-z]+://\S+|git\+[A-Za-z0-9._-]+@\S+")
DEFAULT_PORT = {"ssh": 22, "https": 443, "http": 80}

Loads = Callable[[str], Any]
# tomllib and json parse nested arrays and tables by recursion: past Python's limit (1000 frames)
# they raise RecursionError, not their own error. No manifest nests more than a few levels.
TOO_DEEP = "its arrays or tables are nested too deeply"


def label(app_dir: Path, path: Path) -> str:
    """The manifest's name as the messages show it: relative to the app dir."""
    try:
        return str(path.relative_to(app_dir))
    except ValueError:
        return str(path)


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def load_toml(file: str, text: str) -> dict[str, Any]:
    """Parse TOML with tomllib (Python 3.11+, PEP 680), else tomli (the same parser, which pip
    vendors for Python 3.10), else fail naming the file."""
    parser = _toml_parser()
    if parser is None:
        version = ".".join(map(str, sys.version_info[:3]))
        detail = f"reading TOML needs Python 3.11 or newer, or tomli; this is Python {version}"
        raise UserError("manifests::invalid", file=file, format="TOML", detail=detail)
    loads, error_type = parser
    try:
        data = loads(text)
    except error_type as error:
        raise UserError("manifests::invalid", file=file, format="TOML", detail=str(error)) from None
    except RecursionError:
        raise UserError("manifests::invalid", file=file, format="TOML", detail=TOO_DEEP) from None
    return data if isinstance(data, dict) else {}


def load_json(file: str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError("manifests::invalid", file=file, format="JSON", detail=str(error)) from None
    except RecursionError:
        raise UserError("manifests::invalid", file=file, format="JSON", detail=TOO_DEEP) from None
    if not isinstance(data, dict):
        detail = f"expected a JSON object, found {type(data).__name__}"
        raise UserError("manifests::invalid", file=file, format="JSON", detail=detail)
    return data


def _toml_parser() -> tuple[Loads, type[Exception]] | None:
    # By name, so that mypy (checking for 3.10) does not need any of them to be installed.
    for name in ("tomllib", "tomli", "pip._vendor.tomli"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.loads, module.TOMLDecodeError
    return None


def table(value: object) -> dict[str, Any]:
    """A TOML table or JSON object, or an empty one when the file holds something else there."""
    return value if isinstance(value, dict) else {}


def tables(value: object) -> list[dict[str, Any]]:
    """An array of tables (`[[package]]`), or a single table as a list of one."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Lines:
    """Line numbers of strings in a file's text; a string written N times gives N lines in turn."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.next: dict[str, int] = {}

    def of(self, *needles: str) -> int:
        """The 1-based line of the first needle found (the next unused occurrence), else 1."""
        for needle in needles:
            if not needle:
                continue
            at = self.text.find(needle, self.next.get(needle, 0))
            if at < 0:
                at = self.text.find(needle)
            if at >= 0:
                self.next[needle] = at + 1
                return self.text.count("\n", 0, at) + 1
        return 1


@dataclass
class Collector:
    """The git dependencies of one manifest, as its reader finds them."""

    label: str
    text: str
    found: Requirements = field(default_factory=Requirements)

    def __post_init__(self) -> None:
        self.lines = Lines(self.text)
        self.found.files.append(self.label)

    def git(
        self,
        url: str,
        *,
        name: str | None,
        ref: str | None = None,
        commit: str | None = None,
        subdirectory: str | None = None,
        editable: bool = False,
        near: str = "",
    ) -> None:
        """A `git = URL` entry (plus its ref, commit and subdirectory); `near` is the text around
        the URL that finds the right line when the bare URL is written more than once."""
        url = url.strip()
        line = self.lines.of(near, f'"{url}"', url)
        where = f"{self.label}:{line}"
        if editable:
            self.found.editable_vcs.append(where)
        ssh = SSH.fullmatch(url)
        scp = SCP_LIKE.fullmatch(url)
        http = HTTP.fullmatch(url)
        if ssh and ssh.group("port") and not requirements.is_port(ssh.group("port")):
            # `ssh://git@github.com:acme/x.git`: git reads `acme` as the port and fails.
            fixed = f"ssh://{_user(ssh.group('user'))}{ssh.group('host')}/{ssh.group('port')}"
            self.found.problems.append(
                UserError(
                    "requirements::scp-url",
                    file=self.label,
                    line=line,
                    url=url,
                    port=ssh.group("port"),
                    fixed=fixed + ssh.group("path"),
                )
            )
            return
        if ssh:
            port = int(ssh.group("port") or 22)
            parts = ("ssh", ssh.group("user"), ssh.group("host"), port, ssh.group("path"))
        elif scp:
            path = "/" + scp.group("path").lstrip("/")
            parts = ("ssh", scp.group("user"), scp.group("host"), 22, path)
        elif http:
            scheme = http.group("scheme")
            port = int(http.group("port") or DEFAULT_PORT[scheme])
            parts = (scheme, None, http.group("host"), port, http.group("path"))
        else:
            return  # a local path or file:// URL: nothing to fetch over the network
        user = parts[1]
        if user is not None and not requirements.SSH_USER.fullmatch(user):
            # `ssh://-oProxyCommand=...@host/...`: an ssh option, not a user (requirements.py).
            fixed = f"ssh://git@{parts[2]}{'' if parts[3] == 22 else f':{parts[3]}'}{parts[4]}"
            self.found.problems.append(
                requirements.ssh_user_problem(self.label, line, url, user, fixed)
            )
            return
        repo = parts[4].strip("/")
        bad = requirements.unsafe(repo[:-4] if repo.endswith(".git") else repo, ref, commit)
        if bad is not None:
            self.found.problems.append(requirements.unsafe_problem(self.label, line, url, bad))
            return
        requirement = _requirement(self.label, line, parts, name, ref, commit, subdirectory)
        (self.found.git if requirement.scheme == "ssh" else self.found.https).append(requirement)

    def pep508(self, requirement: str) -> None:
        """A PEP 508 string (`name @ git+ssh://...@ref#subdirectory=...`), read as pip reads a
        requirements line."""
        url = PEP508_GIT.search(requirement)
        line = self.lines.of(requirement, url.group(0) if url else "")
        ssh, https = len(self.found.git), len(self.found.https)
        requirements._parse_line(self.label, line, requirement, self.found)
        self.found.git[ssh:] = [_with_subdirectory(req) for req in self.found.git[ssh:]]
        self.found.https[https:] = [_with_subdirectory(req) for req in self.found.https[https:]]


def _with_subdirectory(req: GitRequirement) -> GitRequirement:
    return replace(req, subdirectory=subdirectory_of(req.fragment))


def subdirectory_of(fragment: str) -> str | None:
    """`#subdirectory=sub&egg=x` -> `sub` (pip's URL fragment)."""
    values = parse_qs(fragment.lstrip("#")).get("subdirectory")
    return values[0] if values else None


def _requirement(
    file: str,
    line: int,
    parts: tuple[str, str | None, str, int, str],
    name: str | None,
    ref: str | None,
    commit: str | None,
    subdirectory: str | None,
) -> GitRequirement:
    scheme, user, host, port, path = parts
    # The PEP 508 form pip takes (`git+ssh://git@host/org/repo.git@ref`), so that `remote` and
    # `pinned` work as for a requirements line; https credentials are dropped, never shown.
    shown_port = f":{port}" if port != DEFAULT_PORT[scheme] else ""
    url = f"git+{scheme}://{_user(user)}{host}{shown_port}{path}" + (f"@{ref}" if ref else "")
    repo = path.strip("/")
    return GitRequirement(
        file=file,
        line=line,
        url=url,
        host=host.lower(),
        port=port,
        user=user,
        repo=repo[:-4] if repo.endswith(".git") else repo,
        ref=ref,
        scheme=scheme,
        name=name,
        fragment=f"#subdirectory={subdirectory}" if subdirectory else "",
        commit=commit,
        subdirectory=subdirectory,
    )


def _user(user: str | None) -> str:
    return f"{user}@" if user else ""
