"""App hooks for heroku-buildpack-python: bin/pre_compile and bin/post_compile in the app.

The Python buildpack runs pip in another process that inherits nothing the hook exports, so
pre_compile hands ssh over through a file git reads through `$HOME`: a marked `core.sshCommand`
block in `$HOME/.gitconfig` with an absolute `ssh -F CONFIG` (OpenSSH would look for ~/.ssh/config
in the passwd home, which differs from $HOME in build-in-app-dir builds). post_compile removes the
key dir and the block, then scans the app and the cache.
The hooks run from the app dir; a config var can shadow BUILD_DIR or CACHE_DIR in a hook's
environment, so the app dir is `$PWD`. DEPLOY_KEY is read from `$ENV_DIR` as a file: the exported
variable has lost its final newline.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploykey import blocks, build, config, credentials, keydir, kitfile, output, scrub, sources
from deploykey.errors import UserError
from deploykey.install import Target

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
    output.step("deploykey: ssh for pip with the deploy key")
    _remove_previous()
    plan = build.plan(
        app_dir,
        _cache_dir(),
        env,
        settings,
        target=Target("off", "heroku-buildpack-python installs"),
    )
    cleanup = scrub.Cleanup()
    with scrub.guarded(cleanup):
        opened = build.open_access(plan, cleanup)
        output.step("Checking every private requirement")
        build.check(plan, opened)
        try:
            blocks.insert(gitconfig(), opened.gitconfig())
        except OSError as exc:
            raise UserError(
                "home::unwritable", path=gitconfig(), reason=f"{exc.strerror or exc}."
            ) from None
        keydir.KeyDir(opened.key_dir).outlive()
        cleanup.actions.clear()  # success: pip runs after this hook
    output.detail(f"git uses {opened.key_dir} through core.sshCommand in {gitconfig()}")
    output.detail("bin/post_compile removes the keys and these settings after pip")
    return 0


def _remove_previous() -> list[str]:
    """Take out the block and key dir of an earlier pre_compile (a re-run, or no post_compile)."""
    removed = []
    body = blocks.remove(gitconfig())
    if body is not None:
        removed.append(f"the deploykey block in {gitconfig()}")
        for line in body.splitlines():
            if "sshCommand" in line:
                value = (
                    line.split("=", 1)[1].strip()[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                )
                directory = keydir.named_in(value)
                if directory is not None:
                    keydir.KeyDir(directory).remove()
                    removed.append(f"the key dir {directory}")
    handed = os.environ.get("GIT_SSH_COMMAND")
    directory = keydir.named_in(handed) if handed else None
    if directory is not None and directory.exists():
        keydir.KeyDir(directory).remove()
        removed.append(f"the key dir {directory} (handed over by the deploykey buildpack)")
    return removed


def post_compile() -> int:
    app_dir = Path.cwd().resolve()
    env = _env()
    output.step("deploykey: removing the key and the ssh setting")
    for what in _remove_previous() or ["nothing: no deploykey setup was found"]:
        output.detail(f"removed {what}" if not what.startswith("nothing") else what)
    settings = config.load(app_dir, env)
    tokens = credentials.read(env, settings)
    found_keys = build.read_keys(env, tokens)
    output.step("Checking the app and the cache for the keys")
    roots = [app_dir] + ([cache] if (cache := _cache_dir()) else [])
    leak = build.leak_check(roots, found_keys, tokens)
    if leak is not None:
        raise leak
    return 0


def write_hooks(app_dir: str, post_only: bool = False) -> int:
    """Write bin/pre_compile, bin/post_compile and bin/deploykey.pyz into an app."""
    bin_dir = Path(app_dir) / "bin"
    files = kitfile.files()
    names = ["post_compile"] if post_only else list(HOOKS)
    for name in names:
        existing = bin_dir / name
        ours = files[f"deploykey/hooks/{name}"]
        if existing.exists() and existing.read_bytes() != ours:
            raise UserError("hooks::exists", path=existing, hook=name)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = bin_dir / name
        target.write_bytes(files[f"deploykey/hooks/{name}"])
        target.chmod(0o755)
        output.detail(f"wrote {target}")
    kitfile.write_pyz(bin_dir / kitfile.PYZ)
    output.detail(
        f"wrote {bin_dir / kitfile.PYZ} (the kit; its dependencies are fetched at build time)"
    )
    return 0
