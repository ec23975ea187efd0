"""The Heroku classic buildpack API: bin/detect, bin/compile, bin/release.

compile reads config vars from ENV_DIR (a directory of files; for local runs also a .env file),
installs the app's requirements with the deploy key, scrubs, and scans BUILD_DIR and CACHE_DIR.
Placed before heroku/python (DEPLOYKEY_INSTALL=off, or detected), it only sets ssh up and hands the
ssh command to the next buildpack through `$BUILDPACK_DIR/export`, which the platform sources before
the next buildpack runs; a config var named GIT_SSH_COMMAND would never reach pip, an export does.
"""

from __future__ import annotations

from pathlib import Path

from deploykey import build, config, install, keydir, output, requirements, scrub, sources
from deploykey.errors import UserError

NAME = "deploykey"
KIT_DIR = Path(__file__).resolve().parents[2]


def detect(build_dir: str) -> int:
    app_dir = Path(build_dir)
    files, found = requirements.detect(app_dir)
    if (app_dir / config.CONFIG_FILE).is_file() or found.uses_ssh:
        output.plain(NAME)
        return 0
    output.plain(f"{NAME}: no private git dependency over ssh in this app")
    output.plain(
        f"  looked for {config.CONFIG_FILE} and git+ssh:// URLs in {', '.join(requirements.DETECT_GLOBS)}"
    )
    output.plain(f"  requirements files: {', '.join(files) or 'none'}")
    listing = (
        sorted(p.name + ("/" if p.is_dir() else "") for p in app_dir.iterdir())
        if app_dir.is_dir()
        else []
    )
    output.plain(f"  the app dir holds: {', '.join(listing[:30]) or 'nothing'}")
    return 1


def release(build_dir: str) -> int:
    """Nothing to declare: no add-ons, no config vars (a secret here would be stored in the release)."""
    import yaml

    output.plain(yaml.safe_dump({}, default_flow_style=False).rstrip("\n"))
    return 0


def compile(build_dir: str, cache_dir: str, env_dir: str, dry_run: bool = False) -> int:
    app_dir, cache = Path(build_dir).resolve(), Path(cache_dir).resolve()
    env = sources.read(env_dir)
    settings = config.load(app_dir, env)
    dry_run = dry_run or settings.dry_run
    output.step(
        "deploykey: private git dependencies with deploy keys" + (" (dry run)" if dry_run else "")
    )
    plan = build.plan(app_dir, cache, env, settings)
    if dry_run:
        handoff = (
            [f"Hand off: write {export_file()} with the git settings"]
            if plan.target.kind == "off"
            else []
        )
        build.show_plan(plan, handoff)
        build.checked(plan)
        return 0
    if plan.target.kind == "off":
        return _handoff(plan)
    return _install(plan)


def _install(plan: build.Plan) -> int:
    def into(job: install.Job, cleanup: scrub.Cleanup) -> None:
        install.install(plan.target, plan.app_dir, plan.settings, job, cleanup)

    # The installer's cache lives in CACHE_DIR, which Heroku keeps between builds (and scanned).
    cache = plan.cache_dir / "deploykey" if plan.cache_dir else None
    build.install_cycle(plan, plan.target.describe(plan.settings), into, plan.outside, cache)
    return 0


def export_file() -> Path:
    return KIT_DIR / "export"


def _handoff(plan: build.Plan) -> int:
    cleanup = scrub.Cleanup()
    with scrub.guarded(cleanup):
        output.step("Setting up ssh for the next buildpack")
        opened = build.open_access(plan, cleanup)
        output.step("Checking every private requirement")
        build.check(plan, opened)
        target = export_file()
        if target.is_symlink():
            raise UserError("path::symlink", path=target)
        target.write_text(
            "# Written by deploykey: git and pip in the next buildpacks use the deploy keys through this.\n"
            + opened.export()
        )
        keydir.KeyDir(opened.key_dir).outlive()
        cleanup.actions.clear()  # success: the key dir must outlive this buildpack
    output.detail(f"wrote {target}: the git settings for the next buildpack ({plan.target.reason})")
    output.detail(
        f"The keys stay in {opened.key_dir}, outside the app and the cache, until the build ends. "
        "To remove them right after pip and scan the slug, add the post_compile hook "
        "(`deploykey hooks --post-compile-only APP_DIR`)."
    )
    output.step("Checking the app and the cache for the keys")
    leak = build.leak_check(plan.outside, plan.keys, plan.tokens)
    if leak is not None:
        raise leak
    return 0
