"""The ssh config and known_hosts of a build, and the one connection that greets a host with a key.

Everything goes through one absolute path, `ssh -F CONFIG`: OpenSSH finds `~/.ssh/config` through
the passwd home, not `$HOME`, and `-F` also skips /etc/ssh/ssh_config, so the same setup works in
every Heroku layout (normal builds, Heroku CI, build-in-app-dir) and ignores a hostile user config.
Each alias offers one key only (IdentitiesOnly; the key in deploykey's own agent, IdentityFile its
public half; no other agent), never prompts (BatchMode), and trusts
only the pinned or configured host keys (StrictHostKeyChecking yes, HostKeyAlias = the host named in
requirements, so pointing github.com at another address still checks github.com's keys).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey.core import run
from deploykey.core.errors import UserError
from deploykey.secrets import routing
from deploykey.secrets.config import HostConfig
from deploykey.secrets.keys import Key

CONFIG = "ssh_config"
KNOWN_HOSTS = "known_hosts"
OWN_AGENT = "agent.sock"  # deploykey's own agent's socket in the key dir (agent.SOCKET)
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# What `ssh -v` adds to a session's output; the rest is what the server and ssh's errors said.
VERBOSE = ("debug", "OpenSSH_", "Authenticated to", "Transferred:", "Bytes per second")
# Options every connection gets, also to hosts not named in requirements (a transitive dependency
# on an unknown host then fails on its host key instead of trusting it).
STRICT = (
    ("IdentitiesOnly", "yes"),
    ("IdentityAgent", "none"),
    ("BatchMode", "yes"),
    ("StrictHostKeyChecking", "yes"),
    ("UpdateHostKeys", "no"),
    ("GlobalKnownHostsFile", "/dev/null"),
    # A host that accepts and never answers must not hang the build: the connection and the
    # banner exchange get 20 s, and an open session that stops answering is dropped after 60 s.
    ("ConnectTimeout", "20"),
    ("ServerAliveInterval", "15"),
    ("ServerAliveCountMax", "4"),
)


def identity_name(key: Key) -> str:
    return "id_" + key.name.lower()


def quote(path: Path | str) -> str:
    return '"' + str(path) + '"'


def public_name(key: Key) -> str:
    """The key's public half in the key dir: what IdentityFile names (the private half is in
    deploykey's own agent, agent.py)."""
    return identity_name(key) + ".pub"


def _block(
    pattern: str, host: HostConfig, key: Key | None, key_dir: Path, agent: str | None = None
) -> list[str]:
    lines = [f"Host {pattern}", f"  HostName {host.hostname or host.name}"]
    if host.port:
        lines.append(f"  Port {host.port}")
    if host.user:
        lines.append(f"  User {host.user}")
    lines.append(f"  HostKeyAlias {host.name}")
    identity = quote(key_dir / public_name(key)) if key else "none"
    lines.append(f"  IdentityFile {identity}")
    if key:
        # The key is in deploykey's own agent: IdentityFile names its public half, and with
        # IdentitiesOnly ssh offers that one of the agent's keys only (ssh_config(5),
        # IdentityFile: "used in conjunction with IdentitiesOnly to select which identities in
        # an agent are offered"). Before STRICT: the first value of an option wins.
        lines.append(f"  IdentityAgent {quote(key_dir / OWN_AGENT)}")
    elif agent:
        # An agent's keys (`RUN --mount=type=ssh`): the first value of an option wins in ssh_config.
        lines += [f"  IdentityAgent {quote(agent)}", "  IdentitiesOnly no"]
    lines.append(f"  UserKnownHostsFile {quote(key_dir / KNOWN_HOSTS)}")
    lines.extend(f"  {option} {value}" for option, value in STRICT)
    return lines


def render_config(
    hosts: Sequence[HostConfig], keys: Sequence[Key], key_dir: Path, agent: str | None = None
) -> str:
    """A block per host (no key: the router picks one, or the agent's keys when `agent` is its
    socket) and per (key, host) alias (that key only)."""
    lines = [
        "# deploykey: ssh settings for one build, removed when it ends.",
        "# One deploy key per alias (in deploykey's own agent), pinned host keys, never a prompt.",
    ]
    for host in hosts:
        lines.extend(_block(host.name, host, None, key_dir, agent))
        for key in keys:
            lines.extend(_block(routing.alias(key, host.name), host, key, key_dir))
    # Every other host: no key, and still only pinned host keys (`IdentityFile none` offers nothing;
    # ssh accumulates IdentityFile, and skips "none", so the blocks above keep their one key).
    lines.append("Host *")
    lines.append("  IdentityFile none")
    lines.append(f"  UserKnownHostsFile {quote(key_dir / KNOWN_HOSTS)}")
    lines.extend(f"  {option} {value}" for option, value in STRICT)
    return "\n".join(lines) + "\n"


def render_known_hosts(hosts: Sequence[HostConfig]) -> str:
    from deploykey.secrets import hosts as pinned

    lines: list[str] = []
    for host in hosts:
        lines.extend(key.line(host.name) for key in host.trusted())
        lines.extend(key.line(host.name) for key in pinned.revoked_for(host.name))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Greeting:
    accepted: bool
    server_key: str | None
    message: str


def greet(ssh: str, config: Path, host: HostConfig, key: Key, user: str | None) -> Greeting:
    """Connect once as `key` (`ssh -T` to its alias): is the host key trusted, is the key accepted,
    and what does the server say (GitHub names the repository a deploy key opens)."""
    target = routing.alias(key, host.name)
    argv = [ssh, "-F", str(config), "-v", "-T"]
    # `--`: whatever the destination says, ssh reads it as one (a user named `-oProxyCommand=...`
    # is refused when the requirements are read; this is the second guard).
    argv += ["--", f"{user}@{target}" if user else target]
    result = run.run(argv, env=run.secret_env(), source=(host.name, "the greeting"))
    debug = [line for line in result.lines if line.startswith(VERBOSE)]
    said = [line for line in result.lines if not line.startswith(VERBOSE) and line.strip()]
    offered = next(
        (
            m.group(0)
            for line in debug
            if "Server host key" in line
            for m in [FINGERPRINT.search(line)]
            if m
        ),
        None,
    )
    text = "\n".join(said)
    if "Host key verification failed" in text or "REVOKED HOST KEY" in text:
        raise mismatch(host, offered)
    if any("Authenticated to" in line for line in debug):
        return Greeting(True, offered, " ".join(said))
    if "Permission denied" in text:
        return Greeting(False, offered, text)
    raise UserError(
        "host::unreachable", host=host.name, address=host.address, detail=text or "no answer"
    )


def mismatch(host: HostConfig, offered: str | None) -> UserError:
    expected = ", ".join(k.fingerprint for k in host.trusted()) or "none"
    return UserError(
        "host::mismatch",
        host=host.name,
        address=host.address,
        offered=f" ({offered})" if offered else "",
        expected=expected,
    )
