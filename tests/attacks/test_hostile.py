"""A hostile private dependency: its build code searches the machine for the key, in every mode.

The package's PEP 517 backend runs while the installer builds it, the one moment third-party code
runs in a build. It looks everywhere a key was before the fetch-first design, or could be: its own
environment, every process's cmdline and environ (ENV_DIR is named there), the env dir itself (and a
CNB build's platform dir: its env files and bindings),
/dev/shm, TMPDIR and HOME (key dirs, ssh configs), git's credential helpers, an ssh agent. All it
reads goes into one file, which the test searches for the key, and which must show that the search
really ran (it read the env dir, the process table, and git's settings).
"""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import (
    BIN,
    KIT,
    Build,
    GeneratedKey,
    files_with_key,
    flit_package,
    key_dirs,
    text_has_key,
)
from support import hostile
from support.gitserver import GitServer
from support.hostile import assert_found_nothing, own_environ, take_loot

# fixtures, used by name
hostile_build = hostile.hostile_build
hostile_repo = hostile.hostile_repo


def heroku_env(build: Build, **extra: str) -> dict[str, str]:
    """A Heroku build: STACK set (ENV_DIR is then the build's own copy of the config vars)."""
    return build.environ(STACK="heroku-24", **extra)


def python_buildpack_pip(build: Build, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The next buildpack's pip (another process; its environment is the platform's)."""
    venv = build.root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    argv = [str(venv / "bin" / "pip"), "install", "--no-input", "-r", "requirements.txt"]
    return subprocess.run(argv, cwd=build.app, env=env, capture_output=True, text=True)


def test_compile_into_a_venv(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    result = build.compile(env=heroku_env(build, DEPLOYKEY_INSTALL="venv"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed DEPLOY_KEY from {build.env_dir}" in result.stdout
    assert_found_nothing(build, utils_key, result.stdout + result.stderr, before)


def test_handoff_to_the_python_buildpack(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    env = heroku_env(build, DEPLOYKEY_INSTALL="off")
    result = build.compile(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = subprocess.run(
        ["bash", "-c", f". {KIT / 'export'} && env -0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    handed = dict(item.split("=", 1) for item in exported.split("\0") if "=" in item)
    # heroku-buildpack-python v351 exports ENV_DIR to the installer's environment (bin/compile).
    pip = python_buildpack_pip(build, {**handed, "ENV_DIR": str(build.env_dir)})
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert_found_nothing(build, utils_key, result.stdout + pip.stdout + pip.stderr, before)


def test_app_hooks(hostile_build: Build, utils_key: GeneratedKey) -> None:
    build, before = hostile_build, key_dirs()
    written = subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)], capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    env = heroku_env(
        build, ENV_DIR=str(build.env_dir), CACHE_DIR=str(build.cache), BUILD_DIR=str(build.app)
    )
    # sub_env (heroku-buildpack-python v351, vendor/buildpack-stdlib_v8.sh): config vars exported.
    hook_env = {**env, "DEPLOY_KEY": utils_key.text.rstrip("\n")}
    pre = subprocess.run(
        [str(build.app / "bin" / "pre_compile")],
        cwd=build.app,
        env=hook_env,
        capture_output=True,
        text=True,
    )
    assert pre.returncode == 0, pre.stdout + pre.stderr
    pip = python_buildpack_pip(build, env)  # inherits nothing from the hook
    assert pip.returncode == 0, pip.stdout + pip.stderr
    post = subprocess.run(
        [str(build.app / "bin" / "post_compile")],
        cwd=build.app,
        env={**env, "DEPLOY_KEY": ""},
        capture_output=True,
        text=True,
    )
    assert post.returncode == 0, post.stdout + post.stderr
    assert "pre_compile removed them before the install" in post.stdout
    output = pre.stdout + pre.stderr + pip.stdout + post.stdout + post.stderr
    assert_found_nothing(build, utils_key, output, before)


def test_ci_setup_in_its_own_step(hostile_build: Build, utils_key: GeneratedKey) -> None:
    """A CI job whose secret is given to the setup step only (GitHub Actions: `env:` of that step):
    the install step, a process that never had the key in its environment, finds nothing. (A
    secret exported to the whole job stays readable in /proc/<shell>/environ even after `unset`,
    whatever deploykey does: the README says to give it to the setup step only.)"""
    build, before = hostile_build, key_dirs()
    venv = build.root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    exports = build.root / "exports"
    setup = subprocess.run(
        [str(BIN / "deploykey"), "setup", "--shell", "--cache-dir", str(build.cache)],
        cwd=build.app,
        env={**build.environ(), "DEPLOY_KEY": utils_key.text},
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stderr
    exports.write_text(setup.stdout)
    install = f". {exports} && {venv}/bin/pip install --no-input -r requirements.txt"
    job = subprocess.run(
        ["bash", "-c", install], cwd=build.app, env=build.environ(), capture_output=True, text=True
    )
    assert job.returncode == 0, job.stdout + job.stderr
    loot = take_loot(build)
    assert b"== environ" in loot and b"== git config" in loot
    assert b"SSH_AUTH_SOCK" not in own_environ(loot)
    assert not text_has_key(loot.decode("utf-8", "replace"), utils_key.text)
    assert files_with_key([build.app, build.cache, build.home], utils_key.text) == []
    assert not text_has_key(setup.stdout + setup.stderr + job.stdout, utils_key.text)
    assert key_dirs() - before == set()


def test_a_mirror_changed_by_build_code_is_never_trusted(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """Build code can write the build cache: a hook, or settings that make git run a command,
    planted in a cached mirror would run in the next build's fetch, which has the key. deploykey
    runs no hook of a mirror, and discards one whose settings it did not write."""
    if not (git_server.root / "repos" / "acme" / "moving.git").exists():
        git_server.add_repo("acme/moving", flit_package("moving", "1.0"))
    git_server.grant(utils_key.label, utils_key.public, ["acme/moving"])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "moving @ git+ssh://git@github.com/acme/moving.git@main\n"
    )
    first = build.compile()
    assert first.returncode == 0, first.stdout + first.stderr
    mirror = build.cache / "deploykey" / "mirrors" / "github.com" / "acme" / "moving.git"
    ran = build.root / "planted-ran"
    (mirror / "hooks").mkdir(exist_ok=True)  # deploykey's clone copies no template (sealedgit)
    for hook in ("reference-transaction", "post-receive", "pre-auto-gc"):
        (mirror / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {ran}-{hook}\n")
        (mirror / "hooks" / hook).chmod(0o755)
    # A new commit: the next fetch updates refs, which is when git runs reference-transaction.
    release = time.time_ns()  # a tag no earlier run made
    git_server.add_commit("acme/moving", {"moving/extra.py": "x = 1\n"}, f"r{release}")
    second = build.compile()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "main is " in second.stdout and "(fetched)" in second.stdout
    assert list(build.root.glob("planted-ran*")) == []
    # Settings that would run a command with the key dir in its environment: an ext:: URL.
    with (mirror / "config").open("a") as config:
        config.write(
            f'[url "ext::sh -c touch% {ran}-ext"]\n\tinsteadOf = ssh://git@github.com/\n'
            '[protocol "ext"]\n\tallow = always\n'
        )
    git_server.add_commit("acme/moving", {"moving/extra.py": "x = 2\n"}, f"r{release + 1}")
    third = build.compile()
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"discarded the cached mirror {mirror}" in third.stderr
    assert list(build.root.glob("planted-ran*")) == []
    assert "ext::" not in (mirror / "config").read_text()
