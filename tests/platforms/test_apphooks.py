"""App hooks end to end, the way heroku-buildpack-python runs them (v351), against the real sshd.

The buildpack runs bin/pre_compile in a subshell with every config var exported by `$(cat file)`
(so DEPLOY_KEY lost its final newline), then runs pip in ANOTHER process that inherits nothing from
the hook, then bin/post_compile. pre_compile fetches into mirrors in CACHE_DIR and removes the key;
pip gets only the `.gitconfig` block that points the private URLs at the mirrors. (The real pip,
uv, Poetry and Pipenv with v351's command lines: test_installers_heroku.py.) HOME is not the passwd home (/root), as in build-in-app-dir builds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, files_with_key, key_dirs, snapshot, text_has_key
from support.app_hooks import hook_env, python_buildpack_pip, run_hook


@pytest.fixture
def hooked(build: Build, utils_key: GeneratedKey) -> Build:
    build.set_key(utils_key.text)
    written = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)],
        capture_output=True,
        text=True,
        env=build.environ(),
    )
    assert written.returncode == 0, written.stderr
    for name in ("pre_compile", "post_compile", "deploykey.pyz"):
        assert (build.app / "bin" / name).exists()
    assert os.access(build.app / "bin" / "pre_compile", os.X_OK)
    return build


@pytest.mark.parametrize(
    "gitconfig",
    ["[user]\n\tname = Dev\n", "[user]\n\tname = Dev", None],
    ids=["newline", "no-final-newline", "absent"],
)
def test_hooks_hand_ssh_to_pip_and_take_it_back(
    hooked: Build, utils_key: GeneratedKey, gitconfig: str | None
) -> None:
    build = hooked
    before = key_dirs()
    user_config = build.home / ".gitconfig"
    if gitconfig is not None:
        user_config.write_text(gitconfig)
    (build.home / ".ssh").mkdir()
    (build.home / ".ssh" / "config").write_text("Host *\n  IdentityFile ~/.ssh/id_other\n")
    state = snapshot(user_config, build.home / ".ssh")
    env = hook_env(build, utils_key)

    pre = run_hook(build, "pre_compile", env)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "repaired: added the missing final newline" not in pre.stdout  # read from the file
    block = user_config.read_text()
    assert "insteadOf" in block and "sshCommand" not in block
    assert not text_has_key(block, utils_key.text)
    assert key_dirs() - before == set()  # gone before pip runs: pip only gets the mirrors

    pip = python_buildpack_pip(build)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Successfully installed private-utils-1.0" in pip.stdout

    post = run_hook(build, "post_compile", env)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "no key material found" in post.stdout
    assert snapshot(user_config, build.home / ".ssh") == state  # byte-identical, or still absent
    assert key_dirs() - before == set()
    assert files_with_key([build.app, build.cache], utils_key.text) == []
    assert not text_has_key(pre.stdout + pre.stderr + post.stdout + post.stderr, utils_key.text)


def test_pre_compile_rerun_is_idempotent(hooked: Build, utils_key: GeneratedKey) -> None:
    build = hooked
    before = key_dirs()
    user_config = build.home / ".gitconfig"
    user_config.write_text("[user]\n\tname = Dev\n")
    state = snapshot(user_config)
    env = hook_env(build, utils_key)
    for _ in range(2):
        assert run_hook(build, "pre_compile", env).returncode == 0
    assert user_config.read_text().count("# >>> deploykey") == 1
    assert key_dirs() - before == set()  # each run removed its keys before it ended
    assert run_hook(build, "post_compile", env).returncode == 0
    assert snapshot(user_config) == state
    assert key_dirs() - before == set()


def test_pre_compile_failure_leaves_nothing(
    hooked: Build, utils_key: GeneratedKey, keys_dir: Path
) -> None:
    """A key the server refuses: the hook fails and takes back what it wrote."""
    from conftest import make_key

    build = hooked
    before = key_dirs()
    stranger = make_key(keys_dir)
    build.set_key(stranger.text)
    state = snapshot(build.home)
    result = run_hook(build, "pre_compile", hook_env(build, stranger))
    assert result.returncode == 1
    assert " !     1 of 1 private requirements cannot be fetched" in result.stderr
    assert f"github.com refused the key {stranger.fingerprint}" in result.stderr
    assert snapshot(build.home) == state
    assert key_dirs() - before == set()


def test_gitconfig_symlink_is_refused(hooked: Build, utils_key: GeneratedKey) -> None:
    build = hooked
    before = key_dirs()
    target = build.root / "elsewhere"
    target.write_text("[user]\n")
    (build.home / ".gitconfig").symlink_to(target)
    result = run_hook(build, "pre_compile", hook_env(build, utils_key))
    assert result.returncode == 1
    assert (
        f" !     {build.home / '.gitconfig'} is a symbolic link; deploykey will not write through it"
        in result.stderr
    )
    assert target.read_text() == "[user]\n"
    assert key_dirs() - before == set()


def test_hook_without_env_dir(hooked: Build, utils_key: GeneratedKey) -> None:
    env = hook_env(hooked, utils_key)
    del env["ENV_DIR"]
    result = run_hook(hooked, "pre_compile", env)
    assert result.returncode == 1
    assert " !     ENV_DIR is not set in the app hook" in result.stderr


def test_hooks_refuse_to_overwrite_the_apps_own(build: Build) -> None:
    (build.app / "bin").mkdir()
    (build.app / "bin" / "pre_compile").write_text("#!/bin/sh\necho mine\n")
    result = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)],
        capture_output=True,
        text=True,
        env=build.environ(),
    )
    assert result.returncode == 1
    assert "is not deploykey's pre_compile hook" in result.stderr
    assert (build.app / "bin" / "pre_compile").read_text() == "#!/bin/sh\necho mine\n"


def test_the_hooks_checks_read_only_what_changed_and_find_a_copy_planted_since(
    hooked: Build, utils_key: GeneratedKey
) -> None:
    """pre_compile's check and post_compile's keep the record in the kit's part of CACHE_DIR: a
    later run reads only what changed, and a key written since into a recorded file in place
    (same size, mtime set back) is read and found."""
    from support.races import RACY_NS, settle, twice_then_planted

    build = hooked
    env = hook_env(build, utils_key)
    kept = build.app / "static" / "data.txt"
    kept.parent.mkdir()
    kept.write_bytes(b"x" * (len(utils_key.text) + 10))
    record = build.cache / "deploykey" / "scan-record"
    for _ in range(2):
        settle(build.app, RACY_NS)
        pre = run_hook(build, "pre_compile", env)
        assert pre.returncode == 0, pre.stdout + pre.stderr
    assert f"({record}): not read again" in pre.stdout, pre.stdout
    result = twice_then_planted(
        lambda: run_hook(build, "post_compile", env), build.app, kept, record, utils_key
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{kept} (private key text, {utils_key.fingerprint})" in result.stderr
