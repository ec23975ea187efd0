"""deploykey under the REAL `pack build` (tests/support/pack.py: pack built by .ci/pack, a builder made
locally with the real lifecycle, Debian's dockerd), as users run it: deploykey and its scan step
added with `--buildpack` around the builder's pip buildpack, as a non-root user in the builder;
the key outside the build container (keyless, the recommended recipe), as `--env DEPLOY_KEY`, and
as an ssh-auth binding mounted with `--volume`; a warm rebuild with pack's cache; deploykey
packaged as a `.cnb`. After each build, `docker save` of the image holds no key (the tests' own
search and `deploykey scan-image`). A hostile dependency (test_hostile.py), built by the pip
buildpack, searches the build container: keyless, it finds no key; given the key in the
container, it does."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    BIN,
    FLIT,
    KIT_PINS,
    REQUIREMENT,
    GeneratedKey,
    download_wheels,
    text_has_key,
)
from support import engine as engines
from support import pack as packs
from support.gitserver import GitServer
from support.hostile import HOSTILE, cnb_loot, hostile_repo  # noqa: F401 - a fixture, used by name

TESTS = Path(__file__).resolve().parents[1]
IMAGE = "deploykey-test-app:latest"
PLATFORM = "/platform"  # pack's platform dir in the build container
HOME = (
    "/home/cnb"  # the build user's home (pack.py's build image), where the hostile backend writes
)


def public_dir(prefix: str) -> Path:
    """A 0755 directory: a `--volume` source the build user (uid 1000) can enter."""
    made = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    made.chmod(0o755)
    return made


@pytest.fixture(scope="module")
def packed(docker_engine: engines.Engine) -> Iterator[tuple[engines.Engine, Path]]:
    """The session's dockerd (conftest), and the builder; the wheels the build needs
    (the kit's dependencies in the images, flit_core for pip through `--volume`)."""
    assert engines.available(), "Debian's docker.io is not installed: run .ci/setup"
    assert packs.available(), "pack or the lifecycle is not built: run .ci/setup"
    work = public_dir("deploykey-pack-")
    wheels = work / "wheels"
    wheels.mkdir()
    download_wheels(wheels, FLIT, *KIT_PINS, cp311=True)
    for wheel in wheels.iterdir():
        wheel.chmod(0o644)
    wheels.chmod(0o755)
    try:
        packs.make_builder(docker_engine, work, wheels, TESTS / "buildpacks")
        yield docker_engine, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def app(git_server: GitServer) -> Iterator[Path]:
    made = public_dir("deploykey-pack-app-")
    (made / "requirements.txt").write_text(REQUIREMENT + "\n")
    (made / "deploykey.yml").write_text(git_server.deploykey_yml())
    yield made
    shutil.rmtree(made, ignore_errors=True)


def pack_build(
    packed: tuple[engines.Engine, Path],
    app: Path,
    deploykey: Path,
    scan_buildpack: Path,
    *args: str,
    env: dict[str, str] | None = None,
    installed: str = "private-utils-1.0",
) -> str:
    """`pack build` with deploykey before the builder's pip buildpack and the scan step after."""
    engine, work = packed
    built = packs.pack(
        engine,
        *("build", IMAGE, "--builder", packs.BUILDER, "--path", str(app)),
        *("--pull-policy", "never", "--network", "host", "--docker-host", "inherit"),
        *("--trust-builder", "--trust-extra-buildpacks"),
        *("--buildpack", str(deploykey), "--buildpack", "test/pip@0.0.1"),
        *("--buildpack", str(scan_buildpack)),
        *("--volume", f"{work / 'wheels'}:/wheels:ro"),
        *("--env", "PIP_NO_INDEX=1", "--env", "PIP_FIND_LINKS=/wheels"),
        *args,
        env=env,
    )
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert f"Successfully installed {installed}" in out
    assert "deploykey scan: the exported image and the cache" in out
    return out


def assert_image_clean(packed: tuple[engines.Engine, Path], key: GeneratedKey, out: str) -> None:
    """`docker save` of the image: the package is there, the key nowhere (every layer, the
    config), by the tests' own search and by `deploykey scan-image`."""
    engine, work = packed
    archive = engine.save(IMAGE, work / "image.tar")
    files = dict(engines.everything_in(archive))
    assert any(p.endswith("site-packages/private_utils/__init__.py") for p in files)
    leaked = [p for p, data in files.items() if text_has_key(data.decode("latin-1"), key.text)]
    assert leaked == []
    scanned = subprocess.run(
        [str(BIN / "deploykey"), "scan-image", str(archive), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
    )
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert "no key material found" in scanned.stdout
    assert not text_has_key(out, key.text)
    archive.unlink()


def fetch_outside(app: Path, key: GeneratedKey) -> Path:
    """`deploykey fetch` in the app's checkout where the key is, into a directory beside it."""
    fetched = public_dir("deploykey-pack-fetched-")
    done = subprocess.run(
        [str(BIN / "deploykey"), "fetch", "--cache-dir", str(fetched)],
        cwd=app,
        env={"PATH": os.environ["PATH"], "HOME": str(fetched), "DEPLOY_KEY": key.text},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return fetched


@pytest.fixture
def hostile_app(
    app: Path,
    git_server: GitServer,
    utils_key: GeneratedKey,
    hostile_repo: str,  # noqa: F811 - the fixture imported above
) -> Path:
    """The app also needs the hostile package, which the deploy key opens."""
    git_server.grant(utils_key.label, utils_key.public, [hostile_repo])
    (app / "requirements.txt").write_text(f"{REQUIREMENT}\n{HOSTILE}\n")
    return app


@pytest.fixture
def home() -> Iterator[Path]:
    """Mounted writable as the build user's home: the hostile backend's loot lands here."""
    made = public_dir("deploykey-pack-home-")
    made.chmod(0o777)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_pack_build_keyless(
    packed: tuple[engines.Engine, Path],
    hostile_app: Path,
    home: Path,
    utils_key: GeneratedKey,
    git_server: GitServer,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """The recommended recipe (README, examples/cnb): the fetch outside, `--volume DIR:PATH:ro`
    and DEPLOYKEY_FETCHED; the build has no key and asks the git host nothing. The hostile
    dependency, built by the pip buildpack after deploykey's, searches everything it can reach in
    the build container (its environment, every process's, the platform dir, HOME) and finds
    no key."""
    fetched = fetch_outside(hostile_app, utils_key)
    try:
        served = len(git_server.log())
        out = pack_build(
            packed,
            hostile_app,
            deploykey_buildpack,
            scan_buildpack,
            *("--volume", f"{fetched}:/deploykey-fetched:ro"),
            *("--env", "DEPLOYKEY_FETCHED=/deploykey-fetched"),
            *("--volume", f"{home}:{HOME}:rw"),
            installed="hostile-1.0 private-utils-1.0",
        )
        assert (
            "no key in this build: the mirrors `deploykey fetch` made, in /deploykey-fetched" in out
        )
        assert len(git_server.log()) == served
        loot = cnb_loot(home, PLATFORM)
        assert "DEPLOYKEY_FETCHED" in loot  # it read the platform env: no key there
        assert not text_has_key(loot, utils_key.text)
        assert_image_clean(packed, utils_key, out)
    finally:
        shutil.rmtree(fetched)


def test_pack_build_with_the_key_in_the_container_a_later_buildpack_reads_it(
    packed: tuple[engines.Engine, Path],
    hostile_app: Path,
    home: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """What README and SECURITY.md say of `pack build --env DEPLOY_KEY`, shown, and the proof
    that the keyless test's search can find a key: the same hostile dependency, the key in the
    platform env, and its build code reads the key from its own environment and the platform dir.
    (The image is still clean: the key went to the loot, not into a layer.)"""
    out = pack_build(
        packed,
        hostile_app,
        deploykey_buildpack,
        scan_buildpack,
        *("--env", "DEPLOY_KEY", "--volume", f"{home}:{HOME}:rw"),
        env={"DEPLOY_KEY": utils_key.text},
        installed="hostile-1.0 private-utils-1.0",
    )
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    loot = cnb_loot(home, PLATFORM)
    assert text_has_key(loot, utils_key.text)
    assert f"== {PLATFORM}/env/DEPLOY_KEY" in loot
    assert "DEPLOY_KEY" in loot.split("== cmdline", 1)[0]  # the build backend's own environment
    assert_image_clean(packed, utils_key, out)


@pytest.mark.parametrize("mode", ["--env DEPLOY_KEY", "binding"])
def test_pack_build_with_the_key_in_the_container_and_a_warm_rebuild(
    packed: tuple[engines.Engine, Path],
    app: Path,
    utils_key: GeneratedKey,
    git_server: GitServer,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
    mode: str,
) -> None:
    """`--env DEPLOY_KEY` (its value from pack's environment, never an argument) or an ssh-auth
    binding mounted with `--volume` into the platform's bindings: the build fetches; the warm
    rebuild restores the mirrors from pack's cache and asks the git host nothing; neither image
    holds the key."""
    bindings = public_dir("deploykey-pack-binding-")
    try:
        if mode == "binding":
            (bindings / "type").write_text("ssh-auth")
            (bindings / "ssh-privatekey").write_text(utils_key.text)
            for entry in bindings.iterdir():
                entry.chmod(0o644)
            args: tuple[str, ...] = (
                "--volume",
                f"{bindings}:/platform/bindings/deploy-key:ro",
            )
            env = None
        else:
            args, env = ("--env", "DEPLOY_KEY"), {"DEPLOY_KEY": utils_key.text}
        out = pack_build(packed, app, deploykey_buildpack, scan_buildpack, *args, env=env)
        assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
        assert "(fetched)" in out
        assert_image_clean(packed, utils_key, out)
        served = len(git_server.log())
        out = pack_build(packed, app, deploykey_buildpack, scan_buildpack, *args, env=env)
        assert "(in the mirror, no network)" in out
        assert len(git_server.log()) == served
        assert_image_clean(packed, utils_key, out)
    finally:
        shutil.rmtree(bindings)


def test_deploykey_packaged_as_a_cnb_file(
    packed: tuple[engines.Engine, Path],
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """`pack buildpack package --format file` makes deploykey.cnb; `pack build --buildpack
    ./deploykey.cnb` uses it (keyless here)."""
    engine, work = packed
    (work / "package.toml").write_text(f'[buildpack]\nuri = "{deploykey_buildpack}"\n')
    cnb = work / "deploykey.cnb"
    packaged = packs.pack(
        engine,
        *("buildpack", "package", str(cnb), "--config", str(work / "package.toml")),
        *("--format", "file", "--pull-policy", "never"),
    )
    assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    assert tarfile.is_tarfile(cnb)  # an OCI layout in one tar, as `--format file` writes it
    fetched = fetch_outside(app, utils_key)
    try:
        out = pack_build(
            packed,
            app,
            cnb,
            scan_buildpack,
            *("--volume", f"{fetched}:/deploykey-fetched:ro"),
            *("--env", "DEPLOYKEY_FETCHED=/deploykey-fetched"),
        )
        assert "deploykey/deploykey 0.1.0" in out  # the detector's group
        assert "no key in this build: the mirrors `deploykey fetch` made" in out
        assert_image_clean(packed, utils_key, out)
    finally:
        shutil.rmtree(fetched)
