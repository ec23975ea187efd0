"""Cloud Native Buildpacks (Buildpack API 0.10 - 0.12): detect, build, and the scan step.

buildpack.toml sets `clear-env = true`: config vars never enter this buildpack's environment; keys
are read from `$CNB_PLATFORM_DIR/env/DEPLOY_KEY*` files and from service bindings of type
ssh-auth. bin/build fetches every private repository into local mirrors with the keys (in a temp
dir, removed before bin/build ends), then either
- hands the mirrors to the buildpacks after it (default): one layer `types = {build = true,
  launch = false, cache = true}` holding the mirrors, with `env.build/GIT_CONFIG_*.override` git
  settings that send the private URLs there, which the lifecycle applies to every later buildpack's
  build (heroku/python, paketo pip-install); the later buildpacks never have a key; or
- installs the requirements itself (DEPLOYKEY_INSTALL=venv) into a launch layer.
Keyless (DEPLOYKEY_FETCHED, the recommended recipe): `deploykey fetch` ran outside the build
container, where the key is, and `pack build --volume` mounts what it made; bin/build hands those
mirrors on the same way, and no key ever enters the container, the platform dir or a binding.
The scan step (a second buildpack, `deploykey scan-buildpack DIR`, last in a post-group) scans
/workspace and every launch and cache layer for the keys.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from deploykey import build, manifests
from deploykey.core import output, sources
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors
from deploykey.installers import install
from deploykey.installers.install import Target
from deploykey.leak import scrub
from deploykey.secrets import config, credentials, githubapp

MAIN_ID = "deploykey/deploykey"
KEY_LAYER = "deploykey"
VENV_LAYER = "venv"
CACHE_LAYER = "cache"
RECORD_LAYER = "scan-record"  # the scan step's


def _required(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise UserError(
            "usage",
            message=f"{name} is not set: this command runs under a Cloud Native Buildpacks lifecycle",
            command="deploykey",
        )
    return Path(value)


# What the lifecycle passes as arguments, and the variable that says the same (buildpacks/lifecycle
# v0.21.17, buildpack/detect.go `runDetect` and buildpack/build.go: `bin/detect PLATFORM_DIR
# PLAN_PATH`, `bin/build LAYERS_DIR PLATFORM_DIR PLAN_PATH`, with the CNB_* variables for Buildpack
# API 0.8 and newer).
DETECT_ARGUMENTS = ("CNB_PLATFORM_DIR", "CNB_BUILD_PLAN_PATH")
BUILD_ARGUMENTS = ("CNB_LAYERS_DIR", "CNB_PLATFORM_DIR", "CNB_BP_PLAN_PATH")


def under_lifecycle() -> bool:
    """A CNB lifecycle runs this buildpack: it always sets CNB_PLATFORM_DIR (Buildpack API 0.8+)."""
    return bool(os.environ.get("CNB_PLATFORM_DIR"))


def _arguments(given: Sequence[str], names: Sequence[str], command: str) -> None:
    """The lifecycle's positional arguments must say what its variables say; none is fine too (a
    platform that sets only the variables)."""
    if not given:
        return
    if len(given) != len(names):
        raise UserError(
            "usage",
            message=f"{command} takes {' '.join(n.removeprefix('CNB_') for n in names)} (or none): "
            f"got {len(given)} arguments",
            command=f"deploykey {command.removeprefix('bin/')}",
        )
    for name, argument in zip(names, given, strict=True):
        variable = os.environ.get(name)
        if variable is None or Path(variable).resolve() != Path(argument).resolve():
            raise UserError(
                "cnb::arguments",
                command=command,
                name=name,
                variable=variable if variable is not None else "(not set)",
                argument=argument,
            )


def _env(platform: Path) -> sources.EnvSource:
    env_dir = platform / "env"
    found = sources.read(env_dir) if env_dir.is_dir() else sources.EnvSource(env_dir, False, {})
    return found.with_bindings(sources.bindings_root(platform, os.environ))


# The CA store's settings, paths that hold no secret. clear-env keeps every platform env var out of
# this process, and the lifecycle passes only HOME and the proxies through from its own
# (buildpacks/lifecycle v0.21.0 env/build.go, BuildEnvIncludelist): `pack build --env
# SSL_CERT_FILE=...` (a GitHub Enterprise Server's private CA, a TLS-inspecting proxy's) would reach
# every other buildpack and not the GitHub App's API requests here.
TLS_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _trust(env: sources.EnvSource) -> None:
    """The platform env's CA settings for this process (Python's ssl reads them when it makes a
    context) and its children, as the lifecycle gives them to a buildpack without clear-env."""
    for name in TLS_SETTINGS:
        value = env.text(name)
        if value:
            os.environ[name] = value


def _types(**flags: bool) -> str:
    lines = "".join(f"{name} = {str(value).lower()}\n" for name, value in flags.items())
    return "[types]\n" + lines


def detect(arguments: Sequence[str] = ()) -> int:
    """Pass when there is anything to do. Otherwise pass too (exit 0) unless DEPLOYKEY_DETECT=strict:
    with `pack --pre-buildpack` or a project.toml pre/post group the buildpack is not optional,
    and exit 100 there would fail the whole build; the build then does nothing."""
    _arguments(arguments, DETECT_ARGUMENTS, "bin/detect")
    app = Path.cwd()
    env = _env(_required("CNB_PLATFORM_DIR"))
    found = manifests.read_all(app)
    reasons = [config.CONFIG_FILE] if (app / config.CONFIG_FILE).is_file() else []
    reasons += ["git+ssh requirements"] if found.uses_ssh else []
    reasons += env.key_names() + githubapp.given(env)
    reasons += ["DEPLOYKEY_FETCHED"] if env.text("DEPLOYKEY_FETCHED") else []
    if reasons:
        output.plain(f"deploykey: {', '.join(reasons)}")
        return 0
    if (env.text("DEPLOYKEY_DETECT") or os.environ.get("DEPLOYKEY_DETECT")) == "strict":
        output.plain(
            "deploykey: no deploy key, no deploykey.yml, no git+ssh requirement (DEPLOYKEY_DETECT=strict)"
        )
        return 100
    output.plain("deploykey: nothing to do for this app; passing, the build will do nothing")
    return 0


def build_step(arguments: Sequence[str] = ()) -> int:
    _arguments(arguments, BUILD_ARGUMENTS, "bin/build")
    app = Path.cwd()
    platform = _required("CNB_PLATFORM_DIR")
    layers = _required("CNB_LAYERS_DIR")
    env = _env(platform)
    _trust(env)
    settings = config.load(app, env)
    output.step("deploykey: private git dependencies (Cloud Native Buildpack)")
    fetched = settings.get("DEPLOYKEY_FETCHED")
    if fetched:
        _refuse_python(settings.install)
        return _from_fetched(app, Path(fetched), layers, env, settings)
    tokens = credentials.read(env, settings)
    if not env.key_names() and not tokens and not githubapp.given(env):
        found = manifests.read_all(app)
        if found.uses_ssh:
            raise UserError("key::missing", source=platform / "env", name=build.KEY_NAME)
        output.detail("nothing to do: no deploy key, no token, no git+ssh requirement")
        return 0
    mode = settings.install
    _refuse_python(mode)
    if mode == "venv":
        target = Target("venv", "DEPLOYKEY_INSTALL=venv: a launch layer", Path(VENV_LAYER))
        plan = build.plan(app, None, env, settings, target=target)
        return _standalone(plan, layers)
    plan = build.plan(app, None, env, settings, target=Target("off", "the next buildpack installs"))
    return _handoff(plan, layers)


def _refuse_python(mode: str) -> None:
    if mode == "python":
        raise UserError(
            "config::setting",
            name="DEPLOYKEY_INSTALL",
            value=mode,
            choices="auto, off (hand ssh to the next buildpack), venv (install into a launch layer)",
            default="auto",
        )


def _handoff(plan: build.Plan, layers: Path) -> int:
    """Fetch into mirrors in the layer `deploykey` (build = true: the later buildpacks read it;
    cache = true: the next build fetches only what changed; launch = false: never exported), with
    the keys in a temp dir removed before this step ends; the layer's env.build hands the later
    buildpacks git settings that send the private URLs to the mirrors, and no key."""
    layer = layers / KEY_LAYER
    fetched, _findings = build.fetch(plan, layer / mirrors.DIR)
    _hand_on(fetched, layers, cache=True)
    output.detail("the layer is build and cache only: never exported; it holds no key")
    output.step("Checking the app and the layer for the keys")
    record = build.scan_record(build.seal_secrets(plan), layer)
    leak = build.leak_check(
        [plan.app_dir, layer], plan.secret_keys, plan.secret_tokens, plan.settings, record=record
    )
    if leak is not None:
        raise leak
    return 0


def _hand_on(fetched: mirrors.Mirrors, layers: Path, cache: bool) -> None:
    """The layer's env.build: git settings that send the private URLs to the mirrors, which the
    lifecycle gives every later buildpack's build."""
    env_build = layers / KEY_LAYER / "env.build"
    shutil.rmtree(env_build, ignore_errors=True)
    env_build.mkdir(parents=True)
    for name, value in fetched.env().items():
        (env_build / f"{name}.override").write_text(value)
    (layers / f"{KEY_LAYER}.toml").write_text(_types(build=True, launch=False, cache=cache))
    output.detail(
        f"env.build: {', '.join(sorted(fetched.env()))} for the buildpacks after this one"
    )


# What `deploykey fetch` reads as a build's failure here, said for a CNB build.
FETCHED_PROBLEMS = {
    "fetch::key-present": "cnb::fetched-key",
    "fetch::missing": "cnb::fetched-missing",
    "fetch::stale": "cnb::fetched-stale",
}


def _from_fetched(
    app: Path, fetched_dir: Path, layers: Path, env: sources.EnvSource, settings: config.Settings
) -> int:
    """Keyless: the mirrors `deploykey fetch --cache-dir DIR` made outside the build container,
    where the key is, and `pack build --volume DIR:PATH:ro` mounted at DEPLOYKEY_FETCHED. No key,
    token or App key may be in the platform env or a binding (every later buildpack could read
    them). The mirrors are copied into this build's layer `deploykey` (build only: copied afresh
    from the mount every build, never restored from a cache build code could have written) and
    checked as `install --fetched` checks them: the record is for exactly the app's requirements,
    each mirror holds the commits pinned, no git config rule sends their URLs elsewhere. Then
    handed on, or (DEPLOYKEY_INSTALL=venv) installed from into the launch layer."""
    layer = layers / KEY_LAYER
    venv = settings.install == "venv"
    target = (
        Target("venv", "DEPLOYKEY_INSTALL=venv: a launch layer", Path(VENV_LAYER))
        if venv
        else Target("off", "the next buildpack installs")
    )
    try:
        plan = build.plan(app, None, env, settings, target, keyless=True)
        if not (fetched_dir / build.RECORD).is_file():
            raise UserError("fetch::missing", path=fetched_dir / build.RECORD)
        output.detail(f"no key in this build: the mirrors `deploykey fetch` made, in {fetched_dir}")
        shutil.rmtree(layer, ignore_errors=True)
        layer.mkdir()
        shutil.copy2(fetched_dir / build.RECORD, layer / build.RECORD)
        if (fetched_dir / mirrors.DIR).is_dir():
            # Not the seals: there is no key here to check them with (nor a cached copy to trust).
            skip = shutil.ignore_patterns("*" + mirrors.SEAL_SUFFIX)
            shutil.copytree(
                fetched_dir / mirrors.DIR, layer / mirrors.DIR, symlinks=True, ignore=skip
            )
        recorded = build.read_record(layer, plan)
    except (OSError, shutil.Error) as exc:
        raise UserError("cnb::fetched-unreadable", path=fetched_dir, detail=str(exc)) from None
    except UserError as error:
        slug = FETCHED_PROBLEMS.get(error.slug)
        if slug is None:
            raise
        facts = {**error.facts, "path": fetched_dir}
        raise UserError(slug, **facts) from None
    if venv:
        return _standalone(plan, layers, recorded)
    _hand_on(recorded[0], layers, cache=False)
    output.detail("the layer is build only: never exported, never cached; no key was ever here")
    return 0


def _standalone(
    plan: build.Plan,
    layers: Path,
    recorded: tuple[mirrors.Mirrors, list[str]] | None = None,
) -> int:
    venv = layers / VENV_LAYER
    cache = layers / CACHE_LAYER  # uv's cache, restored by the lifecycle between builds

    def into(job: install.Job, _cleanup: scrub.Cleanup) -> None:
        install.into(venv, True, job)
        (venv / "env.launch").mkdir()
        (venv / "env.launch" / "VIRTUAL_ENV.override").write_text(str(venv))
        (layers / f"{VENV_LAYER}.toml").write_text(_types(build=False, launch=True, cache=False))
        (layers / f"{CACHE_LAYER}.toml").write_text(_types(build=False, launch=False, cache=True))

    build.install_cycle(
        plan,
        f"the launch layer {VENV_LAYER}",
        into,
        [plan.app_dir, venv, cache],
        cache,
        recorded=recorded,  # keyless: the mirrors `deploykey fetch` made, no fetch here
    )
    return 0


def layer_types(toml: Path) -> dict[str, bool]:
    """The booleans of a layer's `[types]` table (a small reader: Python 3.10 has no tomllib)."""
    found: dict[str, bool] = {}
    section = ""
    for line in toml.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] ")
        elif section == "types" and (
            match := re.match(r"^(build|launch|cache)\s*=\s*(true|false)$", line)
        ):
            found[match.group(1)] = match.group(2) == "true"
    return found


def scan_step() -> int:
    """The post-group scan: remove the keys from the key layer, then scan what will be exported
    (/workspace, launch layers) and cached (cache layers) for them."""
    app = Path.cwd()
    platform = _required("CNB_PLATFORM_DIR")
    layers_root = _required("CNB_LAYERS_DIR").parent
    env = _env(platform)
    settings = config.load(app, env)
    output.step("deploykey scan: the exported image and the cache")
    secrets = build.looked_for(env, settings)
    if secrets is None:
        output.detail("no deploy key and no token in this build: nothing to look for")
        return 0
    found_keys, tokens = secrets
    # The scan's record, in a cache layer of this buildpack's own (restored by the lifecycle with
    # the cache; scanned with the other cache layers below).
    kept = _required("CNB_LAYERS_DIR") / RECORD_LAYER
    kept.mkdir(exist_ok=True)
    (kept.parent / f"{RECORD_LAYER}.toml").write_text(_types(build=False, launch=False, cache=True))
    record = build.scan_record(build.secrets_of(found_keys, tokens), kept)
    roots = [app]
    for toml in sorted(layers_root.glob("*/*.toml")):
        types = layer_types(toml)
        layer = toml.with_suffix("")
        if layer.is_dir() and (types.get("launch") or types.get("cache")):
            roots.append(layer)
    leak = build.leak_check(roots, found_keys, tokens, settings, record=record)
    if leak is not None:
        raise leak
    return 0
