"""A build that runs as a user who is not root (a Dockerfile's `USER app`): BuildKit's secret and
cache mounts and the directories of earlier steps are root's. Each case runs the kit's real entry
point as nobody and must end in an error that names the uid and the mount option, never a bug."""

from __future__ import annotations

from pathlib import Path

from conftest import GeneratedKey, files_with_key, make_key
from support.app_dirs import app_dir, own_key
from support.gitserver import GitServer
from support.nonroot import NonRoot

BUG = "This is a bug in deploykey"


def test_a_root_only_buildkit_secret_names_the_uid_to_mount_it_with(
    nonroot: NonRoot, git_server: GitServer, keys_dir: Path
) -> None:
    """/run/secrets/deploy_key as BuildKit mounts it without `uid=`: root's, mode 0400."""
    key = make_key(keys_dir)
    secrets = keys_dir / "secrets"
    secrets.mkdir()
    (secrets / "deploy_key").write_text(key.text)
    app = app_dir(nonroot, git_server)
    venv = nonroot.root / "venv"
    result = nonroot.run("install", "--venv", str(venv), cwd=app, secrets=secrets)
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert BUG not in err
    assert (
        " !     The secret /run/secrets/deploy_key is readable only by root (uid 0); deploykey "
        f"runs as nobody (uid {nonroot.uid})\n"
    ) in err
    assert "The file exists, with mode 0400." in err
    assert (
        f"Fix: Mount the secret for that user: `RUN --mount=type=secret,id=deploy_key,"
        f"uid={nonroot.uid} ...`"
    ) in err
    assert "(secret::unreadable: README.md#secret-unreadable)" in err
    assert not venv.exists()


def test_a_root_only_key_file(nonroot: NonRoot, git_server: GitServer, keys_dir: Path) -> None:
    key = make_key(keys_dir)
    path = nonroot.write("deploy_key", key.text.encode(), mode=0o400)
    app = app_dir(nonroot, git_server)
    result = nonroot.run(
        "install", "--venv", str(nonroot.root / "venv"), "--key-file", str(path), cwd=app
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert BUG not in result.stderr
    assert f"The secret {path} is readable only by root (uid 0)" in result.stderr
    assert f"`RUN --mount=type=secret,id=deploy_key,uid={nonroot.uid} ...`" in result.stderr


def test_a_root_owned_cache_mount_names_the_mount_options(
    nonroot: NonRoot, git_server: GitServer, keys_dir: Path
) -> None:
    """The cache mount as BuildKit makes it without `uid=`, filled by a root build that used the
    same mount: root's, 0755. Without the kit's dependencies (a python:*-slim image) the bootstrap
    looks for them there first; with them, the install would write its mirrors there."""
    key = own_key(nonroot, make_key(keys_dir))
    cache = nonroot.mkdir("cache")
    # What a root build leaves there: the kit's dependencies, in a directory private to root.
    nonroot.mkdir("cache/deps", mode=0o700)
    app = app_dir(nonroot, git_server)
    venv = nonroot.root / "venv"
    args = ("install", "--venv", str(venv), "--key-file", str(key), "--cache-dir", str(cache))
    for deps in (False, True):
        result = nonroot.run(*args, cwd=app, env=nonroot.environ(deps=deps))
        err = result.stderr
        assert result.returncode == 1, result.stdout + err
        assert BUG not in err and "Traceback" not in err
        assert (
            f" !     The cache dir {cache} is not writable by nobody (uid {nonroot.uid})\n" in err
        )
        assert f"{cache} is owned by root (uid 0) with mode 0755." in err
        assert (
            f"RUN --mount=type=cache,id=deploykey-{nonroot.uid},target={cache},"
            f"uid={nonroot.uid} ..."
        ) in err
        assert "(cache::unwritable: README.md#cache-unwritable)" in err
        assert [path.name for path in cache.iterdir()] == ["deps"]
        assert not venv.exists()


def test_a_venv_under_a_root_owned_directory(
    nonroot: NonRoot, git_server: GitServer, keys_dir: Path
) -> None:
    key = own_key(nonroot, make_key(keys_dir))
    opt = nonroot.mkdir("opt")
    venv = opt / "venv"
    app = app_dir(nonroot, git_server)
    result = nonroot.run("install", "--venv", str(venv), "--key-file", str(key), cwd=app)
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert (
        f" !     Cannot write the virtual environment {venv} as nobody (uid {nonroot.uid})\n"
    ) in err
    assert f"{opt} is owned by root (uid 0) with mode 0755" in err
    assert f"`RUN mkdir -p {venv} && chown {nonroot.uid} {venv}`" in err
    assert "(install::unwritable: README.md#install-unwritable)" in err


def test_a_directory_with_other_files_is_not_taken_for_a_venv(
    nonroot: NonRoot, git_server: GitServer, keys_dir: Path
) -> None:
    key = own_key(nonroot, make_key(keys_dir))
    venv = nonroot.mkdir("venv", owner=nonroot.uid)
    nonroot.write("venv/notes.txt", b"mine\n", owner=nonroot.uid)
    app = app_dir(nonroot, git_server)
    result = nonroot.run("install", "--venv", str(venv), "--key-file", str(key), cwd=app)
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert f" !     {venv} exists and is not a virtual environment\n" in err
    assert "It holds: notes.txt." in err
    assert f"`RUN mkdir {venv} && chown app {venv}`" in err
    assert "DEPLOYKEY_APP_PATH" not in err and "Heroku" not in err
    assert "(install::not-a-venv: README.md#install-not-a-venv)" in err
    assert sorted(p.name for p in venv.iterdir()) == ["notes.txt"]


def test_non_root_install_with_its_own_secret_cache_and_empty_venv(
    nonroot: NonRoot, git_server: GitServer, utils_key: GeneratedKey
) -> None:
    """The fixed Dockerfile: `uid=` on the secret, a cache of the user's own, and /opt/venv made
    empty for the user in an earlier step. The install works, and leaves no key behind."""
    key = own_key(nonroot, utils_key)
    cache = nonroot.mkdir("cache", owner=nonroot.uid)
    venv = nonroot.mkdir("opt/venv", owner=nonroot.uid)
    app = app_dir(nonroot, git_server)
    args = ("install", "--venv", str(venv), "--key-file", str(key), "--cache-dir", str(cache))
    result = nonroot.run(*args, cwd=app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(venv.glob("lib/python3*/site-packages/private_utils"))
    assert (venv / "pyvenv.cfg").is_file()
    assert "no key material found" in result.stdout
    assert files_with_key([venv, cache, app], utils_key.text) == []


def test_a_cache_another_user_filled_fails_the_leak_check(
    nonroot: NonRoot, git_server: GitServer, utils_key: GeneratedKey
) -> None:
    """A cache shared with a root build (the same mount id) holds files only root reads: the
    install works, but the check of what the build keeps cannot read them, and says so."""
    key = own_key(nonroot, utils_key)
    cache = nonroot.mkdir("cache", owner=nonroot.uid)
    left = nonroot.mkdir("cache/from-a-root-build", mode=0o700)
    nonroot.write("cache/from-a-root-build/wheel.whl", b"root's\n", mode=0o600)
    venv = nonroot.mkdir("venv", owner=nonroot.uid)
    app = app_dir(nonroot, git_server)
    args = ("install", "--venv", str(venv), "--key-file", str(key), "--cache-dir", str(cache))
    result = nonroot.run(*args, cwd=app)
    out, err = result.stdout, result.stderr
    assert result.returncode == 1, out + err
    assert "no key material found" not in out + err
    assert " !     The leak check could not read 1 path(s)" in err
    assert f" !     {left} (Permission denied)\n" in err
    assert f"`--mount=type=cache,id=deploykey-{nonroot.uid},target=...,uid={nonroot.uid}`" in err
    assert "(scan::unreadable: README.md#scan-unreadable)" in err


def test_setup_with_a_root_owned_cache(
    nonroot: NonRoot, git_server: GitServer, keys_dir: Path
) -> None:
    """`eval "$(deploykey setup --shell --cache-dir DIR)"` in a CI job or RUN as another user."""
    key = own_key(nonroot, make_key(keys_dir))
    cache = nonroot.mkdir("cache")
    app = app_dir(nonroot, git_server)
    result = nonroot.run(
        "setup", "--shell", "--cache-dir", str(cache), "--key-file", str(key), cwd=app
    )
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert result.stdout == ""  # nothing for the shell to evaluate
    assert f" !     The cache dir {cache} is not writable by nobody (uid {nonroot.uid})\n" in err
    assert BUG not in err
    assert list(cache.iterdir()) == []
