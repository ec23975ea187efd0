"""Docker / OCI image builds and CI jobs: `install`, `setup --shell` / `cleanup`, `scan`, `scan-image`.

In a Dockerfile the key must come from a BuildKit mount: `RUN --mount=type=secret,id=deploy_key`
(a file at /run/secrets/deploy_key, gone when the RUN ends) or `--mount=type=ssh` (an agent).
`ARG` and `ENV` values are kept in the image config and its history, and a file deleted in a later
layer survives in the earlier one. So `deploykey install` does the whole cycle inside that one RUN:
keys in a temp dir, install, scrub, and a scan of what it installed before the layer is committed.
CI systems whose install command is the user's own get `eval "$(deploykey setup --shell)"`, then
`deploykey cleanup`.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from deploykey import build
from deploykey.core import errors, output, permissions, sources
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors
from deploykey.installers import install
from deploykey.installers.install import Target
from deploykey.leak import image, scan, scrub
from deploykey.secrets import agent, config, githubapp

TOKEN_NAMES = tuple(config.DEFAULT_TOKENS) + githubapp.NAMES
MIRRORS_PREFIX = "deploykey-mirrors-"


def platform(ci: bool) -> errors.Platform:
    """GitHub Actions sets GITHUB_ACTIONS=true in every step, GitLab CI sets GITLAB_CI=true, and most
    CI systems CI=true. A `docker build` passes none of them to a RUN (only ARG and ENV reach it):
    `install` there is a Docker build. setup/cleanup run in a CI job, named or not."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return errors.PLATFORMS["github"]
    if os.environ.get("GITLAB_CI") == "true":
        return errors.PLATFORMS["gitlab"]
    if ci or os.environ.get("CI", "").lower() in ("true", "1"):
        return errors.PLATFORMS["ci"]
    return errors.PLATFORMS["docker"]


def _source(env_dir: str | None, key_files: tuple[str, ...]) -> sources.EnvSource:
    return sources.gather(os.environ, TOKEN_NAMES, env_dir, key_files)


def _settings(app: Path, env: sources.EnvSource, requirements: str | None) -> config.Settings:
    """The settings, with `-r FILE` (when given) as DEPLOYKEY_REQUIREMENTS."""
    settings = config.load(app, env)
    if requirements is None:
        return settings
    values = {**settings.values, "DEPLOYKEY_REQUIREMENTS": requirements}
    return dataclasses.replace(settings, values=values)


def _agent(wanted: bool) -> str | None:
    """The agent's socket, with --agent: asked for its keys first, so that a build without
    `--ssh default` (or an agent without the key) is told so, not that the key is refused."""
    if not wanted:
        return None
    socket = os.environ.get("SSH_AUTH_SOCK")
    if not socket:
        raise UserError("agent::missing")
    keys = agent.identities(socket)
    output.detail(f"ssh agent {socket}: {', '.join(key.describe() for key in keys)}")
    return socket


def fetch_command(
    requirements: str | None,
    env_dir: str | None,
    key_files: tuple[str, ...],
    agent: bool,
    cache_dir: str | None,
) -> int:
    """`deploykey fetch`: the first step of a two-step Docker build. With the keys (a `RUN
    --mount=type=secret` of its own), fetch every private repository into mirrors in the cache
    mount, remove the keys, record what was fetched, and check the app (the build context: a key
    file copied in with it) and the cache for the keys; the next
    `RUN`, with no secret mounted, runs `install --fetched`. No package's code runs here."""
    if not cache_dir:
        raise UserError(
            "usage",
            message="deploykey fetch: --cache-dir DIR is required (the cache mount the install "
            "step reads)",
            command="deploykey fetch",
        )
    app = Path.cwd()
    env = _source(env_dir, key_files)
    settings = _settings(app, env, requirements)
    output.step("deploykey fetch: private git dependencies into the cache, with the build's keys")
    _check_writable(None, None, cache_dir)
    cache = Path(cache_dir).resolve()
    given = f"-r {requirements}" if requirements is not None else None
    plan = build.plan(
        app, cache, env, settings, Target("docker", "the cache"), _agent(agent), given
    )
    fetched, findings = build.fetch(plan, cache / mirrors.DIR)
    record = build.write_record(cache, plan, fetched, findings)
    output.detail(f"recorded what was fetched in {record}, for `install --fetched`")
    output.step("Checking the app and the cache for the keys")
    # The cache mount stays on the builder between builds: its files are read when they changed.
    scan_record = build.scan_record(build.seal_secrets(plan), cache)
    leak = build.leak_check(
        [app, cache], plan.secret_keys, plan.secret_tokens, settings, record=scan_record
    )
    if leak is not None:
        raise _in_context(leak, app)
    output.step("Done: fetched; the keys are gone, and the install step needs none")
    return 0


def install_command(
    requirements: str | None,
    venv: str | None,
    target: str | None,
    user: bool,
    env_dir: str | None,
    key_files: tuple[str, ...],
    agent: bool,
    cache_dir: str | None = None,
    fetched: bool = False,
) -> int:
    """`deploykey install`: the whole cycle in one process, for a `RUN --mount=type=secret` line.
    With no `-r`, the app's files choose the package manager as heroku-buildpack-python does (a
    lockfile's tool installs into --venv only)."""
    app = Path.cwd()
    env = _source(env_dir, key_files)
    settings = _settings(app, env, requirements)
    output.step(
        "deploykey install --fetched: from the mirrors the fetch step left, with no key"
        if fetched
        else "deploykey install: private git dependencies"
    )
    _check_writable(venv, target, cache_dir)
    where, python, extra, scanned = _where(venv, target, user)
    given = f"-r {requirements}" if requirements is not None else None
    if fetched and not cache_dir:
        raise UserError(
            "usage",
            message="deploykey install --fetched: --cache-dir DIR is required (the cache mount "
            "`deploykey fetch` filled)",
            command="deploykey install",
        )
    wanted_agent = None if fetched else _agent(agent)
    plan = build.plan(
        app, None, env, settings, Target("docker", where), wanted_agent, given, keyless=fetched
    )
    assert plan.choice is not None
    if plan.choice.locked and venv is None:
        raise UserError(
            "install::needs-venv", file=plan.choice.file.name, tool=plan.choice.shown, where=where
        )
    output.detail(f"package manager: {plan.choice.shown} ({plan.choice.reason})")
    plan = dataclasses.replace(plan, kept=(scanned,))

    def into(job: install.Job, _cleanup: scrub.Cleanup) -> None:
        if venv is not None:
            install.into(Path(venv).resolve(), True, job)
            return
        install.with_python(python, job, extra)

    cache = Path(cache_dir).resolve() if cache_dir else None
    recorded = build.read_record(cache, plan) if fetched and cache is not None else None
    # With --fetched there is no key in this step: the fetch step, which had it, checked the app
    # and the cache; what this step installed is still read (URL credentials, other keys).
    roots = [scanned] if fetched else [app, scanned] + ([cache] if cache else [])
    try:
        build.install_cycle(plan, where, into, roots, cache, user, recorded)
    except UserError as error:
        raise _in_context(error, app) from None
    return 0


def _check_writable(venv: str | None, target: str | None, cache_dir: str | None) -> None:
    """Before anything is fetched: a RUN under a non-root USER can write what deploykey writes
    (BuildKit makes mounts, and earlier steps make directories, as root)."""
    if cache_dir:
        permissions.check_cache(Path(cache_dir).resolve())
    if venv is not None:
        permissions.check_target(Path(venv).resolve(), "virtual environment")
        install.check_venv_path(Path(venv).resolve())
    if target is not None:
        permissions.check_target(Path(target).resolve(), "--target directory")


def _in_context(error: UserError, app: Path) -> UserError:
    """A key found in the app dir came with the build context (the key file itself, copied in by
    `COPY . .`): besides deleting it, the user must drop the layer the builder keeps in its cache."""
    if error.slug != "leak::found":
        return error
    paths = error.facts["paths"]
    assert isinstance(paths, tuple)
    if not any(Path(path).is_relative_to(app) for path in paths):
        return error
    return UserError("leak::context", app=app, files=error.facts["files"])


def _where(venv: str | None, target: str | None, user: bool) -> tuple[str, Path, list[str], Path]:
    """(description, python, extra pip arguments, directory to scan afterwards)."""
    if venv is not None:
        path = Path(venv).resolve()
        return f"the virtual environment {path}", path / "bin" / "python", [], path
    if target is not None:
        path = Path(target).resolve()
        return f"{path} (pip --target)", Path(sys.executable), ["--target", str(path)], path
    if user:
        base = Path(sysconfig.get_config_var("userbase") or Path.home() / ".local")
        return f"the user site {base} (pip --user)", Path(sys.executable), ["--user"], base
    site = Path(sysconfig.get_paths()["purelib"])
    return f"{sys.executable}'s site-packages", Path(sys.executable), [], site


def setup_command(
    requirements: str | None,
    env_dir: str | None,
    key_files: tuple[str, ...],
    cache_dir: str | None = None,
) -> int:
    """`eval "$(deploykey setup --shell)"`: fetch every private repository into mirrors (in
    --cache-dir, which a CI cache can keep, or a temp dir), remove the keys, and print as shell
    exports the git settings that send the private URLs to the mirrors: the job's own install
    never has a key. Everything for people goes to stderr."""
    import tempfile

    output.to_stderr()
    app = Path.cwd()
    env = _source(env_dir, key_files)
    settings = _settings(app, env, requirements)
    output.step("deploykey setup: private repositories fetched for this shell's install")
    plan = build.plan(app, None, env, settings, Target("off", "the job's own install command"))
    if cache_dir is not None:
        permissions.check_cache(Path(cache_dir).resolve())
        root = Path(cache_dir).resolve() / mirrors.DIR
        exports = {}
    else:
        root = Path(tempfile.mkdtemp(prefix=MIRRORS_PREFIX))
        exports = {"DEPLOYKEY_MIRRORS": str(root)}
    try:
        fetched, _findings = build.fetch(plan, root)
    except BaseException:
        if cache_dir is None:
            shutil.rmtree(root, ignore_errors=True)
        raise
    for name, value in {**fetched.env(), **exports}.items():
        output.shell(f"export {name}={shlex.quote(value)}")
    # A CI secret exported as a variable reaches every command of the job, its install included:
    # the shell that evaluates this forgets it (the fetch is done).
    secrets = [n for n in env.key_names() + [t.name for t in plan.tokens] if n in os.environ]
    secrets += [n for n in (githubapp.PRIVATE_KEY,) if n in os.environ]
    if secrets:
        output.shell("unset " + " ".join(secrets))
        output.detail(f"this shell forgets {', '.join(secrets)}: the fetch is done")
    output.detail("run your install now (no key is left for it); then `deploykey cleanup`")
    return 0


def cleanup_command(
    paths: tuple[str, ...], shell: bool, env_dir: str | None = None, key_files: tuple[str, ...] = ()
) -> int:
    """`deploykey cleanup [PATH...]`: remove the temporary mirrors setup made (the keys went at the
    end of setup), then scan PATHs (default: the current directory) for the keys."""
    if shell:
        output.to_stderr()
    output.step("deploykey cleanup")
    made = Path(os.environ.get("DEPLOYKEY_MIRRORS") or "/nonexistent")
    if made.name.startswith(MIRRORS_PREFIX) and made.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(made, ignore_errors=True)
        output.detail(f"removed the mirrors {made}")
    else:
        output.detail("no temporary mirrors of deploykey's to remove")
    if shell:
        count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
        names = ["GIT_CONFIG_COUNT", "DEPLOYKEY_MIRRORS", "POETRY_SYSTEM_GIT_CLIENT"]
        names += [
            f"GIT_CONFIG_{kind}_{index}" for index in range(count) for kind in ("KEY", "VALUE")
        ]
        output.shell("unset " + " ".join(names))
    env = _source(env_dir, key_files)
    if not env.key_names() and not githubapp.given(env):
        output.detail("no DEPLOY_KEY* in the environment: nothing to scan for")
        return 0
    return scan_command(paths or (".",), env_dir, key_files)


def scan_command(
    paths: tuple[str, ...],
    env_dir: str | None,
    key_files: tuple[str, ...],
    context: bool = False,
    cache_dir: str | None = None,
) -> int:
    """`deploykey scan PATH...`: exit 0 clean, 1 when a key or token is found. With --context
    (the example Dockerfile's step after `COPY . .`), a key found under a PATH is leak::context:
    the layer that COPY made stays in the builder's cache, so the user must also prune it. With
    --cache-dir, the scan's record is kept there (a file of its own, beside `fetch`'s): the next
    scan reads only what changed since (see scan.Record)."""
    env = _source(env_dir, key_files)
    settings = config.load(Path.cwd(), env)
    secrets = build.looked_for(env, settings)
    if secrets is None:
        raise UserError(
            "usage",
            message="deploykey scan: no key to look for",
            command="deploykey scan",
        )
    found, tokens = secrets
    # What the user names is scanned as named: a symlink for its target, a missing path an error
    # (a scan of nothing must not say "no key material found").
    roots = [Path(path).resolve() for path in paths]
    for path, root in zip(paths, roots, strict=True):
        if not root.exists():
            raise UserError("scan::missing", path=path)
    output.step("Scanning for the keys")
    sealed = build.secrets_of(found, tokens)
    record = build.scan_record(sealed, Path(cache_dir), SCAN_RECORD) if cache_dir else None
    leak = build.leak_check(roots, found, tokens, settings, strict=True, record=record)
    if leak is not None and context:
        for root in roots:
            leak = _in_context(leak, root)
    if leak is not None:
        raise leak
    return 0


SCAN_RECORD = "scan-record-scan"  # `deploykey scan --cache-dir`'s, not `fetch`'s: other roots


def scan_image_command(archive: str, env_dir: str | None, key_files: tuple[str, ...]) -> int:
    """`deploykey scan-image IMAGE.tar`: every layer and the config; exit 1 with layer digests and
    paths on a hit."""
    env = _source(env_dir, key_files)
    settings = config.load(Path.cwd(), env)
    secrets = build.looked_for(env, settings)
    found, tokens = secrets if secrets is not None else (build.read_keys(env), [])
    output.step(f"Scanning the image {archive} for the keys")
    searcher = scan.Searcher.of(found, {token.name: token.value for token in tokens})
    report = image.scan_archive(Path(archive), searcher)
    output.detail(f"read {report.layers} layers ({report.files} files) and the config")
    # Images carry system libraries with built-in test keys (libgnutls): another private key is
    # named, but only the build's own keys and tokens fail the check.
    ours = [hit for hit in report.hits if hit.kind != scan.OTHER_KEY]
    for hit in sorted({hit.describe() for hit in report.hits if hit.kind == scan.OTHER_KEY}):
        output.warn(f"{hit}: not this build's key, so not failing the check")
    incomplete_ok = settings.get("DEPLOYKEY_SCAN_INCOMPLETE") == "warn"
    if ours:
        for entry in report.unpacked:
            output.warn(f"could not unpack the archive {entry}: only its bytes were searched")
        places = sorted({hit.describe() for hit in ours})
        raise UserError("leak::image", count=len(places), path=archive, places="\n".join(places))
    if report.unpacked and not incomplete_ok:
        shown = "\n".join(report.unpacked[: build.UNREADABLE_SHOWN])
        raise UserError("scan::incomplete", count=len(report.unpacked), paths=shown)
    for entry in report.unpacked:
        output.warn(f"could not unpack the archive {entry}: only its bytes were searched")
    output.detail("no key material found")
    return 0
