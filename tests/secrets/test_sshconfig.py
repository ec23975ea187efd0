"""The ssh config and known_hosts the kit writes, as OpenSSH itself reads them (`ssh -G`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import make_key
from deploykey.secrets import keys, sshconfig
from deploykey.secrets.config import HostConfig


def effective(config: Path, host: str) -> dict[str, str]:
    """ssh -G's answer; repeated options (IdentityFile accumulates) joined by commas."""
    argv = ["ssh", "-G", "-F", str(config), host]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        found.setdefault(name, []).append(value)
    return {name: ",".join(values) for name, values in found.items()}


def test_effective_options(tmp_path: Path, keys_dir: Path) -> None:
    generated = make_key(keys_dir)
    key = keys.load(generated.path.read_bytes(), "DEPLOY_KEY", "test")
    hosts = [HostConfig("github.com", "127.0.0.1", 2222, "git"), HostConfig("gitlab.com")]
    config = tmp_path / "ssh_config"
    config.write_text(sshconfig.render_config(hosts, [key], tmp_path))
    plain = effective(config, "github.com")
    assert plain["identityfile"] == "none"  # the router picks the alias
    assert plain["identityagent"] == "none"  # no agent for a host name as it is
    github = effective(config, "deploy_key.github.com")
    assert github["hostname"] == "127.0.0.1"
    assert github["port"] == "2222"
    assert github["hostkeyalias"] == "github.com"
    # One key: its public half, which picks that key among the agent's (the private half is in
    # deploykey's own agent, whose socket is in the key dir); "none" (from Host *) is skipped by
    # ssh when it loads identities.
    assert github["identityfile"] == f"{tmp_path / 'id_deploy_key.pub'},none"
    assert github["identitiesonly"] == "yes"
    assert github["identityagent"] == str(tmp_path / "agent.sock")
    assert github["batchmode"] == "yes"
    assert github["stricthostkeychecking"] == "true"
    assert github["userknownhostsfile"] == str(tmp_path / "known_hosts")
    assert github["globalknownhostsfile"] == "/dev/null"
    assert github["updatehostkeys"] == "false"
    # Never a hang: 20 s to connect and exchange banners, a silent session dropped after 15 s x 4.
    assert (github["connecttimeout"], github["serveraliveinterval"]) == ("20", "15")
    assert github["serveralivecountmax"] == "4"
    assert effective(config, "deploy_key.gitlab.com")["hostname"] == "gitlab.com"
    # A host nobody configured: no key offered, still strict and pinned.
    other = effective(config, "git.example.com")
    assert other["identityfile"] == "none"
    assert other["stricthostkeychecking"] == "true"
    assert other["userknownhostsfile"] == str(tmp_path / "known_hosts")


def test_known_hosts_as_ssh_keygen_reads_it(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshconfig.render_known_hosts([HostConfig("github.com")]))
    found = subprocess.run(
        ["ssh-keygen", "-F", "github.com", "-f", str(known), "-l"], capture_output=True, text=True
    ).stdout
    assert "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU" in found
    assert "@revoked github.com ssh-rsa" in known.read_text()


def test_github_over_port_443(tmp_path: Path, keys_dir: Path) -> None:
    """The documented fallback for networks that block port 22: ssh.github.com:443, still checked
    against github.com's pinned keys."""
    key = keys.load(make_key(keys_dir).path.read_bytes(), "DEPLOY_KEY", "test")
    config = tmp_path / "ssh_config"
    host = HostConfig("github.com", "ssh.github.com", 443)
    config.write_text(sshconfig.render_config([host], [key], tmp_path))
    known = tmp_path / "known_hosts"
    known.write_text(sshconfig.render_known_hosts([host]))
    github = effective(config, "deploy_key.github.com")
    assert (github["hostname"], github["port"], github["hostkeyalias"]) == (
        "ssh.github.com",
        "443",
        "github.com",
    )
    argv = ["ssh-keygen", "-F", "github.com", "-f", str(known), "-l"]
    found = subprocess.run(argv, capture_output=True, text=True).stdout
    assert "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU" in found
