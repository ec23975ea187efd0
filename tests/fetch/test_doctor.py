"""`deploykey doctor`: which key and host each private requirement uses, and why one would fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BIN, Build, GeneratedKey, key_dirs, make_key, snapshot, text_has_key
from support.gitserver import GitServer

UTILS = "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0"


def doctor(build: Build, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "deploykey"), "doctor", str(build.app), *args]
    return subprocess.run(argv, env=build.environ(), capture_output=True, text=True, timeout=120)


def test_healthy_app(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    state = snapshot(build.app, build.cache, build.home)
    result = doctor(build, str(build.env_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requirements.txt:1  github.com/acme/private-utils @ v1.0" in result.stdout
    via = f"via DEPLOY_KEY ({utils_key.fingerprint}) -> 127.0.0.1:{build.server.port}: ok, v1.0 is "
    assert via in result.stdout
    assert "-----> Every private repository can be fetched (1 checked)" in result.stdout
    assert snapshot(build.app, build.cache, build.home) == state
    assert key_dirs() == before
    assert not text_has_key(result.stdout + result.stderr, utils_key.text)


def test_every_failure_in_plain_words(build: Build, git_server: GitServer, keys_dir: Path) -> None:
    utils = make_key(keys_dir)
    git_server.grant(utils.label, utils.public, ["acme/private-utils", "acme/other-lib"])
    stranger = make_key(keys_dir)
    (build.app / ".env").write_text(
        f'DEPLOY_KEY="{utils.text}"\nDEPLOY_KEY_STRANGER="{stranger.text}"\n'
    )
    (build.app / "requirements.txt").write_text(
        "flask==3.0\n"
        f"{UTILS}\n"
        "other-lib @ git+ssh://git@github.com/acme/other-lib.git@v9.9\n"
        "typo @ git+ssh://git@github.com:acme/private-utils.git@v1.0\n"
        "gone @ git+ssh://git@github.com/acme/stranger-lib.git\n"
    )
    (build.app / "deploykey.yml").write_text(
        build.server.deploykey_yml() + "keys:\n  DEPLOY_KEY_STRANGER: [acme/stranger-lib]\n"
    )
    result = doctor(build)  # ENV_DIR defaults to APP_DIR/.env
    assert result.returncode == 1
    out, err = result.stdout, result.stderr
    assert f"via DEPLOY_KEY ({utils.fingerprint})" in out and ": ok, v1.0 is " in out
    assert " !     3 of 4 private requirements cannot be fetched" in err
    assert (
        "requirements.txt:3 github.com/acme/other-lib @ v9.9: the repository is readable, but has "
        "no tag or branch `v9.9` (tags: v1.0; branches: main)." in err
    )
    assert (
        "requirements.txt:4 git+ssh://git@github.com:acme/private-utils.git@v1.0: requirements.txt:4: "
        "`git+ssh://git@github.com:acme/private-utils.git@v1.0` uses a colon after the host" in err
    )
    assert "Fix: Write it as `git+ssh://git@github.com/acme/private-utils.git@v1.0`." in err
    assert (
        f"requirements.txt:5 github.com/acme/stranger-lib: github.com refused the key "
        f"{stranger.fingerprint}: it is not registered as a deploy key anywhere there." in err
    )
    assert not text_has_key(out + err, utils.text) and not text_has_key(out + err, stranger.text)


def test_host_key_mismatch_is_reported_first(
    build: Build, utils_key: GeneratedKey, keys_dir: Path
) -> None:
    build.set_key(utils_key.text)
    impostor = make_key(keys_dir)
    yml = build.server.deploykey_yml().replace(build.server.host_key_public, impostor.public)
    (build.app / "deploykey.yml").write_text(yml)
    result = doctor(build, str(build.env_dir))
    assert result.returncode == 1
    assert " !     Host key verification failed for github.com" in result.stderr
    assert impostor.fingerprint in result.stderr


def test_without_an_env_dir(build: Build) -> None:
    result = doctor(build)
    assert result.returncode == 1
    assert f" !     The env dir {build.app / '.env'} does not exist" in result.stderr
