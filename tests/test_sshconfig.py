"""The ssh config and known_hosts the kit writes, as OpenSSH itself reads them (`ssh -G`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import make_key
from deploykey import keys, sshconfig
from deploykey.config import HostConfig


def effective(config: Path, host: str) -> dict[str, str]:
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True
    ).stdout
    return {
        line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line
    }


def test_effective_options(tmp_path: Path, keys_dir: Path) -> None:
    generated = make_key(keys_dir)
    key = keys.load(generated.path.read_bytes(), "DEPLOY_KEY", "test")
    hosts = [HostConfig("github.com", "127.0.0.1", 2222, "git"), HostConfig("gitlab.com")]
    config = tmp_path / "ssh_config"
    config.write_text(sshconfig.render_config(hosts, key, tmp_path))
    github = effective(config, "github.com")
    assert github["hostname"] == "127.0.0.1"
    assert github["port"] == "2222"
    assert github["hostkeyalias"] == "github.com"
    assert github["identityfile"] == str(tmp_path / "id_deploy_key")
    assert github["identitiesonly"] == "yes"
    assert github["identityagent"] == "none"
    assert github["batchmode"] == "yes"
    assert github["stricthostkeychecking"] == "true"
    assert github["userknownhostsfile"] == str(tmp_path / "known_hosts")
    assert github["globalknownhostsfile"] == "/dev/null"
    assert github["updatehostkeys"] == "false"
    assert effective(config, "gitlab.com")["hostname"] == "gitlab.com"
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


def test_created_files_are_private(tmp_path: Path, keys_dir: Path) -> None:
    generated = make_key(keys_dir)
    key = keys.load(generated.path.read_bytes(), "DEPLOY_KEY", "test")
    setup = sshconfig.create([HostConfig("github.com")], key, [tmp_path])
    try:
        assert oct(setup.key_dir.stat().st_mode & 0o777) == "0o700"
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in setup.files()} == {
            "id_deploy_key": "0o600",
            "known_hosts": "0o600",
            "ssh_config": "0o600",
        }
        assert (setup.key_dir / "id_deploy_key").read_bytes() == generated.path.read_bytes()
        assert tmp_path not in setup.key_dir.parents
        assert setup.command.endswith(f"-F {setup.config}")
        assert generated.text not in setup.command
    finally:
        import shutil

        shutil.rmtree(setup.key_dir)
