"""deploykey under the REAL Cloud Native Buildpacks lifecycle (tests/lifecycle.py, built by
.ci/lifecycle): analyzer, detector, restorer, builder and exporter, as a non-root user, on plain
directories, against the real sshd git server, with a pip buildpack after deploykey and the scan
step last; then the exported OCI image (read by `deploykey scan-image` and by the tests' own
search) and the cache the exporter wrote are searched for the key.

The emulation in tests/cnb.py remains only for what these do not cover (test_cnb.py says which)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from conftest import BIN, KIT, REQUIREMENT, GeneratedKey, files_with_key, text_has_key
from gitserver import GitServer
from lifecycle import RealLifecycle, image_files, layout_archive, output_of

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def life(git_server: GitServer, wheelhouse: Path) -> Iterator[RealLifecycle]:
    made = RealLifecycle.create()
    (made.app / "requirements.txt").write_text(REQUIREMENT + "\n")
    (made.app / "deploykey.yml").write_text(git_server.deploykey_yml())
    wheels = made.root / "wheels"
    wheels.mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        (wheels / wheel.name).write_bytes(wheel.read_bytes())
    made.set_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    yield made
    made.remove()


def assert_no_key(life: RealLifecycle, key: GeneratedKey, out: str) -> None:
    """The image (every layer and the config), the cache and the layers dir hold no key: read by
    the kit's scan-image and, independently, by the tests' own search."""
    files = image_files(life.image)
    leaked = [p for p, data in files.items() if text_has_key(data.decode("latin-1"), key.text)]
    assert leaked == []
    assert files_with_key([life.cache, life.layers, life.layout, life.app], key.text) == []
    archive = layout_archive(life.image, life.root / "image.tar")
    scanned = subprocess.run(
        [str(BIN / "deploykey"), "scan-image", str(archive), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
    )
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert "no key material found" in scanned.stdout
    assert not text_has_key(out, key.text)


def test_handoff_to_pip_with_the_scan_step_and_a_cached_rebuild(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    git_server: GitServer,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """deploykey in a pre-group, pip after it, the scan step in a post-group: the pip buildpack
    gets the mirrors and git settings from deploykey's layer, never a key or an ssh command; the
    image holds the package and no key; the layer of mirrors is cached, never exported, and a
    rebuild that restores it fetches nothing."""
    life.set_env(DEPLOY_KEY=utils_key.text)
    life.order(
        life.add_buildpack(deploykey_buildpack),
        life.add_buildpack(TESTS / "buildpacks" / "pip"),
        life.add_buildpack(scan_buildpack),
    )
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    assert "Successfully installed private-utils-1.0" in out
    assert "v1.0 is " in out and "(fetched)" in out
    files = image_files(life.image)
    assert any(p.endswith("site-packages/private_utils/__init__.py") for p in files)
    assert not any("deploykey_deploykey" in p for p in files)  # build and cache only
    assert "Adding cache layer 'deploykey/deploykey:deploykey'" in out
    assert_no_key(life, utils_key, out)

    # A rebuild, as a platform runs it: a fresh app dir and layers dir, the same cache.
    served = len(git_server.log())
    life.rebuild()
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    assert 'Restoring data for "deploykey/deploykey:deploykey" from cache' in out
    assert "(in the mirror, no network)" in out
    assert len(git_server.log()) == served  # not one request to the git server
    assert_no_key(life, utils_key, out)


def test_binding_and_clear_env_keep_the_key_out_of_every_environment(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
) -> None:
    """The key as a Kubernetes ssh-auth binding: deploykey (clear-env) reads it as a file; pip's
    build backend, in the next buildpack, records an environment with the mirrors' settings and
    without the key, DEPLOY_KEY, or an ssh command."""
    (life.app / "requirements.txt").write_text(
        "env-dumper @ git+ssh://git@github.com/acme/env-dumper.git@v1.0\n"
    )
    life.set_binding(
        "deploy-key", {"type": "kubernetes.io/ssh-auth", "ssh-privatekey": utils_key.text}
    )
    life.order(
        life.add_buildpack(deploykey_buildpack), life.add_buildpack(TESTS / "buildpacks" / "pip")
    )
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    saw = (life.root / "home" / "backend-saw.json").read_text()
    assert "GIT_CONFIG_COUNT" in saw and "GIT_SSH_COMMAND" not in saw
    assert "DEPLOY_KEY" not in saw and not text_has_key(saw, utils_key.text)
    assert_no_key(life, utils_key, out)


def test_install_into_a_launch_layer(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
) -> None:
    life.set_env(DEPLOY_KEY=utils_key.text, DEPLOYKEY_INSTALL="venv")
    life.order(life.add_buildpack(deploykey_buildpack))
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    files = image_files(life.image)
    assert any(
        "deploykey_deploykey/venv/" in p and p.endswith("private_utils/__init__.py") for p in files
    )
    assert_no_key(life, utils_key, out)


def test_a_failing_build_leaves_no_key_in_what_the_lifecycle_keeps(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
) -> None:
    """pip fails after deploykey's step (a public package no index serves): the build fails, and
    the layers, the cache and the app hold no key."""
    (life.app / "requirements.txt").write_text(REQUIREMENT + "\nno-such-package-anywhere==1.0\n")
    life.set_env(DEPLOY_KEY=utils_key.text)
    life.order(
        life.add_buildpack(deploykey_buildpack), life.add_buildpack(TESTS / "buildpacks" / "pip")
    )
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results][-1] != 0 and len(results) == 4, out  # the builder
    assert "no-such-package-anywhere" in out
    assert files_with_key([life.cache, life.layers, life.app], utils_key.text) == []
    assert not text_has_key(out, utils_key.text)


def test_the_example_project_toml(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """examples/cnb/project.toml as pack reads it: its pre-group before the builder's Python
    buildpack (here the test pip buildpack), its post-group after."""
    project = tomllib.loads((KIT / "examples" / "cnb" / "project.toml").read_text())
    where = {"../deploykey": deploykey_buildpack, "../deploykey-scan": scan_buildpack}
    pre = [where[entry["uri"]] for entry in project["io"]["buildpacks"]["pre"]["group"]]
    post = [where[entry["uri"]] for entry in project["io"]["buildpacks"]["post"]["group"]]
    life.set_env(DEPLOY_KEY=utils_key.text)
    life.order(*(life.add_buildpack(bp) for bp in [*pre, TESTS / "buildpacks" / "pip", *post]))
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    assert "deploykey scan: the exported image and the cache" in out
    assert_no_key(life, utils_key, out)
