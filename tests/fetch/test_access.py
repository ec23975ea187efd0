"""The key dir a build gets, and the environment deploykey's own git fetches with."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import files_with_key, make_key
from deploykey.fetch import access
from deploykey.manifests.requirements import Requirements
from deploykey.secrets import credentials, keydir, keys
from deploykey.secrets.config import HostConfig
from deploykey.secrets.credentials import Token

TOKEN = b"ghs_" + b"x" * 36


def loaded_keys(keys_dir: Path) -> list[keys.Key]:
    return [
        keys.load(make_key(keys_dir).path.read_bytes(), name, "test")
        for name in ("DEPLOY_KEY", "DEPLOY_KEY_BILLING")
    ]


def open_access(
    tmp_path: Path,
    keys_dir: Path,
    mapping: dict[str, tuple[str, ...]],
    token_host: str,
    loaded: list[keys.Key] | None = None,
) -> access.Access:
    loaded = loaded_keys(keys_dir) if loaded is None else loaded
    token = Token("GITHUB_TOKEN", token_host, "x-access-token", TOKEN)
    # No requirements: nothing to greet; routes come from the mapping and DEPLOY_KEY alone.
    hosts = [HostConfig("github.com")]
    directory = keydir.create([tmp_path])
    return access.open(directory, hosts, loaded, [token], mapping, Requirements())


def git_config_list(cwd: Path, env: dict[str, str]) -> list[str]:
    argv = ["git", "config", "--list"]
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True
    ).stdout.splitlines()


def test_files_are_private_and_settings_hold_no_secret(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CA the user added (here the system's own bundle): git gets it as a file in the key dir.
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    mapping = {"DEPLOY_KEY_BILLING": ("acme/billing",)}
    loaded = loaded_keys(keys_dir)
    opened = open_access(tmp_path, keys_dir, mapping, "github.com", loaded)
    try:
        assert oct(opened.key_dir.stat().st_mode & 0o777) == "0o700"
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in opened.key_dir.iterdir()}
        assert set(modes.values()) == {"0o600"}
        assert set(modes) == {
            "agent.sock",
            "id_deploy_key.pub",
            "id_deploy_key_billing.pub",
            "known_hosts",
            "ssh_config",
            "ssh",
            "routes",
            "tokens.sock",
            "tokens",
            "git-credential-deploykey",
            ".owner",
            "ca-bundle.pem",
        }
        assert (opened.key_dir / "routes").read_text() == (
            "github.com acme/billing deploy_key_billing.github.com\n"
            "github.com * deploy_key.github.com\n"
        )
        settings = str(opened.env())
        assert TOKEN.decode() not in settings and "PRIVATE KEY" not in settings
        # No token file: the token is in this process's memory.
        assert files_with_token(opened.key_dir) == []
        # No key file: the keys are in the build's own agent, which holds exactly them.
        for key in loaded:
            assert files_with_key([opened.key_dir], key.material.decode()) == []
        socket = str(opened.key_dir / "agent.sock")
        listed = subprocess.run(
            ["ssh-add", "-L"], env={"SSH_AUTH_SOCK": socket}, capture_output=True, text=True
        ).stdout
        assert sorted(" ".join(line.split()[:2]) for line in listed.splitlines()) == sorted(
            key.public for key in loaded
        )
    finally:
        keydir.KeyDir(opened.key_dir).remove()


def files_with_token(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_file() and TOKEN in p.read_bytes()]


def test_git_reads_the_fetch_settings_from_env(tmp_path: Path, keys_dir: Path) -> None:
    # The token serves another host, so https URLs of routed github.com repositories go over ssh.
    mapping = {"DEPLOY_KEY_BILLING": ("acme/billing", "acme/tools-*")}
    opened = open_access(tmp_path, keys_dir, mapping, "git.example.com")
    try:
        empty = tmp_path / "empty"
        empty.mkdir()
        base = {"PATH": "/usr/bin:/bin", "HOME": str(empty), "GIT_CONFIG_NOSYSTEM": "1"}
        expected = [
            "http.lowspeedlimit=1",
            "http.lowspeedtime=20",
            "url.ssh://git@github.com/acme/billing.git.insteadof=https://github.com/acme/billing.git",
            "url.ssh://git@github.com/acme/billing.insteadof=https://github.com/acme/billing",
            "url.ssh://git@github.com/acme/tools-.insteadof=https://github.com/acme/tools-",
            "credential.helper=",
            f"credential.helper=!sh {opened.key_dir}/git-credential-deploykey",
        ]
        command = f"sh {opened.key_dir}/ssh"
        env = {**base, **opened.env()}
        assert git_config_list(empty, env) == expected
        assert env["GIT_SSH_COMMAND"] == command
        assert env["GIT_SSH_VARIANT"] == "ssh"
    finally:
        keydir.KeyDir(opened.key_dir).remove()


def test_credential_helper_answers_only_its_hosts(tmp_path: Path, keys_dir: Path) -> None:
    opened = open_access(tmp_path, keys_dir, {}, "github.com")
    helper = str(opened.key_dir / "git-credential-deploykey")

    def ask(request: str) -> str:
        argv = ["sh", helper, "get"]
        return subprocess.run(argv, input=request, capture_output=True, text=True).stdout

    try:
        answer = ask("protocol=https\nhost=github.com\n\n")
        assert answer == f"username=x-access-token\npassword={TOKEN.decode()}\n"
        assert ask("protocol=https\nhost=gitlab.com\n\n") == ""
        assert ask("protocol=http\nhost=github.com\n\n") == ""  # plain http: loopback only
        assert subprocess.run(["sh", helper, "store"], input="").returncode == 0
    finally:
        keydir.KeyDir(opened.key_dir).remove()


def test_a_process_that_does_not_descend_from_deploykey_is_refused_the_tokens(
    tmp_path: Path, keys_dir: Path
) -> None:
    """The tokens are served on a socket in the key dir: a process of the same user that is not
    a descendant of deploykey (a daemon left by an earlier build: `setsid -f` here, whose parent
    exits at once) connects and is answered nothing; git's helper, a descendant, gets the token."""
    opened = open_access(tmp_path, keys_dir, {}, "github.com")
    out = tmp_path / "daemon-got"
    client = [sys.executable, "-I", "-S", "-c", credentials.CLIENT]
    argv = [*client, str(opened.key_dir / "tokens.sock"), "token_github_token"]
    try:
        detached = f"{shlex.join(argv)} > {out}.part; mv {out}.part {out}"
        subprocess.run(["setsid", "-f", "sh", "-c", detached], check=True)
        for _ in range(600):  # a bound, not a measure
            if out.exists():
                break
            time.sleep(0.05)
        assert out.read_bytes() == b""
        assert subprocess.run(argv, capture_output=True).stdout == TOKEN
    finally:
        keydir.KeyDir(opened.key_dir).remove()
