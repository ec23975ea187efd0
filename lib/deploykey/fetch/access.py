"""A build's access to private repositories: one private key dir, and what git needs to use it.

The key dir (keydir.py) holds the socket of the build's own ssh agent, which holds every key
(agent.py), their public halves, the pinned known_hosts, an ssh_config with one alias per
(key, host), the router that picks the alias per repository, its routes, and the credential helper
with its index and the socket on which this process serves the HTTPS tokens (credentials.py). `Access` then gives deploykey's own git (the fetch into the mirrors, see
mirrors.py) its environment: only paths, never a key or a token. No installer ever gets it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykey.core import output, run, trust
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors, sealedgit
from deploykey.manifests.requirements import Requirements
from deploykey.secrets import agent as agent_
from deploykey.secrets import credentials, githubapp, keydir, routing, sshconfig
from deploykey.secrets.config import HostConfig
from deploykey.secrets.credentials import Token
from deploykey.secrets.keys import Key
from deploykey.secrets.routing import Route

ROUTER = "ssh"
ROUTES = "routes"


@dataclass(frozen=True)
class Greeter:
    """One `ssh -T` per key and host (the host key checked, the key accepted or not, and what the
    host says it opens), asked only when an answer is needed, and remembered."""

    ssh: str
    config: Path
    hosts: Mapping[str, HostConfig]
    users: Mapping[str, str | None]
    answers: dict[tuple[str, str], sshconfig.Greeting] = field(default_factory=dict)

    def greet(self, key: Key, host: str) -> sshconfig.Greeting:
        if (key.name, host) not in self.answers:
            config = self.hosts.get(host) or HostConfig(host)
            self.answers[(key.name, host)] = sshconfig.greet(
                self.ssh, self.config, config, key, self.users.get(host)
            )
        return self.answers[(key.name, host)]

    def greet_all(self, pairs: Sequence[tuple[Key, str]]) -> list[sshconfig.Greeting]:
        """Several at once: each is a network round trip."""
        from concurrent.futures import ThreadPoolExecutor  # here: ~3 ms of start-up (logging)

        with ThreadPoolExecutor(max_workers=routing.CONNECTIONS) as pool:
            return list(pool.map(lambda pair: self.greet(*pair), pairs))


@dataclass(frozen=True)
class Access:
    key_dir: Path
    routes: tuple[Route, ...]
    git_config: tuple[tuple[str, str], ...]
    agent: str | None = None
    greeter: Greeter | None = None
    app: githubapp.Session | None = None  # a GitHub App's tokens, minted as repositories turn up
    protocols: tuple[str, ...] = ("ssh",)  # what the fetch may use (sealedgit.protocols)
    ca_bundle: Path | None = None  # the system store and SSL_CERT_FILE's CAs, for git (trust.py)

    def opens(self, key: Key, host: str) -> str | None:
        """The repository a key's host says it opens (GitHub names it for a deploy key), if any."""
        if self.greeter is None:
            return None
        try:
            greeting = self.greeter.greet(key, host)
        except UserError:
            return None
        match = routing.GREETING.search(greeting.message) if greeting.accepted else None
        return match.group("name") if match and "/" in match.group("name") else None

    @property
    def ssh_command(self) -> str:
        # Run through sh: /dev/shm is mounted noexec in Docker builds. ssh.variant tells git that
        # this command takes OpenSSH's options.
        return f"sh {shlex.quote(str(self.key_dir / ROUTER))}"

    def env(self) -> dict[str, str]:
        """For deploykey's own git (the fetch), never for an installer: sealed (sealedgit), the
        ssh command through the router, and the https settings as GIT_CONFIG_* variables."""
        env = {"GIT_SSH_COMMAND": self.ssh_command, "GIT_SSH_VARIANT": "ssh"}
        env.update(trust.git_env(self.ca_bundle))
        env.update(mirrors.as_env(self.git_config))
        return sealedgit.env(env, self.protocols)


def open(
    directory: keydir.KeyDir,
    hosts: Sequence[HostConfig],
    keys: Sequence[Key],
    tokens: Sequence[Token],
    mapping: dict[str, tuple[str, ...]],
    requirements: Requirements,
    agent: str | None = None,
    app: githubapp.App | None = None,
) -> Access:
    """Fill a new key dir, learn what each key opens, route; on failure the key dir is removed,
    on success the caller removes it."""
    run.preload()  # `sh`, for the fetch's first git, imported while the agent starts
    try:
        ssh = run.which("ssh", "connect to the git host") if keys or agent else "ssh"
        if keys:
            # The keys go to an agent of the build's own, over a pipe: no key file (agent.py).
            own = agent_.start(directory.path)
            directory.on_remove(own.stop)
            keydir.watch(own.socket)
            for key in keys:
                own.add(key)
                directory.write(sshconfig.public_name(key), f"{key.public}\n".encode())
        directory.write(sshconfig.KNOWN_HOSTS, sshconfig.render_known_hosts(hosts).encode())
        config = directory.write(
            sshconfig.CONFIG, sshconfig.render_config(hosts, keys, directory.path, agent).encode()
        )
        directory.write(ROUTER, routing.router_script(ssh).encode())
        # The tokens stay in this process, served to its descendants only (credentials.py).
        server = credentials.serve(directory.path)
        directory.on_remove(server.stop)
        keydir.watch(server.path)
        for token in tokens:
            server.add(token.file_name, token.value)
        index = credentials.index(list(tokens))
        directory.write(credentials.INDEX, index.encode())
        directory.write(credentials.HELPER, credentials.helper_script().encode())
        # In the key dir, which this process has just made: nothing could swap it before git
        # reads it, and a change while the fetch runs fails the build (keydir.KeyDir.changed).
        pem = trust.bundle()
        ca_bundle = None if pem is None else directory.write(trust.BUNDLE, pem)
        if pem is not None:
            output.detail(f"HTTPS: trusting {trust.describe()}")
        session = None if app is None else githubapp.Session(app, directory.path, index, server)
        if keys or agent:
            output.detail(
                f"ssh ready: keys in an ssh agent of this build's own, its socket and the ssh "
                f"config in {directory.path} (outside the app and the cache)"
            )
        else:
            output.detail(f"key dir: {directory.path} (outside the app and the cache)")
        users = {req.host: req.user for req in requirements.git if req.scheme == "ssh"}
        greeter = Greeter(ssh, config, {host.name: host for host in hosts}, users)
        routes = _routes(greeter, hosts, keys, mapping)
        directory.write(ROUTES, routing.render(routes).encode())
    except BaseException:
        directory.remove()
        raise
    git_config = _git_config(directory.path, routes, tokens, session)
    served = bool(tokens) or app is not None  # https only where a token or the App is used
    plain = any(req.scheme == "http" for req in requirements.https)
    plain |= app is not None and app.git_url.startswith("http://")
    protocols = sealedgit.protocols(ssh=True, https=served, http=served and plain)
    return Access(
        directory.path, tuple(routes), git_config, agent, greeter, session, protocols, ca_bundle
    )


def _routes(
    greeter: Greeter,
    hosts: Sequence[HostConfig],
    keys: Sequence[Key],
    mapping: dict[str, tuple[str, ...]],
) -> list[Route]:
    """deploykey.yml's routes, what each unmapped DEPLOY_KEY_<NAME> opens (its host's greeting:
    asked only for those keys, on the hosts the requirements use), then DEPLOY_KEY for the rest."""
    by_name = {key.name: key for key in keys}
    names = [host.name for host in hosts]
    routes = routing.from_config(by_name, mapping, names)
    unmapped = [key for key in keys if key.name not in mapping and key.name != routing.DEFAULT_KEY]
    pairs = [(key, host) for host in names if host in greeter.users for key in unmapped]
    for (key, host), greeting in zip(pairs, greeter.greet_all(pairs), strict=True):
        said = greeting.message if greeting.accepted else "key not accepted"
        output.detail(f"{key.name} ({key.fingerprint}) at {host}: {said}")
        if greeting.accepted:
            routes.append(routing.from_greeting(key, host, greeting.message))
    default = by_name.get(routing.DEFAULT_KEY)
    if default is not None and routing.DEFAULT_KEY not in mapping:
        routes += routing.fallback(default, names)
    return routing.ordered(routes)


def _git_config(
    key_dir: Path,
    routes: Sequence[Route],
    tokens: Sequence[Token],
    app: githubapp.Session | None = None,
) -> tuple[tuple[str, str], ...]:
    # An HTTPS host that accepts and never answers (a stuck proxy) ends the fetch after 20 s with
    # under a byte a second, as ssh's ConnectTimeout does for ssh; git has no timeout of its own.
    entries: list[tuple[str, str]] = [("http.lowSpeedLimit", "1"), ("http.lowSpeedTime", "20")]
    entries += [] if app is None else app.git_config()
    token_hosts = {token.host for token in tokens} | ({app.app.host} if app else set())
    # https URLs of repositories a key is routed to go over ssh (unless a token serves that host).
    for route in routes:
        if route.rank in (routing.EXACT, routing.GLOB_ROUTE) and route.host not in token_hosts:
            prefix = route.pattern.split("*", 1)[0]
            if route.rank == routing.EXACT:
                entries.append(
                    (
                        f"url.ssh://git@{route.host}/{prefix}.git.insteadOf",
                        f"https://{route.host}/{prefix}.git",
                    )
                )
            entries.append(
                (f"url.ssh://git@{route.host}/{prefix}.insteadOf", f"https://{route.host}/{prefix}")
            )
    if tokens or app is not None:
        # An empty helper first: the user's own helpers are not asked.
        entries.append(("credential.helper", ""))
        entries.append(
            ("credential.helper", f"!sh {shlex.quote(str(key_dir / credentials.HELPER))}")
        )
    return tuple(entries)
