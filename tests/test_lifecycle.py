"""deploykey under the REAL Cloud Native Buildpacks lifecycle (tests/lifecycle.py, built by
.ci/lifecycle): analyzer, detector, restorer, builder and exporter, as a non-root user, on plain
directories, against the real sshd git server (a GitHub App: against tests/githubapi.py's API and
git front end), with a pip buildpack after deploykey and the scan step last; then the exported
OCI image (read by `deploykey scan-image` and by the tests' own search) and the cache the
exporter wrote are searched for the key.

The emulation in tests/cnb.py remains only for what these do not cover (test_cnb.py says which)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from conftest import (
    APP_ID,
    APP_OWNER,
    APP_REPOS,
    APP_REQUIREMENTS,
    BIN,
    KIT,
    REQUIREMENT,
    GeneratedKey,
    GitHub,
    files_with_key,
    text_has_key,
)
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


def test_a_github_app_instead_of_a_deploy_key(
    life: RealLifecycle,
    github: GitHub,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """README "A GitHub App instead of deploy keys", under the real lifecycle: GITHUB_APP_ID and
    GITHUB_APP_PRIVATE_KEY as `pack build --env` gives them (files in <platform>/env), no deploy
    key, two private repositories; deploykey mints one token narrowed to them, fetches, revokes
    it, and hands the mirrors to pip. Neither the App's key nor the token is in the image, the
    cache, the layers or the output.

    The stand-in's CA: the build image's system store plus that CA, in a bundle the build user
    can read, named by SSL_CERT_FILE in the platform env, as a user of a GitHub Enterprise Server
    with a private CA passes it (`pack build --env SSL_CERT_FILE=...`)."""
    (life.app / "requirements.txt").write_text(APP_REQUIREMENTS)
    (life.app / "deploykey.yml").write_text(github.yml())
    bundle = life.root / "ca-bundle.pem"  # chowned to the build user with the rest of the root
    bundle.write_bytes(github.bundle.read_bytes())
    life.set_env(
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_APP_PRIVATE_KEY=github.key_text,
        SSL_CERT_FILE=str(bundle),
    )
    life.order(
        life.add_buildpack(deploykey_buildpack),
        life.add_buildpack(TESTS / "buildpacks" / "pip"),
        life.add_buildpack(scan_buildpack),
    )
    before = len(github.api.tokens)
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    assert f"GITHUB_APP_PRIVATE_KEY: GitHub App {APP_ID} (SHA256:" in out
    assert "DEPLOY_KEY:" not in out
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in out
    files = image_files(life.image)
    for module in ("private_utils", "private_extra"):
        assert any(p.endswith(f"site-packages/{module}/__init__.py") for p in files), module
    # One token, narrowed to the two repositories (the installation has a third) and to
    # contents: read, revoked when deploykey's fetch ended, before pip ran.
    (token,) = github.minted_since(before)
    assert sorted(token.repositories or []) == sorted(APP_REPOS)
    assert token.permissions == {"contents": "read"}
    assert token.revoked
    assert f"minted an installation token for {APP_OWNER} (installation " in out
    assert f"revoked the app token {APP_OWNER} (" in out
    assert "deploykey scan: the exported image and the cache" in out
    assert_no_app_secret(life, github, token.value, out)


def test_a_github_app_on_an_enterprise_server_with_a_private_ca(
    life: RealLifecycle, github: GitHub, deploykey_buildpack: Path
) -> None:
    """README "GitHub Enterprise Server with a private CA" under the real lifecycle: `host` (and
    the stand-in's own `api_url`, `git_url`), requirements at `git+ssh://git@HOST/...`, no host
    key, and `pack build --env SSL_CERT_FILE=` naming the private CA alone (a file the build user
    can read); the pip buildpack after deploykey installs from the mirrors."""
    from test_ghes import REQUIREMENTS, enterprise_yml

    (life.app / "requirements.txt").write_text(REQUIREMENTS)
    (life.app / "deploykey.yml").write_text(enterprise_yml(github))
    ca = life.root / "ghes-ca.pem"  # chowned to the build user with the rest of the root
    ca.write_bytes(github.api.ca_file.read_bytes())
    life.set_env(
        GITHUB_APP_ID=str(APP_ID), GITHUB_APP_PRIVATE_KEY=github.key_text, SSL_CERT_FILE=str(ca)
    )
    life.order(
        life.add_buildpack(deploykey_buildpack), life.add_buildpack(TESTS / "buildpacks" / "pip")
    )
    before = len(github.api.tokens)
    results = life.build()
    out = output_of(results)
    assert all(r.returncode == 0 for r in results), out
    assert "localhost: no ssh (every repository there is fetched over HTTPS" in out
    assert "Successfully installed private-extra-1.0 private-utils-1.0" in out
    (token,) = github.minted_since(before)
    assert token.revoked and sorted(token.repositories or []) == sorted(APP_REPOS)


def test_a_github_app_trusts_the_ca_the_platform_env_names(
    life: RealLifecycle, github: GitHub, deploykey_buildpack: Path
) -> None:
    """Without SSL_CERT_FILE in the platform env, the stand-in's certificate is refused (nothing
    turns verification off); the lifecycle itself passes no SSL_CERT_FILE to a clear-env
    buildpack, so deploykey reads it from <platform>/env, as every other buildpack gets it."""
    (life.app / "requirements.txt").write_text(APP_REQUIREMENTS)
    (life.app / "deploykey.yml").write_text(github.yml())
    life.set_env(GITHUB_APP_ID=str(APP_ID), GITHUB_APP_PRIVATE_KEY=github.key_text)
    life.order(life.add_buildpack(deploykey_buildpack))
    before = len(github.api.tokens)
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results][:3] == [0, 0, 0] and len(results) == 4, out
    assert "is not trusted: unable to get local issuer certificate" in out
    assert "(tls::untrusted: README.md#tls-untrusted)" in out
    assert github.minted_since(before) == []
    assert not text_has_key(out, github.key_text)


def assert_no_app_secret(life: RealLifecycle, github: GitHub, token: str, out: str) -> None:
    """Neither the App's key nor the token in the image, the cache, the layers, the app or the
    output: the tests' own search, and `deploykey scan-image` (the image) and `deploykey scan`
    (the cache and the layers) told of both (the token as a GITHUB_TOKEN, so that the kit's
    scanner looks for it too)."""
    files = image_files(life.image)
    assert [
        p for p, data in files.items() if text_has_key(data.decode("latin-1"), github.key_text)
    ] == []
    assert [p for p, data in files.items() if token.encode() in data] == []
    kept = [life.cache, life.layers, life.layout, life.app]
    assert files_with_key(kept, github.key_text) == []
    assert [
        str(p)
        for root in kept
        for p in root.rglob("*")
        if p.is_file() and token.encode() in p.read_bytes()
    ] == []
    assert not text_has_key(out, github.key_text) and token not in out
    secrets = life.root / "scan-secrets"
    secrets.mkdir()
    (secrets / "GITHUB_APP_ID").write_text(str(APP_ID))
    (secrets / "GITHUB_APP_PRIVATE_KEY").write_text(github.key_text)
    (secrets / "GITHUB_TOKEN").write_text(token)
    archive = layout_archive(life.image, life.root / "image.tar")
    for command in (["scan-image", str(archive)], ["scan", str(life.cache), str(life.layers)]):
        scanned = subprocess.run(
            [str(BIN / "deploykey"), *command, "--env-dir", str(secrets)],
            capture_output=True,
            text=True,
            cwd=life.root,
        )
        assert scanned.returncode == 0, scanned.stdout + scanned.stderr
        assert "no key material found" in scanned.stdout
