"""Which key opens which repository: one deploy key per repository, routed without touching URLs.

A GitHub deploy key opens exactly one repository, and ssh chooses keys by host: with two keys in
one `Host github.com` block, ssh offers the first, GitHub accepts it for the wrong repository and
answers `Repository not found`. So every key gets its own ssh host alias (`deploy_key_billing.
github.com`, same HostName and host keys), and git's ssh command is a small router (router.sh) that
reads the repository from git's remote command and connects to the alias of the key that opens it.
requirements.txt stays as users write it; transitive dependencies and submodules, fetched by git
with the same settings, are routed the same way.

Routes come, most specific first, from deploykey.yml `keys:` (repositories, globs, hosts), from
what each unmapped key's `ssh -T` greeting names (GitHub answers `Hi acme/billing!` for a deploy
key), and last from DEPLOY_KEY, which serves every repository no other key claims.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources

from deploykey.core.errors import UserError
from deploykey.secrets.keys import Key

DEFAULT_KEY = "DEPLOY_KEY"
GREETING = re.compile(r"\bHi (?P<name>[A-Za-z0-9._/-]+)! You've successfully authenticated")
GLOB = re.compile(r"[*?\[]")
EXACT, GLOB_ROUTE, HOST_WIDE, FALLBACK = range(4)


def alias(key: Key, host: str) -> str:
    """The ssh_config Host alias through which `key` reaches `host`."""
    return f"{key.name.lower()}.{host}"


@dataclass(frozen=True)
class Route:
    host: str
    pattern: str  # a glob over the lowercased repository path; "*" is every repository
    key: Key
    origin: str
    rank: int

    @property
    def alias(self) -> str:
        return alias(self.key, self.host)

    def matches(self, host: str, repo: str) -> bool:
        return host == self.host and fnmatchcase(normalise(repo), self.pattern)

    def describe(self) -> str:
        what = "every repository no other key claims" if self.rank == FALLBACK else self.pattern
        if self.rank == HOST_WIDE:
            what = "every repository"
        return f"{self.host}: {what} ({self.origin})"


def normalise(repo: str) -> str:
    repo = repo.strip("/").lower()
    return repo[:-4] if repo.endswith(".git") else repo


def _rank(pattern: str) -> int:
    if pattern == "*":
        return HOST_WIDE
    return GLOB_ROUTE if GLOB.search(pattern) else EXACT


def from_config(
    keys: Mapping[str, Key], mapping: Mapping[str, tuple[str, ...]], hosts: Sequence[str]
) -> list[Route]:
    """Routes for deploykey.yml `keys:`; a pattern without a host applies to every host."""
    routes = []
    for name, patterns in mapping.items():
        key = keys.get(name)
        if key is None:
            raise UserError("keys::unset", name=name, known=", ".join(sorted(keys)) or "none")
        for pattern in patterns:
            head, _, rest = pattern.partition("/")
            if pattern in hosts or (not rest and "." in pattern and not GLOB.search(pattern)):
                routes.append(Route(pattern, "*", key, "deploykey.yml", HOST_WIDE))
            elif head in hosts and rest:
                routes.append(Route(head, rest, key, "deploykey.yml", _rank(rest)))
            else:
                routes.extend(
                    Route(host, pattern, key, "deploykey.yml", _rank(pattern)) for host in hosts
                )
    return routes


def from_greeting(key: Key, host: str, message: str) -> Route:
    """What a key's `ssh -T` greeting says it opens: `Hi org/repo!` one repository (a GitHub deploy
    key), `Hi user!` everything that user can read (a machine user's key), anything else: the host."""
    match = GREETING.search(message)
    if match is None:
        # Accepted, but not GitHub's greeting (GitLab, Bitbucket, a self-hosted server): the key
        # opens whatever that host lets it; only deploykey.yml can say more.
        return Route(host, "*", key, f"accepted by {host}", HOST_WIDE)
    name = match.group("name").lower()
    origin = f"{host} says: Hi {match.group('name')}!"
    if "/" in name:
        return Route(host, name, key, origin, EXACT)
    return Route(host, "*", key, origin, HOST_WIDE)


def fallback(key: Key, hosts: Iterable[str]) -> list[Route]:
    return [Route(host, "*", key, "DEPLOY_KEY", FALLBACK) for host in hosts]


def ordered(routes: Iterable[Route]) -> list[Route]:
    """Most specific first; among equals, the first given wins; a (host, pattern) pair only once."""
    seen: dict[tuple[str, str], Route] = {}
    for route in sorted(routes, key=lambda route: route.rank):
        seen.setdefault((route.host, route.pattern), route)
    return list(seen.values())


def lookup(routes: Sequence[Route], host: str, repo: str) -> Route | None:
    """The route the router takes for a repository: the first that matches (routes are ordered)."""
    return next((route for route in routes if route.matches(host, repo)), None)


def render(routes: Sequence[Route]) -> str:
    return "".join(f"{route.host} {route.pattern} {route.alias}\n" for route in routes)


# At most this many ssh connections at once, from the router, the doctor and the greetings: an
# OpenSSH server drops new connections beyond 10 still authenticating (MaxStartups 10:30:100),
# and uv fetches every git dependency at once.
CONNECTIONS = 8


def router_script(ssh: str) -> str:
    import shlex

    text = resources.files("deploykey").joinpath("router.sh").read_text()
    return text.replace("@SSH@", shlex.quote(ssh)).replace("@CONNECTIONS@", str(CONNECTIONS))
