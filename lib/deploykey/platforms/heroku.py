"""The Heroku classic buildpack API: bin/detect, bin/compile, bin/release.

compile reads config vars from ENV_DIR (a directory of files; for local runs also a .env file),
installs the app's requirements with the deploy key, scrubs, and scans BUILD_DIR and CACHE_DIR.
Placed before heroku/python (DEPLOYKEY_INSTALL=off, or detected), it fetches the private
repositories into mirrors in CACHE_DIR, removes the keys, and hands the next buildpack git settings
that point the private URLs at the mirrors, through `$BUILDPACK_DIR/export`, which the platform
sources before the next buildpack runs (heroku-buildpack-python v351 clears nothing of it but
PYTHONHOME and PYTHONPATH: bin/compile, and keeps out of CACHE_DIR/deploykey: lib/cache.sh).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from deploykey import build, manifests
from deploykey.core import errors, output, sources, trust
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors
from deploykey.installers import install
from deploykey.kit import bootstrap
from deploykey.leak import scrub
from deploykey.secrets import config, credentials, githubapp

NAME = "deploykey"
CACHE = "deploykey"  # the kit's part of CACHE_DIR: mirrors, the installer's cache
KIT_DIR = Path(__file__).resolve().parents[3]


def detect(build_dir: str) -> int:
    app_dir = Path(build_dir)
    found = manifests.read_all(app_dir)
    files = found.files
    if (app_dir / config.CONFIG_FILE).is_file() or found.uses_ssh:
        output.plain(NAME)
        return 0
    output.plain(f"{NAME}: no private git dependency over ssh in this app")
    output.plain(
        f"  looked for {config.CONFIG_FILE} and git+ssh:// URLs in requirements files, "
        "pyproject.toml, setup.cfg, uv.lock, poetry.lock, Pipfile, Pipfile.lock and pylock.toml"
    )
    output.plain(f"  manifests read: {', '.join(files) or 'none'}")
    listing = (
        sorted(p.name + ("/" if p.is_dir() else "") for p in app_dir.iterdir())
        if app_dir.is_dir()
        else []
    )
    output.plain(f"  the app dir holds: {', '.join(listing[:30]) or 'nothing'}")
    return 1


def platform(env_dir: str, dry_run: bool) -> errors.Platform:
    """A Heroku build passes ENV_DIR, a directory, and never --dry-run; a .env file or --dry-run is
    a developer's run of bin/compile, whose keys go into that file or directory."""
    if dry_run or Path(env_dir).is_file():
        return errors.local(env_dir)
    return errors.PLATFORMS["heroku"]


def release(build_dir: str) -> int:
    """Nothing to declare: no add-ons, no config vars (a secret here would be stored in the release)."""
    import yaml

    output.plain(yaml.safe_dump({}, default_flow_style=False).rstrip("\n"))
    return 0


def compile(build_dir: str, cache_dir: str, env_dir: str, dry_run: bool = False) -> int:
    app_dir, cache = Path(build_dir).resolve(), Path(cache_dir).resolve()
    env = sources.read(env_dir)
    settings = config.load(app_dir, env, parsed=None if dry_run else parsed_config(cache))
    dry_run = dry_run or settings.dry_run
    output.step("deploykey: private git dependencies" + (" (dry run)" if dry_run else ""))
    adopt_trust(env, app_dir)
    if dry_run:
        return _dry_run(build.plan(app_dir, cache, env, settings))
    plan = build.plan(app_dir, cache, env, settings)
    with forgotten_on_failure(env, settings):
        if plan.target.kind == "off":
            return _handoff(plan)
        return _install(plan)


def parsed_config(cache: Path) -> config.Parsed | None:
    """Where deploykey.yml's parse is kept in the build cache, sealed with a key from the
    build's private keys (config.Parsed); None with no private key (an agent, tokens only)."""
    key = bootstrap.seal_key()
    return config.Parsed(cache / CACHE / "deploykey.yml.parsed", key) if key else None


def adopt_trust(env: sources.EnvSource, app_dir: Path) -> None:
    """A private CA set as a config var (`heroku config:set SSL_CERT_FILE=certs/ca.pem`): the
    config vars reach a buildpack only as ENV_DIR's files, never its environment."""
    values = {name: env.text(name) or "" for name in trust.SETTINGS}
    for name in trust.adopt(values, app_dir):
        output.detail(f"{name}: {os.environ[name]} ({env.describe(name)})")


def _dry_run(plan: build.Plan) -> int:
    handoff = (
        [f"Hand off: write {export_file()} with the git settings"]
        if plan.target.kind == "off"
        else []
    )
    build.show_plan(plan, handoff, plan.cache_dir / CACHE if plan.cache_dir else None)
    build.checked(plan)
    return 0


def _install(plan: build.Plan) -> int:
    # Another build of this machine that holds the run-time link: fail now, not after the fetch.
    held = install.in_use(Path(plan.settings.get("DEPLOYKEY_APP_PATH")))
    if held is not None:
        raise held

    def into(job: install.Job, cleanup: scrub.Cleanup) -> None:
        forget_keys(plan)
        install.install(plan.target, plan.app_dir, plan.settings, job, cleanup)

    # The installer's cache lives in CACHE_DIR, which Heroku keeps between builds (and scanned);
    # None: a temporary one, removed at the end (install_cycle).
    cache = kit_cache(plan.cache_dir) if plan.cache_dir else None
    # install.install makes a new venv at its run-time path (at_run_time_path)
    venv = None
    if plan.target.kind == "venv" and plan.target.relative is not None:
        venv = Path(plan.settings.get("DEPLOYKEY_APP_PATH"), plan.target.relative)
    build.install_cycle(
        plan, plan.target.describe(plan.settings), into, plan.outside, cache, venv=venv
    )
    return 0


def kit_cache(cache_dir: Path) -> Path | None:
    """The kit's part of CACHE_DIR, or None when it cannot be written (read-only, another
    user's): a build cache only saves time, so the build goes on without keeping anything. Heroku
    always gives a writable CACHE_DIR; a local run or another builder may not."""
    from deploykey.core import permissions

    reason = permissions.unusable_cache(cache_dir / CACHE)
    if reason is None:
        return cache_dir / CACHE
    output.warn(
        f"the build cache {cache_dir} {reason}: the mirrors and the installer's cache go to a "
        "temporary directory for this build, and nothing is kept for the next one (it fetches "
        "every private repository again)"
    )
    return None


def mirrors_root(cache_dir: Path) -> Path:
    """Where the handoff's mirrors go: the build cache, else a private temp dir that stays for
    the buildpacks after this one (they install from it) and goes with the build's machine."""
    import tempfile

    cache = kit_cache(cache_dir)
    if cache is None:
        return Path(tempfile.mkdtemp(prefix="deploykey-mirrors-")) / mirrors.DIR
    return cache / mirrors.DIR


# STACK as the builders set it whose ENV_DIR is a copy of the config vars made for one build:
# Heroku (heroku-24), Dokku and every herokuish build (herokuish include/buildpack.bash:
# `export STACK="${STACK:-heroku-24}"`), Scalingo (scalingo-22).
BUILDER_STACKS = ("heroku-", "scalingo-")


def forget_keys(plan: build.Plan) -> None:
    """On Heroku, ENV_DIR is this build's own copy of the config vars, and every later step can
    read it: heroku-buildpack-python exports its path to pip's environment (v351 bin/compile,
    `export BUILD_DIR CACHE_DIR ENV_DIR`), and build code finds it in /proc/PID/cmdline anyway.
    Once fetched, the keys and tokens are removed from it, so that no package's build code finds
    them there; so on every builder that makes such a copy (BUILDER_STACKS). Elsewhere an env dir
    (or .env file) is the user's own (a developer's run of bin/compile): it is left as it is, and
    the build says that the key stays there."""
    names = plan.env.key_names() + [token.name for token in plan.tokens] + githubapp.given(plan.env)
    if not names:
        return
    if not _copied(plan.env):
        output.warn(
            f"{plan.env.path} still holds {', '.join(names)}, and the build code that runs after "
            "this can read it there: with no STACK of a builder that gives each build its own "
            "copy of the config vars (heroku-*: Heroku, Dokku; scalingo-*: Scalingo), the env "
            "dir is taken for your own, and deploykey deletes nothing of yours. Where it is a "
            "copy made for the build, set STACK, and deploykey removes the key files from it "
            "after the fetch."
        )
        return
    _remove(plan.env, names)


def _copied(env: sources.EnvSource) -> bool:
    """Whether the env dir is this build's own copy of the config vars (BUILDER_STACKS)."""
    return not env.is_file and os.environ.get("STACK", "").startswith(BUILDER_STACKS)


def _remove(env: sources.EnvSource, names: list[str]) -> None:
    gone = [name for name in names if (env.path / name).exists()]
    for name in gone:
        (env.path / name).unlink(missing_ok=True)
    if gone:
        output.detail(f"removed {', '.join(gone)} from {env.path}: nothing after this reads them")


@contextlib.contextmanager
def forgotten_on_failure(env: sources.EnvSource, settings: config.Settings) -> Iterator[None]:
    """The key config vars leave this build's copy of them also when the build fails once the
    fetch has begun (a refused App, an installation without the repository, a key the host does
    not know, a signal): the README promises it, and a builder may run more of the build after a
    failed step (a retry, a log collector). A build stopped by its plan (a manifest, a setting)
    has used no key yet, and leaves them for the next try."""
    try:
        yield
    except BaseException:
        if _copied(env):
            try:
                tokens = [token.name for token in credentials.read(env, settings)]
            except UserError:  # a token setting that cannot be read: its files are the keys'
                tokens = []
            _remove(env, env.key_names() + tokens + githubapp.given(env))
        raise


def export_file() -> Path:
    return KIT_DIR / "export"


def _handoff(plan: build.Plan) -> int:
    """Fetch with the keys, remove them, and hand the next buildpack (heroku/python) only the git
    settings that send the private URLs to the mirrors in the build cache: whatever its installer
    does to git's ssh command (pip >= 25.1 forces its own), no ssh is needed."""
    assert plan.cache_dir is not None
    fetched, _findings = build.fetch(plan, mirrors_root(plan.cache_dir))
    forget_keys(plan)
    target = export_file()
    if target.is_symlink():
        raise UserError("path::symlink", path=target)
    target.write_text(
        "# Written by deploykey: git in the next buildpacks fetches the private repositories from "
        "their mirrors.\n" + fetched.export()
    )
    output.detail(f"wrote {target}: the git settings for the next buildpack ({plan.target.reason})")
    plan.settings.keep_parse()
    output.step("Checking the app and the cache for the keys")
    record = build.scan_record(build.seal_secrets(plan), plan.cache_dir / CACHE)
    leak = build.leak_check(
        plan.outside, plan.secret_keys, plan.secret_tokens, plan.settings, record=record
    )
    if leak is not None:
        raise leak
    return 0
