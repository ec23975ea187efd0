"""What build N's code leaves among the installers' tools and caches is gone once the key rotates.

deploykey keeps uv, Poetry and Pipenv (installed from PyPI once) and their caches in the kit's part
of the build cache. Build code runs beside the installers and can change any of it: a `uv` of its
own that the next build would run to install the app. The mirrors are sealed before any build code
runs (test_next_build_mirrors.py); the installers' state cannot be, as the installers write it
while build code runs. So it is tied to the build's key: after a rotation (what a user does once a
hostile dependency has run), build N+1 drops all of it before installing.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Build, GeneratedKey, make_key
from gitserver import GitServer

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
