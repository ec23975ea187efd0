"""The next build's fetch runs no program build code could have put on PATH.

A CI runner or a laptop keeps the build user's HOME, and PATH often starts with a directory in it
(`~/.local/bin`, `~/bin`): build N's code writes a `git`, `ssh`, `sh` or `ssh-add` there, and build
N+1's fetch, the one step with a key, would run it. The tools deploykey runs with a secret are
looked up only in the directories of PATH this user cannot write (nor swap: a writable parent).
As root nothing can be told apart (root writes every directory): SECURITY.md says so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, GeneratedKey, files_with_key
from support.app_dirs import app_dir, own_key
from support.gitserver import GitServer
from support.nonroot import PATH, NonRoot

# Each one records that it ran, then does what the real one does, so that the build would succeed.
PLANTED = ("git", "ssh", "ssh-add", "ssh-agent", "ssh-keygen", "openssl", "sh", "tr", "dirname")


def plant(nonroot: NonRoot, bin_dir: Path, marker: Path) -> None:
    for name in PLANTED:
        real = next(
            str(Path(entry) / name) for entry in PATH.split(":") if (Path(entry) / name).exists()
        )
        nonroot.write(
            str((bin_dir / name).relative_to(nonroot.root)),
            f'#!/bin/dash\necho {name} >> {marker}\nexec {real} "$@"\n'.encode(),
            owner=nonroot.uid,
            mode=0o755,
        )


def test_tools_planted_on_a_writable_path_never_run_with_the_key(
    nonroot: NonRoot, git_server: GitServer, utils_key: GeneratedKey
) -> None:
    """Build N left programs in `~/.local/bin`, first on PATH (as pip's `--user` scripts are);
    build N+1's `deploykey fetch` runs none of them, and fetches with the system's tools."""
    key = own_key(nonroot, utils_key)
    cache = nonroot.mkdir("cache", owner=nonroot.uid)
    app = app_dir(nonroot, git_server)
    env = nonroot.environ()
    bin_dir = nonroot.mkdir("home/.local/bin", owner=nonroot.uid)
    marker = nonroot.root / "home" / "ran"
    plant(nonroot, bin_dir, marker)
    env["PATH"] = f"{bin_dir}:{PATH}"
    result = nonroot.run(
        "fetch", "--key-file", str(key), "--cache-dir", str(cache), cwd=app, env=env
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert not marker.exists(), marker.read_text()
    assert files_with_key([cache, app, nonroot.root / "home"], utils_key.text) == []


def test_a_tool_found_only_where_build_code_can_write_is_refused(
    nonroot: NonRoot, git_server: GitServer, utils_key: GeneratedKey
) -> None:
    """With git found only in a directory the build user can write, the fetch does not run it:
    it says where git was found and why it is not used."""
    key = own_key(nonroot, utils_key)
    cache = nonroot.mkdir("cache", owner=nonroot.uid)
    app = app_dir(nonroot, git_server)
    bin_dir = nonroot.mkdir("home/bin", owner=nonroot.uid)
    os.symlink("/usr/bin/git", bin_dir / "git")
    # Every other program of the system, from a directory only root writes.
    system = nonroot.mkdir("system-bin")
    for program in Path("/usr/bin").iterdir():
        if program.name != "git":
            os.symlink(program, system / program.name)
    env = nonroot.environ()
    env["PATH"] = f"{bin_dir}:{system}"
    result = nonroot.run(
        "fetch", "--key-file", str(key), "--cache-dir", str(cache), cwd=app, env=env
    )
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert f" !     `git` is only in {bin_dir}, which nobody (uid {nonroot.uid}) can write" in err
    assert "(tool::writable: README.md#tool-writable)" in err
    assert "Traceback" not in err


# The programs bin/'s scripts ran before the kit, each looked up on PATH.
STARTERS = ("bash", "readlink", "basename", "dirname", "id")
# The python3 build N left first on PATH: it notes that it ran and copies the key file it is
# handed the path of, then runs the real one, so that the build would succeed.
PLANTED_PYTHON = """#!/bin/sh
echo ran >> {marker}
for arg; do case $prev in --key-file) cat "$arg" >> {loot} ;; esac; prev=$arg; done
[ -f "$ENV_DIR_FOR_TEST/DEPLOY_KEY" ] && cat "$ENV_DIR_FOR_TEST/DEPLOY_KEY" >> {loot}
exec /usr/bin/python3 "$@"
"""


@pytest.mark.parametrize("entry", ["deploykey", "compile", "pre_compile"])
def test_a_python3_or_bash_planted_on_a_writable_path_never_runs_the_kit(
    nonroot: NonRoot, git_server: GitServer, utils_key: GeneratedKey, entry: str
) -> None:
    """Build N left a `python3` (and a `bash`, `readlink`, `basename`, `dirname`, `id`) where PATH looks first (`~/.local/bin` where HOME is kept; where
    builds share /app, `/app/.heroku/python/bin`, first on PATH when heroku/python runs
    pre_compile); build N+1's entry point runs none of them: its shell is /bin/bash, its tools are
    bash's builtins or the system's (`command -p`), and the kit runs under the system's python3."""
    app = app_dir(nonroot, git_server)
    cache = nonroot.mkdir("cache", owner=nonroot.uid)
    planted = "app-heroku/python/bin" if entry == "pre_compile" else "home/.local/bin"
    bin_dir = nonroot.mkdir(planted, owner=nonroot.uid)
    marker, loot = nonroot.root / "home" / "ran", nonroot.root / "home" / "loot"
    nonroot.write(
        f"{planted}/python3",
        PLANTED_PYTHON.format(marker=marker, loot=loot).encode(),
        owner=nonroot.uid,
        mode=0o755,
    )
    for name in STARTERS:  # bash (`#!/usr/bin/env bash` looked it up on PATH) and its tools
        script = f'#!/bin/dash\necho {name} >> {marker}\nexec /usr/bin/{name} "$@"\n'
        nonroot.write(f"{planted}/{name}", script.encode(), owner=nonroot.uid, mode=0o755)
    env_dir = nonroot.mkdir("env", owner=nonroot.uid)
    nonroot.write("env/DEPLOY_KEY", utils_key.text.encode(), owner=nonroot.uid, mode=0o600)
    env = nonroot.environ(PATH=f"{bin_dir}:{PATH}", ENV_DIR_FOR_TEST=str(env_dir))
    if entry == "deploykey":
        key = own_key(nonroot, utils_key)
        argv = [str(BIN / "deploykey"), "fetch", "--key-file", str(key), "--cache-dir", str(cache)]
    elif entry == "compile":
        os.chown(app, nonroot.uid, 0)  # the build dir is the build user's: the venv goes there
        env["DEPLOYKEY_APP_PATH"] = str(app)
        argv = [str(BIN / "compile"), str(app), str(cache), str(env_dir)]
    else:  # as heroku-buildpack-python runs it: from the app dir, with these three exported
        env.update(
            BUILD_DIR=str(app), CACHE_DIR=str(cache), ENV_DIR=str(env_dir), STACK="heroku-24"
        )
        # The hooks as `deploykey hooks` writes them into the app, with the kit beside them.
        written = subprocess.run([str(BIN / "deploykey"), "hooks", str(app)], capture_output=True)
        assert written.returncode == 0, written.stderr
        argv = [str(app / "bin" / "pre_compile")]
    result = nonroot.run_program(argv, cwd=app, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert not marker.exists(), out
    assert not loot.exists()
    assert files_with_key([cache, app, nonroot.root / "home"], utils_key.text) == []
