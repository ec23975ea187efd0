"""deploykey as a Cloud Native Buildpack: what the REAL lifecycle tests (test_lifecycle.py) do not
cover, run by the spec-following emulation (tests/support/cnb.py): detect's strict mode and its
nothing-to-do pass, bindings under SERVICE_BINDING_ROOT (a host variable the emulation passes
through), a build image without ssh (a PATH of chosen tools), a leaky buildpack caught by the scan
step; and the command-line contract of bin/detect and bin/build as the lifecycle calls them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

from conftest import (
    BIN,
    KIT,
    REQUIREMENT,
    GeneratedKey,
    files_with_key,
    make_key,
    text_has_key,
)
from deploykey import __version__
from deploykey.leak import scan
from deploykey.secrets import keys
from support.cnb import Buildpack, Lifecycle
from support.gitserver import GitServer

TESTS = Path(__file__).resolve().parents[1]


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
    # The rotation advice is CNB's: a new key goes into a binding, not a Heroku config var.
    assert "replace DEPLOY_KEY with it (give it as a service binding of type ssh-auth" in err
    assert "heroku config:set" not in err
    assert not text_has_key(output_of(results), utils_key.text)


def test_key_errors_give_cnb_advice(
    app: Path,
    keys_dir: Path,
    deploykey_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    """No key, then a binding holding a cut key: the fix is a binding (or platform env), the way
    examples/cnb/README.md gives one, never `heroku config:set`."""
    life, [bp] = new_lifecycle(app, [deploykey_buildpack], platform_env(public_wheelhouse))
    [result] = life.build([bp])
    assert result.returncode == 1
    assert f" !     No deploy key: {life.root / 'platform' / 'env'} has no DEPLOY_KEY" in (
        result.stderr
    )
    fix = "then give it as a service binding of type ssh-auth: `mkdir -p bindings/deploy-key; "
    assert fix in result.stderr
    assert "heroku config:set" not in result.stderr
    key = make_key(keys_dir)
    cut = "".join(key.text.splitlines(keepends=True)[:-1])
    binding = {"billing": {"type": "ssh-auth", "ssh-privatekey": cut}}
    life, [bp] = new_lifecycle(
        app, [deploykey_buildpack], platform_env(public_wheelhouse), bindings=binding
    )
    [result] = life.build([bp])
    assert result.returncode == 1
    assert " !     the binding billing (" in result.stderr
    assert "holds an incomplete private key" in result.stderr
    assert (
        " !     Fix: Set DEPLOY_KEY_BILLING again from the whole key file: give it as a service "
        "binding of type ssh-auth: `mkdir -p bindings/billing; printf ssh-auth > "
        "bindings/billing/type; cp deploy_key bindings/billing/ssh-privatekey`, then `pack build "
        '... --volume "$PWD/bindings/billing:/platform/bindings/billing"` (or '
        '`DEPLOY_KEY_BILLING="$(cat deploy_key)" pack build ... --env DEPLOY_KEY_BILLING`; Heroku '
        "Fir, a CNB platform, gives the build its config vars as platform env: set a config var "
        "DEPLOY_KEY_BILLING there)." in result.stderr
    )
    assert "heroku config:set" not in result.stderr
    assert not text_has_key(result.stdout + result.stderr, key.text)


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


def test_detect_and_build_take_the_lifecycles_arguments(app: Path, tmp_path: Path) -> None:
    """buildpacks/lifecycle v0.21 runs `bin/detect PLATFORM PLAN` and `bin/build LAYERS PLATFORM
    PLAN` with the CNB_* variables as well; arguments that disagree with them are refused."""
    platform, plan, layers = tmp_path / "platform", tmp_path / "plan.toml", tmp_path / "layers"
    platform.mkdir()
    layers.mkdir()
    plan.write_text("")
    cnb_env = {
        "PATH": "/usr/bin:/bin",
        "CNB_PLATFORM_DIR": str(platform),
        "CNB_BUILD_PLAN_PATH": str(plan),
    }
    detect = [str(BIN / "detect"), str(platform), str(plan)]
    ok = subprocess.run(detect, cwd=app, env=cnb_env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    other = subprocess.run(
        [str(BIN / "detect"), str(tmp_path), str(plan)],
        cwd=app,
        env=cnb_env,
        capture_output=True,
        text=True,
    )
    assert other.returncode == 2
    assert (
        f" !     bin/detect: the argument for CNB_PLATFORM_DIR is {tmp_path}, but "
        f"CNB_PLATFORM_DIR is {platform}" in other.stderr
    )
    build_env = {**cnb_env, "CNB_LAYERS_DIR": str(layers), "CNB_BP_PLAN_PATH": str(plan)}
    del build_env["CNB_BUILD_PLAN_PATH"]
    wrong = subprocess.run(
        [str(BIN / "build"), str(layers), str(platform), str(tmp_path / "other.toml")],
        cwd=app,
        env=build_env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "the argument for CNB_BP_PLAN_PATH is" in wrong.stderr
    # Heroku's bin/detect BUILD_DIR, with no CNB_* variable: one argument, exit 0 or 1.
    heroku = subprocess.run(
        [str(BIN / "detect"), str(app)], env={"PATH": "/usr/bin:/bin"}, capture_output=True
    )
    assert heroku.returncode == 0
    none = subprocess.run(
        [str(BIN / "detect")], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert none.returncode == 2 and "bin/detect takes BUILD_DIR" in none.stderr


def test_the_checks_read_only_what_changed_and_find_a_copy_planted_since(
    app: Path,
    utils_key: GeneratedKey,
    deploykey_buildpack: Path,
    scan_buildpack: Path,
    public_wheelhouse: Path,
    new_lifecycle: NewLifecycle,
) -> None:
    """The build step's check (in its key layer) and the scan step's (in a cache layer of its
    own) keep their records: a rebuild with the layers kept reads only what changed, and a key
    written since into a recorded file of the app in place (same size, mtime set back) is read
    and found by both."""
    from support.races import RACY_NS, plant_in_place, settle

    env = platform_env(public_wheelhouse, DEPLOY_KEY=utils_key.text)
    life, group = new_lifecycle(app, [deploykey_buildpack, scan_buildpack], env)
    kept = life.workspace / "static.txt"
    kept.write_bytes(b"x" * (len(utils_key.text) + 10))
    for _ in range(2):
        settle(life.root, RACY_NS)
        results = life.build(group)
        assert [r.returncode for r in results] == [0, 0], output_of(results)
    for result in results:
        assert "not read again" in result.stdout, result.stdout
    plant_in_place(kept, utils_key.text)
    [result] = life.build(group)
    assert result.returncode == 1, output_of([result])
    assert f"{kept} (private key text, {utils_key.fingerprint})" in result.stderr
    [scanned] = life.build(group[1:])
    assert scanned.returncode == 1, output_of([scanned])
    assert f"{kept} (private key text, {utils_key.fingerprint})" in scanned.stderr
