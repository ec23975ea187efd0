"""deploykey as a Cloud Native Buildpack, run by the spec-following lifecycle emulation (tests/cnb.py)
against the real sshd git server, with a real pip buildpack after it, as a non-root user."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

from cnb import Buildpack, Lifecycle
from conftest import (
    BIN,
    KIT,
    REQUIREMENT,
    GeneratedKey,
    files_with_key,
    text_has_key,
)
from deploykey import __version__, keys, scan
from gitserver import GitServer

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def deploykey_buildpack() -> Iterator[Path]:
    """The repository as a buildpack directory (what `pack` would copy): buildpack.toml, bin, lib."""
    root = Path(tempfile.mkdtemp(prefix="deploykey-bp-", dir="/tmp"))
    target = root / "deploykey"
    target.mkdir()
    for name in ("buildpack.toml", "LICENSE"):
        shutil.copy2(KIT / name, target / name)
    for name in ("bin", "lib"):
        shutil.copytree(
            KIT / name, target / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    root.chmod(0o755)
    yield target
    shutil.rmtree(root)


@pytest.fixture(scope="session")
def scan_buildpack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="deploykey-scanbp-", dir="/tmp"))
    root.chmod(0o755)
    target = root / "scan"
    result = subprocess.run(
        [str(BIN / "deploykey"), "scan-buildpack", str(target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    yield target
    shutil.rmtree(root)


@pytest.fixture(scope="session")
def public_wheelhouse(wheelhouse: Path) -> Iterator[Path]:
    """flit_core where the build user can read it."""
    root = Path(tempfile.mkdtemp(prefix="deploykey-wheels-", dir="/tmp"))
    root.chmod(0o755)
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy(wheel, root)
        (root / wheel.name).chmod(0o644)
    yield root
    shutil.rmtree(root)


@pytest.fixture
def app(tmp_path: Path, git_server: GitServer) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "requirements.txt").write_text(REQUIREMENT + "\n")
    (directory / "deploykey.yml").write_text(git_server.deploykey_yml())
    return directory


NewLifecycle = Callable[..., tuple[Lifecycle, list[Buildpack]]]


@pytest.fixture
def new_lifecycle() -> Iterator[NewLifecycle]:
    """Lifecycle.create, each lifecycle made removed after the test."""
    made: list[Lifecycle] = []

    def create(*args: Any, **kwargs: Any) -> tuple[Lifecycle, list[Buildpack]]:
        life, group = Lifecycle.create(*args, **kwargs)
        made.append(life)
        return life, group

    yield create
    for life in made:
        life.remove()


def platform_env(wheels: Path, **extra: str) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), **extra}


def output_of(results: list[subprocess.CompletedProcess[str]]) -> str:
    return "".join(r.stdout + r.stderr for r in results)


def assert_not_exported(image: Path, cache: Path, key: GeneratedKey) -> None:
    """Neither the kit's scanner nor the test's own search finds the key in the exported set."""
    assert files_with_key([image, cache], key.text) == []
    loaded = keys.load(key.path.read_bytes(), "DEPLOY_KEY", "test")
    assert scan.scan([image, cache], [loaded]).hits == ()


def test_buildpack_toml() -> None:
    data = tomllib.loads((KIT / "buildpack.toml").read_text())
    assert data["api"] == "0.10"
    info = data["buildpack"]
    assert info["id"] == "deploykey/deploykey" and info["version"] == __version__
    assert info["clear-env"] is True
    assert info["name"] and info["homepage"] and info["licenses"] == [{"type": "MIT"}]
    assert data["targets"] == [{"os": "linux"}]
    assert "stacks" not in data and "stacks" not in info


def test_detect_in_both_platform_modes(
    app: Path,
    tmp_path: Path,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    # Heroku: BUILD_DIR argument, exit 0 or 1.
    assert subprocess.run([str(BIN / "detect"), str(app)], capture_output=True).returncode == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "requirements.txt").write_text("flask\n")
    assert subprocess.run([str(BIN / "detect"), str(plain)], capture_output=True).returncode == 1
    # CNB: CNB_* variables, exit 0 or 100.
    life, [bp] = new_lifecycle(app, [deploykey_buildpack], platform_env(public_wheelhouse))
    [result] = life.detect([bp])
    assert (result.returncode, result.stdout) == (
        0,
        "deploykey: deploykey.yml, git+ssh requirements\n",
    )
    # Nothing to do: passes (a pre-group buildpack is not optional) and the build does nothing...
    life, [bp] = new_lifecycle(plain, [deploykey_buildpack], platform_env(public_wheelhouse))
    [result] = life.detect([bp])
    assert result.returncode == 0
    [built] = life.build([bp])
    assert built.returncode == 0, built.stderr
    assert "nothing to do: no deploy key, no token, no git+ssh requirement" in built.stdout
    assert list(life.layers_dir(bp).iterdir()) == []
    # ... unless the platform asks for strict detection: exit 100.
    strict = platform_env(public_wheelhouse, DEPLOYKEY_DETECT="strict")
    life, [bp] = new_lifecycle(plain, [deploykey_buildpack], strict)
    [result] = life.detect([bp])
    assert result.returncode == 100


def test_handoff_to_the_next_buildpack(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text)
    life, group = new_lifecycle(app, [deploykey_buildpack, TESTS / "buildpacks" / "pip"], env)
    assert [r.returncode for r in life.detect(group)] == [0, 0]
    results = life.build(group)
    assert [r.returncode for r in results] == [0, 0], output_of(results)
    assert "Successfully installed private-utils-1.0" in results[1].stdout
    # The layer: the mirrors, for the build and the next build's cache, never exported; env.build
    # points the private URLs at them, and hands over no ssh command and no key.
    [layer] = life.layers(group[0])
    assert layer.path.name == "deploykey"
    assert layer.types == {"build": True, "launch": False, "cache": True}
    env_build = {p.name: p.read_text() for p in (layer.path / "env.build").iterdir()}
    assert "GIT_CONFIG_COUNT.override" in env_build
    assert not any("GIT_SSH" in name for name in env_build)
    assert f"url.file://{layer.path}/mirrors/github.com/acme/private-utils.insteadOf" in (
        env_build.values()
    )
    assert sorted(p.name for p in layer.path.iterdir()) == ["env.build", "mirrors"]
    assert not (layer.path / "env.launch").exists() and not (layer.path / "env").exists()
    image, cache = life.export(group)
    assert list(
        image.glob("layers/test_pip/site/lib/python3*/site-packages/private_utils/__init__.py")
    )
    assert not (image / "layers" / "deploykey_deploykey").exists()
    assert_not_exported(image, cache, utils_key)
    assert not text_has_key(output_of(results), utils_key.text)


def test_key_from_a_service_binding_never_reaches_pip(
    app: Path,
    git_server: GitServer,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    """A Kubernetes ssh-auth secret as a binding: no platform env var, so no buildpack's
    environment holds the key; the env-dumping build backend shows pip's did not."""
    (app / "requirements.txt").write_text(
        "env-dumper @ git+ssh://git@github.com/acme/env-dumper.git@v1.0\n"
    )
    bindings = {"deploy-key": {"type": "kubernetes.io/ssh-auth", "ssh-privatekey": utils_key.text}}
    life, group = new_lifecycle(
        app,
        [deploykey_buildpack, TESTS / "buildpacks" / "pip"],
        platform_env(public_wheelhouse),
        bindings,
    )
    results = life.build(group)
    assert [r.returncode for r in results] == [0, 0], output_of(results)
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in results[0].stdout
    saw = (life.root / "home" / "backend-saw.json").read_text()
    assert (
        "GIT_CONFIG_COUNT" in saw
        and "GIT_SSH_COMMAND" not in saw
        and "DEPLOY_KEY" not in saw
        and not text_has_key(saw, utils_key.text)
    )
    image, cache = life.export(group)
    assert_not_exported(image, cache, utils_key)


def test_bindings_under_service_binding_root(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    root = Path(tempfile.mkdtemp(prefix="deploykey-bindings-", dir="/tmp"))
    try:
        root.chmod(0o755)
        (root / "utils").mkdir()
        (root / "utils" / "type").write_text("ssh-auth")
        (root / "utils" / "ssh-privatekey").write_text(utils_key.text)
        host = {"SERVICE_BINDING_ROOT": str(root)}
        life, group = new_lifecycle(
            app,
            [deploykey_buildpack, TESTS / "buildpacks" / "pip"],
            platform_env(public_wheelhouse),
            host_env=host,
        )
        results = life.build(group)
        assert [r.returncode for r in results] == [0, 0], output_of(results)
        assert f"DEPLOY_KEY_UTILS: ED25519 key {utils_key.fingerprint}" in results[0].stdout
    finally:
        shutil.rmtree(root)


def test_standalone_install_into_a_launch_layer(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text, DEPLOYKEY_INSTALL="venv")
    life, group = new_lifecycle(app, [deploykey_buildpack], env)
    [result] = life.build(group)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "into the launch layer venv with uv" in result.stdout
    layers = {layer.path.name: layer for layer in life.layers(group[0])}
    assert {name: layer.types for name, layer in layers.items()} == {
        "venv": {"build": False, "launch": True, "cache": False},
        "cache": {"build": False, "launch": False, "cache": True},  # the installer's cache
    }
    layer = layers["venv"]
    assert any((layers["cache"].path / "uv-cache").iterdir())  # exported to the cache, scanned
    assert (layer.path / "env.launch" / "VIRTUAL_ENV.override").read_text() == str(layer.path)
    ran = subprocess.run(
        [
            str(layer.path / "bin" / "python"),
            "-c",
            "import private_utils; print(private_utils.hello())",
        ],
        capture_output=True,
        text=True,
    )
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    image, cache = life.export(group)
    assert_not_exported(image, cache, utils_key)


def test_scan_step_passes_a_clean_build(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text)
    life, group = new_lifecycle(
        app, [deploykey_buildpack, TESTS / "buildpacks" / "pip", scan_buildpack], env
    )
    results = life.build(group)
    assert [r.returncode for r in results] == [0, 0, 0], output_of(results)
    scanned = results[2].stdout
    assert "layers/test_pip/site" in scanned and "no key material found" in scanned
    assert "layers/deploykey_deploykey/deploykey" in scanned  # the cached mirrors too
    assert key_files(life.layers_dir(group[0])) == []


def test_scan_step_fails_a_leaky_build(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text)
    life, group = new_lifecycle(
        app, [deploykey_buildpack, TESTS / "buildpacks" / "leaky", scan_buildpack], env
    )
    results = life.build(group)
    assert [r.returncode for r in results] == [0, 0, 1], output_of(results)
    err = results[2].stderr
    assert " !     Key material found in 1 file(s) of the build" in err
    assert "layers/test_leaky/oops/key-copy (private key text" in err
    assert not text_has_key(output_of(results), utils_key.text)


def test_build_image_without_ssh(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
    tmp_path: Path,
) -> None:
    """Paketo's build image has git but no ssh client: a clear error that names the fix."""
    tools = Path(tempfile.mkdtemp(prefix="deploykey-image-", dir="/tmp"))
    try:
        tools.chmod(0o755)
        for tool in (
            "python3",
            "git",
            "sh",
            "bash",
            "env",
            "ssh-keygen",
            "dirname",
            "readlink",
            "cat",
            "tr",
            "uname",
        ):
            found = shutil.which(tool, path="/usr/bin:/bin")
            assert found, tool
            (tools / tool).symlink_to(found)
        env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text)
        life, group = new_lifecycle(app, [deploykey_buildpack], env, path=str(tools))
        [result] = life.build(group)
        assert result.returncode == 1
        assert " !     `ssh` is not installed" in result.stderr
        assert "openssh-client" in result.stderr
        assert list(life.layers_dir(group[0]).iterdir()) == []
    finally:
        shutil.rmtree(tools)


def key_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("id_*"))


def test_example_project_toml_names_this_buildpack() -> None:
    data = tomllib.loads((KIT / "examples" / "cnb" / "project.toml").read_text())
    assert data["io"]["buildpacks"]["pre"]["group"] == [{"uri": "../deploykey"}]
    assert data["io"]["buildpacks"]["post"]["group"] == [{"uri": "../deploykey-scan"}]
