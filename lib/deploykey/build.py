"""The cycle every platform runs: read the keys, plan, open access, check, (install), scrub, scan.

Platform modules (heroku, apphooks, cli's doctor) decide where things come from and which steps
run; this module holds the steps themselves, each a function a platform calls under a step header.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey import (
    access,
    credentials,
    doctor,
    hosts,
    install,
    keydir,
    keys,
    output,
    scan,
    sshconfig,
)
from deploykey.access import Access
from deploykey.config import HostConfig, Settings
from deploykey.credentials import Token
from deploykey.errors import UserError
from deploykey.install import Target
from deploykey.keys import Key
from deploykey.requirements import Requirements
from deploykey.scrub import Cleanup
from deploykey.sources import EnvSource

KEY_NAME = "DEPLOY_KEY"
DEFAULT_HOSTS = ("github.com", "gitlab.com", "bitbucket.org")


@dataclass(frozen=True)
class Plan:
    app_dir: Path
    cache_dir: Path | None
    env: EnvSource
    settings: Settings
    keys: tuple[Key, ...]
    tokens: tuple[Token, ...]
    requirements_file: Path
    requirements: Requirements
    hosts: tuple[HostConfig, ...]
    target: Target
    agent: str | None = None  # an ssh agent's socket, instead of keys (Docker `--mount=type=ssh`)
    kept: tuple[Path, ...] = ()  # more directories the build keeps (an install target)

    @property
    def outside(self) -> list[Path]:
        """Directories that are kept after the build: the key may never be written under them."""
        return [self.app_dir] + ([self.cache_dir] if self.cache_dir else []) + list(self.kept)


def read_keys(env: EnvSource, tokens: Sequence[Token] = (), agent: str | None = None) -> list[Key]:
    """DEPLOY_KEY and every DEPLOY_KEY_<NAME>; at least one of them, a token or an agent."""
    names = env.key_names()
    if not names and not tokens and not agent:
        raise UserError("key::missing", source=env.path, name=KEY_NAME)
    found = []
    for name in names:
        key = keys.load(env.get(name) or b"", name, env.describe(name))
        output.detail(f"{name}: {key.keytype} key {key.fingerprint}")
        for repair in key.repairs:
            output.detail(f"  repaired: {repair}")
        found.append(key)
    for token in tokens:
        output.detail(f"{token.name}: token for https://{token.host} (user {token.username})")
    return found


def read_requirements(app_dir: Path, settings: Settings) -> tuple[Path, Requirements]:
    from deploykey import requirements

    name = settings.get("DEPLOYKEY_REQUIREMENTS")
    return app_dir / name, requirements.read(app_dir, name)


def host_configs(
    found: Requirements, settings: Settings, requirements_file: Path
) -> tuple[HostConfig, ...]:
    """The hosts ssh is set up for: those the requirements name, those deploykey.yml configures,
    or the three pinned hosts when there are neither; each must have trusted host keys."""
    names = [host for host, _port in found.hosts]
    names += [name for name in settings.hosts if name not in names]
    if not names:
        names = list(DEFAULT_HOSTS)
    configs = tuple(settings.host(name) for name in names)
    for host in configs:
        if not host.trusted():
            where = next(
                (req.where for req in found.git if req.host == host.name),
                str(settings.config_file or requirements_file),
            )
            raise UserError("host::unknown", host=host.name, where=where)
    return configs


def plan(
    app_dir: Path,
    cache_dir: Path | None,
    env: EnvSource,
    settings: Settings,
    target: Target | None = None,
    agent: str | None = None,
) -> Plan:
    tokens = credentials.read(env, settings)
    found_keys = read_keys(env, tokens, agent)
    requirements_file, found = read_requirements(app_dir, settings)
    configs = host_configs(found, settings, requirements_file)
    if target is None:
        target = install.choose(app_dir, settings)
        if target.kind != "off" and not requirements_file.is_file():
            listing = ", ".join(sorted(p.name for p in app_dir.iterdir())[:20]) or "nothing"
            raise UserError("requirements::missing", file=requirements_file.name, listing=listing)
    return Plan(
        app_dir,
        cache_dir,
        env,
        settings,
        tuple(found_keys),
        tuple(tokens),
        requirements_file,
        found,
        configs,
        target,
        agent,
    )


def show_plan(plan: Plan, steps: Sequence[str]) -> None:
    """What a real run would do, with the files it would write (the checks follow)."""
    placeholder = Path(keydir.base_for(plan.outside), keydir.PREFIX + "XXXXXXXX")
    output.step("Plan")
    output.detail("Hosts:")
    for host in plan.hosts:
        trusted = ", ".join(f"{k.algorithm} {k.fingerprint}" for k in host.trusted())
        origin = "deploykey.yml" if host.known_hosts is not None else "pinned"
        output.detail(f"  {host.name} -> {host.address}; trusted host keys ({origin}): {trusted}")
        revoked = hosts.revoked_for(host.name)
        if revoked:
            output.detail(f"    revoked: {', '.join(k.fingerprint for k in revoked)}")
    output.detail("Keys:")
    for key in plan.keys:
        mapped = plan.settings.keys.get(key.name)
        how = (
            f"mapped to {', '.join(mapped)} (deploykey.yml)"
            if mapped
            else "routed by what its host says it opens"
        )
        if key.name == KEY_NAME and not mapped:
            how = "every repository no other key claims"
        output.detail(f"  {key.name} {key.keytype} {key.fingerprint}: {how}")
    for token in plan.tokens:
        output.detail(f"  {token.name}: token for https://{token.host} (user {token.username})")
    output.detail("Private git requirements:")
    for req in plan.requirements.git + plan.requirements.https:
        output.detail(f"  {req.where}: {req.remote}" + (f" @ {req.ref}" if req.ref else ""))
    if not plan.requirements.git and not plan.requirements.https:
        output.detail(f"  none found in {plan.requirements_file.name}")
    output.detail(f"Key dir: {placeholder} (0700), each key 0600; ssh config:")
    for line in sshconfig.render_config(plan.hosts, plan.keys, placeholder).splitlines():
        output.detail("  | " + line)
    output.detail(f"Install: {plan.target.describe(plan.settings)}")
    if plan.target.relative is not None:
        chosen = plan.settings.get("DEPLOYKEY_INSTALLER")
        pinned = "" if chosen == "pip" else ", each checked ref pinned to its commit (uv)"
        output.detail(f"  with {chosen}: {plan.requirements_file}{pinned}")
    for step in steps:
        output.detail(step)
    output.detail(f"Scrub: remove {placeholder} and everything listed above as written")
    roots = " and ".join(str(p) for p in plan.outside)
    output.detail(f"Leak check: scan {roots} for the keys and tokens")


def open_access(plan: Plan, cleanup: Cleanup, directory: keydir.KeyDir | None = None) -> Access:
    """The key dir (a new temp dir, or the one given), and the routes learnt from each key's
    greeting; `cleanup` removes it."""
    if directory is None:
        for stale, reason in keydir.sweep():
            output.detail(f"removed {stale}, {reason}")
        directory = keydir.create(plan.outside)
    opened = access.open(
        directory,
        plan.hosts,
        plan.keys,
        plan.tokens,
        dict(plan.settings.keys),
        plan.requirements,
        plan.agent,
    )
    cleanup.add(f"the key dir {opened.key_dir}", directory.remove)
    for route in opened.routes:
        output.detail(f"route: {route.describe()} -> {route.key.name}")
    return opened


def check(plan: Plan, opened: Access) -> list[doctor.Finding]:
    """Every private requirement fetched once (`git ls-remote`): fails before anything is installed."""
    findings = doctor.check(plan.requirements, opened, plan.tokens, plan.settings)
    doctor.report(findings)
    return findings


def install_cycle(
    plan: Plan,
    where: str,
    install_into: Callable[[install.Job, Cleanup], None],
    scanned: Sequence[Path],
    cache: Path | None,
    user: bool = False,
) -> None:
    """The whole cycle in one process: open access, check every requirement, install (uv or pip,
    its cache in `cache`, the build cache), then ALWAYS scrub and scan `scanned`, also when
    something failed or a signal came; a leak is reported even when the install failed, and
    fails the build."""
    import tempfile

    from deploykey import installer, scrub

    cleanup = Cleanup()
    key_dir: Path | None = None
    failure: BaseException | None = None
    try:
        with scrub.guarded(cleanup):
            output.step("Setting up access: keys, ssh routes, tokens")
            opened = open_access(plan, cleanup)
            key_dir = opened.key_dir
            output.step("Checking every private requirement")
            findings = check(plan, opened)
            if cache is None:
                cache = Path(tempfile.mkdtemp(prefix="deploykey-cache-"))
                cleanup.add(
                    f"the temporary cache {cache}",
                    lambda: shutil.rmtree(str(cache), ignore_errors=True),
                )
            chosen = installer.choose(
                plan.settings.get("DEPLOYKEY_INSTALLER"),
                cache,
                plan.requirements.editable_vcs,
                user,
            )
            pins = doctor.pins(findings) if chosen.name == "uv" else []
            overrides = opened.key_dir / "overrides.txt" if pins else None
            if overrides is not None:
                overrides.write_text("".join(line + "\n" for line in pins))
            env = chosen.env(pip_env(plan, opened))
            job = install.Job(chosen, plan.requirements_file, env, plan.app_dir, opened, overrides)
            output.step(f"Installing {plan.requirements_file.name} into {where} with {chosen.name}")
            install_into(job, cleanup)
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the leak check
        failure = exc
    output.step("Removing the keys and the ssh config")
    report_scrub(cleanup, key_dir)
    output.step("Checking what the build keeps for the keys")
    leak = leak_check(scanned, plan.keys, plan.tokens)
    if failure is not None:
        if leak is not None:
            output.error(leak)
        raise failure
    if leak is not None:
        raise leak
    output.step("Done: private dependencies installed; the keys are gone")


def checked(plan: Plan) -> None:
    """Open access in a temporary key dir, check every private requirement, remove the key dir:
    the doctor, and compile's dry run."""
    from deploykey import scrub

    cleanup = Cleanup()
    with scrub.guarded(cleanup):
        output.step("Learning what each key opens")
        opened = open_access(plan, cleanup)
        output.step("Checking every private requirement")
        check(plan, opened)
    output.step("All private requirements can be fetched")


def pip_env(plan: Plan, opened: Access) -> dict[str, str]:
    """pip's environment: the allow-list, the user's PIP_*/UV_* config vars, the git settings."""
    from deploykey.childenv import child_env

    extra = {
        name: value.decode("utf-8", "replace").strip()
        for name, value in plan.env.values.items()
        if name.startswith(("PIP_", "UV_")) and name not in os.environ
    }
    extra.update(opened.env())
    return child_env(extra)


def report_scrub(cleanup: Cleanup, removed_dir: Path | None) -> None:
    for what in cleanup.done:
        output.detail(f"removed {what}")
    if removed_dir is not None and removed_dir.exists():
        raise RuntimeError(f"{removed_dir} still exists after the scrub")


def leak_check(
    roots: Sequence[Path],
    found_keys: Sequence[Key],
    tokens: Sequence[Token] = (),
    strict: bool = False,
) -> UserError | None:
    """Scan the kept directories for the keys and tokens; a UserError naming the files if found.
    Another private key (a package's test key, say) fails only a `strict` scan (`deploykey
    scan`); a build warns about it: only the build's own keys and tokens are its to guard."""
    import time

    existing = [root for root in roots if root.exists()]
    began = time.monotonic()
    report = scan.scan(existing, found_keys, {token.name: token.value for token in tokens})
    seconds = time.monotonic() - began
    size = report.size / 1_000_000
    what = ", ".join([key.fingerprint for key in found_keys] + [token.name for token in tokens])
    output.detail(
        f"scanned {report.files} files ({size:.1f} MB) in {', '.join(map(str, existing))} for "
        f"{what or 'other private keys and URL credentials'} in {seconds:.1f} s "
        f"({report.processes} {'process' if report.processes == 1 else 'processes'}, {report.engine})"
    )
    if report.engine == scan.PYTHON_SEARCH:
        output.detail(
            "ahocorasick-rs is not installed for this Python (no wheel for this platform?): "
            "the scan searched with Python alone, several times slower"
        )
    for path in report.unreadable:
        output.warn(f"could not read {path}: it was not checked")
    failing = [hit for hit in report.hits if strict or hit.is_ours]
    for hit in report.hits:
        if hit not in failing:
            output.warn(
                f"{hit.path}: {hit.kind} ({hit.label}); not this build's, so not failing it"
            )
    if not failing:
        output.detail("no key material found")
        return None
    files = sorted({f"{hit.path} ({hit.kind}, {hit.label})" for hit in failing})
    return UserError("leak::found", count=len(files), files="\n".join(files))
