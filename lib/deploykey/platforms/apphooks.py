"""App hooks for heroku-buildpack-python: bin/pre_compile and bin/post_compile in the app.

heroku-buildpack-python (v351, lib/hooks.sh and the stdlib's `sub_env`) runs a hook in a subshell:
nothing it exports reaches the installer, only files do. pre_compile fetches every private
repository into mirrors in CACHE_DIR (exported to hooks by bin/compile) with the keys, removes the
keys, and writes a marked block of `url.<mirror>.insteadOf` settings into `$HOME/.gitconfig`, which
git and Poetry's dulwich both read. post_compile removes the block and scans the app and the cache.
The hooks run from the app dir; a config var can shadow BUILD_DIR or CACHE_DIR in a hook's
environment, so the app dir is `$PWD`. DEPLOY_KEY is read from `$ENV_DIR` as a file: the exported
variable has lost its final newline.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploykey import build
from deploykey.core import blocks, output, sources
from deploykey.core.errors import UserError
from deploykey.installers.install import Target
from deploykey.kit import kitfile
from deploykey.platforms import heroku
from deploykey.secrets import config

HOOKS = ("pre_compile", "post_compile")


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def gitconfig() -> Path:
    return _home() / ".gitconfig"


def _env() -> sources.EnvSource:
    env_dir = os.environ.get("ENV_DIR")
    if not env_dir:
        raise UserError("env::not-set", hook="app")
    return sources.read(env_dir)


def _cache_dir() -> Path | None:
    cache = os.environ.get("CACHE_DIR")
    return Path(cache).resolve() if cache and Path(cache).is_dir() else None


def pre_compile() -> int:
    app_dir = Path.cwd().resolve()
    env = _env()
    settings = config.load(app_dir, env)
    output.step("deploykey: private repositories fetched before pip, with no key left for it")
    heroku.adopt_trust(env, app_dir)
    _remove_previous()
    cache = _cache_dir()
    if cache is None:
        raise UserError("cache::not-set", hook="pre_compile")
    plan = build.plan(
        app_dir, cache, env, settings, target=Target("off", "heroku-buildpack-python installs")
    )
    with heroku.forgotten_on_failure(env, settings):
        fetched, _findings = build.fetch(plan, heroku.mirrors_root(cache))
        output.step("Checking the app and the cache for the keys, before the install")
        record = build.scan_record(build.seal_secrets(plan), cache / heroku.CACHE)
        leak = build.leak_check(
            plan.outside, plan.secret_keys, plan.secret_tokens, plan.settings, record=record
        )
        if leak is not None:
            raise leak
    heroku.forget_keys(plan)
    try:
        blocks.insert(gitconfig(), fetched.gitconfig())
    except OSError as exc:
        raise UserError(
            "home::unwritable", path=gitconfig(), reason=f"{exc.strerror or exc}."
        ) from None
    output.detail(f"git reads the mirrors' URL settings from a marked block in {gitconfig()}")
    output.detail("bin/post_compile removes the block and checks the app and the cache")
    return 0


def _remove_previous() -> list[str]:
    """Take out the block an earlier pre_compile wrote (a re-run, or no post_compile)."""
    if blocks.remove(gitconfig()) is None:
        return []
    return [f"the deploykey block in {gitconfig()}"]


def post_compile() -> int:
    app_dir = Path.cwd().resolve()
    env = _env()
    output.step("deploykey: removing the git settings")
    for what in _remove_previous() or ["nothing: no deploykey setup was found"]:
        output.detail(f"removed {what}" if not what.startswith("nothing") else what)
    settings = config.load(app_dir, env)
    secrets = build.looked_for(env, settings)
    if secrets is None:
        output.detail(
            f"no key in {env.path}: pre_compile removed them before the install, so no build "
            "code could copy them; nothing to scan for"
        )
        return 0
    found_keys, tokens = secrets
    output.step("Checking the app and the cache for the keys")
    cache = _cache_dir()
    roots = [app_dir] + ([cache] if cache else [])
    sealed = build.secrets_of(found_keys, tokens)
    record = build.scan_record(sealed, cache / heroku.CACHE) if cache else None
    leak = build.leak_check(roots, found_keys, tokens, settings, record=record)
    if leak is not None:
        raise leak
    return 0


def write_hooks(app_dir: str, post_only: bool = False) -> int:
    """Write bin/pre_compile, bin/post_compile and bin/deploykey.pyz into an app."""
    bin_dir = Path(app_dir) / "bin"
    names = ["post_compile"] if post_only else list(HOOKS)
    kit = kitfile.files()
    scripts = {name: kitfile.script(kit, f"deploykey/hooks/{name}") for name in names}
    for name in names:
        existing = bin_dir / name
        if existing.exists() and existing.read_bytes() != scripts[name]:
            raise UserError("hooks::exists", path=existing, hook=name)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = bin_dir / name
        target.write_bytes(scripts[name])
        target.chmod(0o755)
        output.detail(f"wrote {target}")
    kitfile.write_pyz(bin_dir / kitfile.PYZ)
    output.detail(
        f"wrote {bin_dir / kitfile.PYZ} (the kit; its dependencies are fetched at build time)"
    )
    return 0
