"""ssh and git configuration: the key file, an ssh config with pinned host keys, the command git runs.

Everything goes through one absolute path, `ssh -F CONFIG`: OpenSSH finds `~/.ssh/config` through
the passwd home, not `$HOME`, and `-F` also skips /etc/ssh/ssh_config, so the same setup works in
every Heroku layout (normal builds, Heroku CI, build-in-app-dir) and ignores a hostile user config.
Each host block offers one key only (IdentitiesOnly, no agent), never prompts (BatchMode), and trusts
only the pinned or configured host keys (StrictHostKeyChecking yes, HostKeyAlias = the host named in
requirements, so pointing github.com at another address still checks github.com's keys).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey import keydir, run
from deploykey.config import HostConfig
from deploykey.errors import UserError
from deploykey.keys import Key

CONFIG = "ssh_config"
KNOWN_HOSTS = "known_hosts"
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
)


@dataclass(frozen=True)
class Setup:
    """Where the files are, and the ssh command line that uses them (no key material in it)."""

    key_dir: Path
    config: Path
    command: str

    def files(self) -> list[Path]:
        return sorted(self.key_dir.iterdir()) if self.key_dir.exists() else []


def identity_name(key: Key) -> str:
    return "id_" + key.name.lower()


def quote(path: Path | str) -> str:
    return '"' + str(path) + '"'


def render_config(hosts: Sequence[HostConfig], key: Key, key_dir: Path) -> str:
    known_hosts = key_dir / KNOWN_HOSTS
    lines = [
        "# deploykey: ssh settings for one build, removed when it ends.",
        "# One deploy key, pinned host keys, no agent, never a prompt.",
    ]
    for host in hosts:
        lines.append(f"Host {host.name}")
        if host.hostname:
            lines.append(f"  HostName {host.hostname}")
        if host.port:
            lines.append(f"  Port {host.port}")
        if host.user:
            lines.append(f"  User {host.user}")
        lines.append(f"  HostKeyAlias {host.name}")
        lines.append(f"  IdentityFile {quote(key_dir / identity_name(key))}")
        lines.append(f"  UserKnownHostsFile {quote(known_hosts)}")
        lines.extend(f"  {option} {value}" for option, value in STRICT)
    # Every other host (IdentityFile accumulates across blocks, so the configured ones are excluded).
    lines.append("Host * " + " ".join(f"!{host.name}" for host in hosts))
    lines.append("  IdentityFile none")
    lines.append(f"  UserKnownHostsFile {quote(known_hosts)}")
    lines.extend(f"  {option} {value}" for option, value in STRICT)
    return "\n".join(lines) + "\n"


def render_known_hosts(hosts: Sequence[HostConfig]) -> str:
    from deploykey import hosts as pinned

    lines: list[str] = []
    for host in hosts:
        lines.extend(key.line(host.name) for key in host.trusted())
        lines.extend(key.line(host.name) for key in pinned.revoked_for(host.name))
    return "\n".join(lines) + "\n"


def ssh_command(ssh: str, config: Path) -> str:
    return f"{shlex.quote(ssh)} -F {shlex.quote(str(config))}"


def create(hosts: Sequence[HostConfig], key: Key, outside: Sequence[Path]) -> Setup:
    """Write the key, known_hosts and ssh config into a fresh private directory."""
    ssh = run.which("ssh", "connect to the git host")
    directory = keydir.create(outside)
    try:
        directory.write(identity_name(key), key.material)
        directory.write(KNOWN_HOSTS, render_known_hosts(hosts).encode())
        config = directory.write(CONFIG, render_config(hosts, key, directory.path).encode())
    except BaseException:
        directory.remove()
        raise
    return Setup(directory.path, config, ssh_command(ssh, config))


@dataclass(frozen=True)
class Greeting:
    host: str
    server_key: str | None
    message: str


def verify(setup: Setup, host: HostConfig, user: str | None, key: Key) -> Greeting:
    """Connect once (`ssh -T`) to check the host key and that the server accepts the key.

    Fails before anything is installed, with the host's expected and offered fingerprints.
    """
    argv = [*shlex.split(setup.command), "-v", "-T", "-o", "ConnectTimeout=20"]
    argv.append(f"{user}@{host.name}" if user else host.name)
    result = run.run(argv, env=run.child_env())
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
        expected = ", ".join(k.fingerprint for k in host.trusted()) or "none"
        raise UserError(
            "host::mismatch",
            host=host.name,
            address=host.address,
            offered=f" ({offered})" if offered else "",
            expected=expected,
        )
    if any("Authenticated to" in line for line in debug):
        return Greeting(host.name, offered, " ".join(said))
    if "Permission denied" in text:
        raise UserError("key::refused", host=host.name, fingerprint=key.fingerprint, detail=text)
    raise UserError(
        "host::unreachable", host=host.name, address=host.address, detail=text or "no answer"
    )
