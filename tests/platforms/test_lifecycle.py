"""deploykey under the REAL Cloud Native Buildpacks lifecycle (tests/support/lifecycle.py, built by
.ci/lifecycle): analyzer, detector, restorer, builder and exporter, as a non-root user, on plain
directories, against the real sshd git server (a GitHub App: against tests/support/githubapi.py's API and
git front end), with a pip buildpack after deploykey and the scan step last; then the exported
OCI image (read by `deploykey scan-image` and by the tests' own search) and the cache the
exporter wrote are searched for the key.

The emulation in tests/support/cnb.py remains only for what these do not cover (test_cnb.py says which)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
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
from support.gitserver import GitServer
from support.hostile import HOSTILE, cnb_loot, hostile_repo  # noqa: F401 - a fixture, used by name
from support.lifecycle import RealLifecycle, image_files, layout_archive, output_of

TESTS = Path(__file__).resolve().parents[1]


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
    from support.ghes import REQUIREMENTS, enterprise_yml

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


# ------------------------------------------------------------- which CNB mode exposes the key


def fetch_outside(life: RealLifecycle, key: GeneratedKey) -> Path:
    """`deploykey fetch --cache-dir DIR` where the key is (the developer's machine, a CI job): in
    the app's checkout, with DEPLOY_KEY in its environment, outside every directory of the build.
    DIR stays root's, 0755: the build user can read it and write nothing there, as with the
    read-only mount `pack build --volume DIR:PATH:ro` makes."""
    outside = Path(tempfile.mkdtemp(prefix="deploykey-outside-", dir="/tmp"))
    outside.chmod(0o755)
    checkout, fetched = outside / "checkout", outside / "fetched"
    shutil.copytree(life.app, checkout)
    fetched.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(outside), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(BIN / "deploykey"), "fetch", "--cache-dir", str(fetched)],
        cwd=checkout,
        env={**env, "DEPLOY_KEY": key.text},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(checkout)
    return fetched


def test_keyless_mode_no_buildpack_can_read_the_key(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    git_server: GitServer,
    hostile_repo: str,  # noqa: F811 - the fixture imported above
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """The recommended CNB recipe: `deploykey fetch` outside the build container, where the key
    is; the build gets the directory it filled (read-only) and DEPLOYKEY_FETCHED, and no key in
    the platform env, a binding or anywhere. A hostile dependency, built by the pip buildpack
    after deploykey's, searches everything it can reach and finds no key; the build asks the git
    host nothing; the image, the cache and the layers hold no key. A rebuild does the same."""
    git_server.grant(utils_key.label, utils_key.public, [hostile_repo])
    (life.app / "requirements.txt").write_text(f"{REQUIREMENT}\n{HOSTILE}\n")
    fetched = fetch_outside(life, utils_key)
    try:
        life.set_env(DEPLOYKEY_FETCHED=str(fetched))
        life.order(
            life.add_buildpack(deploykey_buildpack),
            life.add_buildpack(TESTS / "buildpacks" / "pip"),
            life.add_buildpack(scan_buildpack),
        )
        for rebuild in (False, True):
            if rebuild:
                life.rebuild()
            served = len(git_server.log())
            results = life.build()
            out = output_of(results)
            assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
            assert len(git_server.log()) == served  # no key here: nothing asked of the git host
            assert f"no key in this build: the mirrors `deploykey fetch` made, in {fetched}" in out
            assert "Successfully installed hostile-1.0 private-utils-1.0" in out
            assert "DEPLOY_KEY:" not in out
            loot = cnb_loot(life.root / "home", life.platform)
            assert "DEPLOYKEY_FETCHED" in loot  # it read the platform env: no key there
            assert not text_has_key(loot, utils_key.text)
            files = image_files(life.image)
            assert any(p.endswith("site-packages/private_utils/__init__.py") for p in files)
            assert not any("deploykey_deploykey" in p for p in files)  # build only
            assert_no_key(life, utils_key, out)
    finally:
        shutil.rmtree(fetched.parent)


@pytest.mark.parametrize("mode", ["platform env", "binding"])
def test_in_container_modes_let_a_later_buildpack_read_the_key(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    git_server: GitServer,
    hostile_repo: str,  # noqa: F811 - the fixture imported above
    deploykey_buildpack: Path,
    mode: str,
) -> None:
    """What README and SECURITY.md say of the in-container modes, shown: the key given to the
    build container (`pack build --env DEPLOY_KEY`, or an ssh-auth binding) stays in the platform
    dir, which the lifecycle never removes, and a platform env var reaches the environment of
    every buildpack without clear-env; the hostile dependency's build code, in the pip buildpack
    after deploykey's, reads it there. deploykey cannot remove it: the platform owns those files."""
    git_server.grant(utils_key.label, utils_key.public, [hostile_repo])
    (life.app / "requirements.txt").write_text(f"{HOSTILE}\n")
    if mode == "platform env":
        life.set_env(DEPLOY_KEY=utils_key.text)
    else:
        life.set_binding("deploy-key", {"type": "ssh-auth", "ssh-privatekey": utils_key.text})
    life.order(
        life.add_buildpack(deploykey_buildpack), life.add_buildpack(TESTS / "buildpacks" / "pip")
    )
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
    loot = cnb_loot(life.root / "home", life.platform)
    assert text_has_key(loot, utils_key.text)
    where = "env/DEPLOY_KEY" if mode == "platform env" else "bindings/deploy-key/ssh-privatekey"
    assert f"== {life.platform}/{where}" in loot
    own = loot.split("== cmdline", 1)[0]  # the build backend's own environment
    assert ("DEPLOY_KEY" in own) == (mode == "platform env")


def test_keyless_mode_refuses_a_key_a_missing_mount_and_a_stale_fetch(
    life: RealLifecycle, utils_key: GeneratedKey, deploykey_buildpack: Path
) -> None:
    """DEPLOYKEY_FETCHED with a key given to the build container too, naming a directory with
    no fetch in it (the `--volume` forgotten), or a fetch made for other requirements: each
    fails the build, named, before any later buildpack runs."""
    fetched = fetch_outside(life, utils_key)
    empty = fetched.parent / "empty"
    empty.mkdir()
    life.order(life.add_buildpack(deploykey_buildpack))

    def fails_with(slug: str) -> str:
        results = life.build()
        out = output_of(results)
        assert [r.returncode for r in results][:3] == [0, 0, 0] and len(results) == 4, out
        assert f"({slug}: README.md#{slug.replace('::', '-')})" in out, out
        assert not text_has_key(out, utils_key.text)
        life.rebuild()
        return out

    try:
        life.set_env(DEPLOYKEY_FETCHED=str(empty))
        out = fails_with("cnb::fetched-missing")
        assert f"DEPLOYKEY_FETCHED names {empty}, which holds no record of a fetch" in out
        life.set_env(DEPLOYKEY_FETCHED=str(fetched))
        life.set_binding("deploy-key", {"type": "ssh-auth", "ssh-privatekey": utils_key.text})
        out = fails_with("cnb::fetched-key")
        assert "DEPLOYKEY_FETCHED is set, and so is DEPLOY_KEY" in out
        shutil.rmtree(life.platform / "bindings")
        (life.app / "requirements.txt").write_text(
            f"{REQUIREMENT}\nbilling @ git+ssh://git@github.com/acme/billing.git@v2.0\n"
        )
        out = fails_with("cnb::fetched-stale")
        assert "it was written for other requirements than the app has now" in out
    finally:
        shutil.rmtree(fetched.parent)


def test_the_scan_step_catches_hex_of_the_key_as_the_platform_gave_it(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
) -> None:
    """Issue 25's leak: DEPLOY_KEY given as base64 (as the README offers), and a later buildpack
    ships hex of the value it read, never decoding it, in a launch layer: the scan step fails the
    build before the exporter runs, naming the file."""
    life.set_env(DEPLOY_KEY=base64.b64encode(utils_key.text.encode()).decode())
    life.order(
        life.add_buildpack(deploykey_buildpack),
        life.add_buildpack(TESTS / "buildpacks" / "leaky-hex"),
        life.add_buildpack(scan_buildpack),
    )
    results = life.build()
    out = output_of(results)
    assert [r.returncode for r in results][:3] == [0, 0, 0] and len(results) == 4, out
    assert "test_leaky-hex/shipped/value.hex (hex of the key as given" in out, out
    assert not text_has_key(out, utils_key.text)


def test_keyless_mode_installs_into_a_launch_layer(
    life: RealLifecycle,
    utils_key: GeneratedKey,
    git_server: GitServer,
    deploykey_buildpack: Path,
) -> None:
    """DEPLOYKEY_FETCHED with DEPLOYKEY_INSTALL=venv: deploykey installs from the mounted mirrors
    into its launch layer itself, with no key and no request to the git host."""
    fetched = fetch_outside(life, utils_key)
    try:
        life.set_env(DEPLOYKEY_FETCHED=str(fetched), DEPLOYKEY_INSTALL="venv")
        life.order(life.add_buildpack(deploykey_buildpack))
        served = len(git_server.log())
        results = life.build()
        out = output_of(results)
        assert [r.returncode for r in results] == [0, 0, 0, 0, 0], out
        assert len(git_server.log()) == served
        assert "no key in this build" in out and "DEPLOY_KEY:" not in out
        files = image_files(life.image)
        assert any(
            "deploykey_deploykey/venv/" in p and p.endswith("private_utils/__init__.py")
            for p in files
        )
        assert_no_key(life, utils_key, out)
    finally:
        shutil.rmtree(fetched.parent)
