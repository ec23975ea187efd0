"""deploykey.yml and DEPLOYKEY_* settings: valid files load, invalid ones say where and what."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT
from deploykey.core import sources
from deploykey.core.errors import UserError
from deploykey.secrets import config

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def load(
    tmp_path: Path,
    yml: str | None,
    environ: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> config.Settings:
    if yml is not None:
        (tmp_path / "deploykey.yml").write_text(yml)
    env_dir = tmp_path / "env"
    env_dir.mkdir(exist_ok=True)
    for name, value in (env or {}).items():
        (env_dir / name).write_text(value)
    return config.load(tmp_path, sources.read(env_dir), environ or {})


def test_hosts(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f"hosts:\n  github.com:\n    hostname: ssh.github.com\n    port: 443\n  git.example.com:\n    user: git\n"
        f'    known_hosts: ["git.example.com {HOST_KEY}", "{HOST_KEY}"]\n',
    )
    github = settings.host("github.com")
    assert (github.hostname, github.port, github.address) == (
        "ssh.github.com",
        443,
        "ssh.github.com:443",
    )
    assert {k.fingerprint for k in github.trusted()} >= {
        "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
    }
    example = settings.host("git.example.com")
    assert [k.fingerprint for k in example.trusted()] == [
        "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
    ] * 2
    assert settings.host("gitlab.com").trusted()  # pinned, not configured


@pytest.mark.parametrize(
    ("yml", "detail"),
    [
        ("hosts: [a, b]\n", "`hosts` must be a mapping"),
        ("- a\n", "the top level must be a mapping"),
        ("keyz: {}\n", "unknown key 'keyz' (known: hosts, keys, tokens, github_app)"),
        (
            "keys:\n  MY_KEY: [acme/x]\n",
            "keys: MY_KEY: a key's config var is DEPLOY_KEY or DEPLOY_KEY_<NAME>",
        ),
        ("keys:\n  DEPLOY_KEY_A: []\n", "keys: DEPLOY_KEY_A: must list repositories"),
        (
            "keys:\n  DEPLOY_KEY_A: ['acme x']\n",
            "'acme x' is not a repository, a glob of repositories or a host",
        ),
        ("tokens:\n  GITHUB_TOKEN: 'http://x'\n", "tokens: GITHUB_TOKEN: host must be a host name"),
        (
            "tokens:\n  GITHUB_TOKEN: {host: x, pass: y}\n",
            "must be a host, or a mapping with host and username",
        ),
        ("hosts:\n  github.com:\n    prot: 22\n", "hosts: github.com: unknown setting 'prot'"),
        (
            "hosts:\n  github.com:\n    port: http\n",
            "hosts: github.com: port must be a number from 1 to 65535",
        ),
        ("hosts:\n  github.com:\n    port: 0\n", "port must be a number"),
        ("hosts:\n  'bad host':\n    port: 22\n", "hosts: bad host: not a host name"),
        (
            "hosts:\n  github.com:\n    known_hosts: []\n",
            "known_hosts must be a list of host key lines",
        ),
        ("hosts:\n  github.com: {port: 22\n", "line 3, column 1"),
        (
            "hosts:\n  github.com:\n    hostname: |\n      ssh.github.com\n",
            "hosts: github.com: hostname 'ssh.github.com\\n' holds a newline",
        ),
        ('hosts:\n  "github.com\\n": {port: 22}\n', "hosts: 'github.com\\n': holds a newline"),
        ('hosts:\n  github.com: {user: "git\\t"}\n', "user 'git\\t' holds a control character"),
        ("tokens:\n  GITHUB_TOKEN: |\n    github.com\n", "host must be a host name"),
    ],
)
def test_invalid_files(tmp_path: Path, yml: str, detail: str) -> None:
    with pytest.raises(UserError) as caught:
        load(tmp_path, yml)
    assert caught.value.slug == "config::invalid"
    assert detail in caught.value.title
    assert "\n" not in caught.value.title


def test_bad_known_hosts_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load(tmp_path, 'hosts:\n  github.com:\n    known_hosts: ["github.com ssh-ed25519 nope!"]\n')
    assert caught.value.slug == "host::known-hosts"
    assert (
        caught.value.title
        == "deploykey.yml: the known_hosts entry 1 of github.com is not a host key"
    )


def test_settings_environment_wins_over_env_dir(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        None,
        environ={"DEPLOYKEY_INSTALL": "venv"},
        env={"DEPLOYKEY_INSTALL": "off\n", "DEPLOYKEY_DRY_RUN": "true"},
    )
    assert settings.install == "venv"
    assert settings.dry_run
    assert settings.get("DEPLOYKEY_APP_PATH") == "/app"


def test_bad_setting(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load(tmp_path, None, env={"DEPLOYKEY_INSTALL": "sometimes"})
    assert caught.value.title == "DEPLOYKEY_INSTALL=sometimes is not a valid setting"
    assert "auto, python, venv, off" in caught.value.why


@pytest.mark.parametrize(
    ("name", "value", "amount"),
    [
        ("DEPLOYKEY_FETCH_TIMEOUT", "", 600),
        ("DEPLOYKEY_FETCH_TIMEOUT", " 90 ", 90),
        ("DEPLOYKEY_FETCH_MAX_SIZE", "", 2 << 30),
        ("DEPLOYKEY_FETCH_MAX_SIZE", "500m", 500 << 20),
        ("DEPLOYKEY_FETCH_MAX_SIZE", "4096", 4096),
        ("DEPLOYKEY_FETCH_MAX_SIZE", "8G", 8 << 30),
    ],
)
def test_amounts(tmp_path: Path, name: str, value: str, amount: int) -> None:
    assert load(tmp_path, None, {name: value}).amount(name) == amount


@pytest.mark.parametrize("value", ["0", "-5", "10m", "1.5", "ten", "1T", "99999999999"])
def test_a_timeout_that_is_not_whole_seconds(tmp_path: Path, value: str) -> None:
    with pytest.raises(UserError) as caught:
        load(tmp_path, None, {"DEPLOYKEY_FETCH_TIMEOUT": value})
    assert caught.value.slug == "config::amount"
    assert caught.value.title == f"DEPLOYKEY_FETCH_TIMEOUT={value} is not a valid setting"
    assert caught.value.why == (
        "DEPLOYKEY_FETCH_TIMEOUT takes a whole number of seconds, e.g. 900."
    )


def test_keys_and_tokens(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "keys:\n  DEPLOY_KEY_BILLING: [acme/Billing.git]\n  DEPLOY_KEY_UTILS: [acme/utils, acme/utils-*, gitlab.com]\n"
        "tokens:\n  GIT_TOKEN_LOCAL: {host: '127.0.0.1:8080', username: deploy}\n  GITLAB_TOKEN: gitlab.example.com\n",
    )
    assert settings.keys == {
        "DEPLOY_KEY_BILLING": ("acme/billing",),
        "DEPLOY_KEY_UTILS": ("acme/utils", "acme/utils-*", "gitlab.com"),
    }
    tokens = settings.token_configs()
    assert tokens["GIT_TOKEN_LOCAL"] == config.TokenConfig(
        "GIT_TOKEN_LOCAL", "127.0.0.1:8080", "deploy"
    )
    assert tokens["GITLAB_TOKEN"] == config.TokenConfig(
        "GITLAB_TOKEN", "gitlab.example.com", "oauth2"
    )
    assert tokens["GITHUB_TOKEN"] == config.TokenConfig(
        "GITHUB_TOKEN", "github.com", "x-access-token"
    )


# deploykey.yml's parse kept in the build cache (config.Parsed): build code writes the cache, so a
# record is believed only under the build's key and for deploykey.yml's bytes as they are now.
REAL = "hosts:\n  github.com:\n    hostname: ssh.github.com\n    port: 443\n"
OTHER = "hosts:\n  github.com:\n    hostname: evil.example.com\n    port: 22\n"


def parsed_load(app: Path, record: config.Parsed, yml: str) -> config.Settings:
    """A build's load, and the keep at its end (a build that went well)."""
    (app / "deploykey.yml").write_text(yml)
    settings = config.load(app, None, {}, parsed=record)
    settings.keep_parse()
    return settings


def test_the_parse_is_kept_and_taken_back_without_pyyaml(tmp_path: Path) -> None:
    """A second load with the same bytes and key takes the mapping from the record: in a fresh
    interpreter, PyYAML is never imported (what the record is for: its import was 12% of a warm
    build's instructions)."""
    record = config.Parsed(tmp_path / "cache" / "deploykey.yml.parsed", b"k" * 32)
    assert parsed_load(tmp_path, record, REAL).host("github.com").hostname == "ssh.github.com"
    assert record.file.is_file() and oct(record.file.stat().st_mode & 0o777) == "0o600"
    code = (
        f"import sys; sys.path.insert(0, {str(KIT / 'lib')!r}); from pathlib import Path; "
        "from deploykey.secrets import config; "
        f"record = config.Parsed(Path({str(record.file)!r}), b'k' * 32); "
        f"s = config.load(Path({str(tmp_path)!r}), None, {{}}, parsed=record); "
        "print(s.host('github.com').hostname, 'yaml' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["ssh.github.com", "False"]


def forged(record: config.Parsed, yml: str, key: bytes) -> bytes:
    """The record build code would plant: OTHER's mapping, sealed with `key`, for `yml`'s bytes."""
    other = config.Parsed(record.file.with_name("scratch"), key)
    other.keep(yml.encode(), {"hosts": {"github.com": {"hostname": "evil.example.com"}}})
    return other.file.with_name("scratch").read_bytes()


@pytest.mark.parametrize(
    "plant",
    ["another key", "another deploykey.yml", "a record of before", "garbage", "a link", "a fifo"],
)
def test_a_record_build_code_could_write_is_not_believed(tmp_path: Path, plant: str) -> None:
    """Whatever build code leaves where the record is, the next load reads deploykey.yml itself:
    a mapping sealed with another key, or sealed for other bytes (it cannot have the build's key,
    so this is the most it can do), an earlier build's record for an older deploykey.yml, bytes
    of its own, a link to a record, a fifo (reading it would wait forever)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    record = config.Parsed(cache / "deploykey.yml.parsed", b"k" * 32)
    app = tmp_path / "app"
    app.mkdir()
    if plant == "another key":
        record.file.write_bytes(forged(record, REAL, b"x" * 32))
    elif plant == "another deploykey.yml":
        record.file.write_bytes(forged(record, OTHER, b"k" * 32))
    elif plant == "a record of before":
        parsed_load(app, record, OTHER)  # an earlier build, when deploykey.yml said OTHER
    elif plant == "garbage":
        record.file.write_bytes(b"\0" * 32 + b'{"hosts": {}}')
    elif plant == "a link":
        forged_file = cache / "elsewhere"
        forged_file.write_bytes(forged(record, REAL, b"k" * 32))
        record.file.symlink_to(forged_file)
    else:
        os.mkfifo(record.file)
    settings = parsed_load(app, record, REAL)
    assert settings.host("github.com").hostname == "ssh.github.com"
    assert settings.host("github.com").port == 443


def test_a_dry_run_keeps_no_parse(tmp_path: Path) -> None:
    record = config.Parsed(tmp_path / "cache" / "deploykey.yml.parsed", b"k" * 32)
    (tmp_path / "deploykey.yml").write_text(REAL)
    config.load(tmp_path, None, {"DEPLOYKEY_DRY_RUN": "1"}, parsed=record).keep_parse()
    assert not (tmp_path / "cache").exists()


def test_nothing_is_kept_before_the_build_says_so(tmp_path: Path) -> None:
    """A build that fails after loading the settings (a bad key, a host key mismatch) never calls
    keep_parse: the cache gets nothing new."""
    record = config.Parsed(tmp_path / "cache" / "deploykey.yml.parsed", b"k" * 32)
    (tmp_path / "deploykey.yml").write_text(REAL)
    config.load(tmp_path, None, {}, parsed=record)
    assert not (tmp_path / "cache").exists()


def test_a_mapping_json_would_change_is_not_kept(tmp_path: Path) -> None:
    """A date (YAML's timestamp) is no JSON value: parsed each time, never recorded."""
    record = config.Parsed(tmp_path / "cache" / "deploykey.yml.parsed", b"k" * 32)
    with pytest.raises(UserError):  # an unknown key: the same error with or without a record
        parsed_load(tmp_path, record, "when: 2026-12-06\n")
    assert not record.file.exists()
