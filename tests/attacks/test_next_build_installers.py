"""What build N's code leaves among the installers' tools and caches is gone once the key rotates.

deploykey keeps uv, Poetry and Pipenv (installed from PyPI once) and their caches in the kit's part
of the build cache. Build code runs beside the installers and can change any of it: a `uv` of its
own that the next build would run to install the app. The mirrors are sealed before any build code
runs (test_next_build_mirrors.py); the installers' state cannot be, as the installers write it
while build code runs. So it is tied to the build's key: after a rotation (what a user does once a
hostile dependency has run), build N+1 drops all of it before installing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import Build, GeneratedKey, make_key
from support.gitserver import GitServer
from support.heroku_apps import IMPORT, lib_key, locked, tools, write_app
from support.installers import GREETING, REPO, Tools
from support.lockfile_apps import compile_env, run_compile, tool_links

__all__ = ["lib_key", "locked", "tools"]  # fixtures, from tests/support/heroku_apps.py

FAKE_UV = '#!/bin/sh\necho "$@" >> {marker}\nexit 0\n'


def test_a_rotated_key_drops_what_build_code_left_among_the_installers_tools(
    build: Build, utils_key: GeneratedKey, keys_dir: Path, git_server: GitServer
) -> None:
    env = build.environ(STACK="heroku-24", DEPLOYKEY_INSTALL="venv")
    build.set_key(utils_key.text)
    first = build.compile(env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    kit = build.cache / "deploykey"
    assert (kit / "installers.key").is_file()
    # Build N's code: a uv of its own where deploykey keeps uv, and a file in pip's cache.
    marker = build.root / "fake-uv-ran"
    (kit / "uv" / "bin").mkdir(parents=True)
    (kit / "uv" / "bin" / "uv").write_text(FAKE_UV.format(marker=marker))
    (kit / "uv" / "bin" / "uv").chmod(0o755)
    (kit / "pip-cache").mkdir(exist_ok=True)
    (kit / "pip-cache" / "planted").write_text("build N\n")
    # The user rotates the key.
    new = make_key(keys_dir)
    git_server.grant(new.label, new.public, ["acme/private-utils"])
    git_server.revoke(utils_key.label)
    build.set_key(new.text)
    second = build.compile(env={**env, "DEPLOYKEY_INSTALLER": "auto"})
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert not marker.exists(), marker.read_text()
    assert "dropped the installers' tools and caches kept under another key (or none): " in out
    assert f"uv, pip-cache in {kit}" in out
    assert not (kit / "pip-cache" / "planted").exists()
    ran = build.run_app("import private_utils; print(private_utils.__version__)")
    assert ran.stdout.strip() == "1.0", ran.stdout + ran.stderr


def test_a_rotated_key_drops_an_environment_build_code_changed_in_the_cache(
    build: Build,
    lib_key: GeneratedKey,
    locked: dict[str, dict[str, str]],
    tools: Tools,
    keys_dir: Path,
    git_server: GitServer,
) -> None:
    """The environment a uv.lock install made is kept in the build cache, and restored by the next
    build instead of running uv (keptvenv.py). Build N's code (or a process it left) can change the
    copy; once the key is rotated, build N+1 installs afresh and nothing of the copy reaches it."""
    write_app(build, locked["uv"])
    build.set_key(lib_key.text)
    env = compile_env(build, tools, tool_links(tools, build.root / "scratch"))
    first = run_compile(build, env)
    assert first.returncode == 0, first.stdout + first.stderr
    kit = build.cache / "deploykey"
    [kept] = [path for path in (kit / "venvs").iterdir() if path.is_dir()]
    [module] = kept.glob("lib/python*/site-packages/noindex_lib/__init__.py")
    module.write_text('def hello():\n    return "planted by build N"\n')
    new = make_key(keys_dir)
    git_server.grant(new.label, new.public, [REPO])
    git_server.revoke(lib_key.label)
    build.set_key(new.text)
    shutil.rmtree(build.app / ".venv")  # a fresh checkout of the app
    second = run_compile(build, env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "restored " not in out
    assert "dropped the installers' tools and caches kept under another key (or none): " in out
    assert "venvs" in out.split("dropped the installers' tools", 1)[1].splitlines()[0]
    ran = build.run_app(IMPORT)
    assert ran.stdout.splitlines()[:1] == [GREETING], ran.stdout + ran.stderr
