"""The cycle every platform runs: read the key, plan, open ssh, (install), scrub, prove nothing leaked.

Platform modules (heroku, apphooks) decide where things come from and which steps run; this module
holds the steps themselves, each a function a platform calls under a step header.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey import hosts, install, keydir, keys, output, scan, sshconfig
from deploykey.config import HostConfig, Settings
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
    key: Key
    requirements_file: Path
    requirements: Requirements
    hosts: tuple[HostConfig, ...]
    target: Target

    @property
    def outside(self) -> list[Path]:
        """Directories that are kept after the build: the key may never be written under them."""
        return [self.app_dir] + ([self.cache_dir] if self.cache_dir else [])


def read_key(env: EnvSource, name: str = KEY_NAME) -> Key:
    value = env.get(name)
    if value is None:
        raise UserError("key::missing", source=env.path, name=name)
    key = keys.load(value, name, env.describe(name))
    output.detail(f"{name}: {key.keytype} key {key.fingerprint}")
    for repair in key.repairs:
        output.detail(f"  repaired: {repair}")
    return key


def read_requirements(app_dir: Path, settings: Settings) -> tuple[Path, Requirements]:
    from deploykey import requirements

    name = settings.get("DEPLOYKEY_REQUIREMENTS")
    found = requirements.read(app_dir, name)
    if found.problems:
        raise found.problems[0]
    return app_dir / name, found


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
) -> Plan:
    key = read_key(env)
    requirements_file, found = read_requirements(app_dir, settings)
    configs = host_configs(found, settings, requirements_file)
    if target is None:
        target = install.choose(app_dir, settings)
        if target.kind != "off" and not requirements_file.is_file():
            listing = ", ".join(sorted(p.name for p in app_dir.iterdir())[:20]) or "nothing"
            raise UserError("requirements::missing", file=requirements_file.name, listing=listing)
    return Plan(app_dir, cache_dir, env, settings, key, requirements_file, found, configs, target)


def show_plan(plan: Plan, steps: Sequence[str]) -> None:
    """What a real run would do, with the files it would write; nothing is written."""
    placeholder = Path(keydir.base_for(plan.outside), keydir.PREFIX + "XXXXXXXX")
    output.step("Plan (dry run: nothing is written)")
    output.detail("Hosts:")
    for host in plan.hosts:
        trusted = ", ".join(f"{k.algorithm} {k.fingerprint}" for k in host.trusted())
        origin = "deploykey.yml" if host.known_hosts is not None else "pinned"
        output.detail(f"  {host.name} -> {host.address}; trusted host keys ({origin}): {trusted}")
        revoked = hosts.revoked_for(host.name)
        if revoked:
            output.detail(f"    revoked: {', '.join(k.fingerprint for k in revoked)}")
    output.detail("Private git requirements:")
    for req in plan.requirements.git or []:
        output.detail(
            f"  {req.where}: {req.host}/{req.repo}" + (f" @ {req.ref}" if req.ref else "")
        )
    if not plan.requirements.git:
        output.detail(f"  none found in {plan.requirements_file.name}")
    output.detail(
        f"Key file: {placeholder}/{sshconfig.identity_name(plan.key)} (mode 0600, dir 0700)"
    )
    output.detail(f"ssh config: {placeholder}/{sshconfig.CONFIG}")
    for line in sshconfig.render_config(plan.hosts, plan.key, placeholder).splitlines():
        output.detail("  | " + line)
    output.detail(f"Install: {plan.target.describe(plan.settings)}")
    if plan.target.relative is not None:
        app_path = Path(plan.settings.get("DEPLOYKEY_APP_PATH"), plan.target.relative)
        argv = install.command(
            app_path / "bin" / "python", plan.requirements_file, app_path / "src"
        )
        output.detail("  $ " + " ".join(argv))
    for step in steps:
        output.detail(step)
    output.detail(f"Scrub: remove {placeholder} and everything listed above as written")
    roots = " and ".join(str(p) for p in plan.outside)
    output.detail(f"Leak check: scan {roots} for the key ({plan.key.fingerprint})")


def open_ssh(plan: Plan, cleanup: Cleanup) -> sshconfig.Setup:
    setup = sshconfig.create(plan.hosts, plan.key, plan.outside)
    cleanup.add(f"the key dir {setup.key_dir}", lambda: keydir.KeyDir(setup.key_dir).remove())
    output.detail(f"Key and ssh config in {setup.key_dir} (outside the app and the cache)")
    verify_hosts(plan, setup)
    return setup


def verify_hosts(plan: Plan, setup: sshconfig.Setup) -> None:
    """One `ssh -T` per host the requirements use: host key and key acceptance, before pip runs."""
    users: dict[str, str | None] = {}
    for req in plan.requirements.git:
        users.setdefault(req.host, req.user)
    for host in plan.hosts:
        if host.name not in users:
            continue
        greeting = sshconfig.verify(setup, host, users[host.name], plan.key)
        server_key = (
            f"host key {greeting.server_key} verified"
            if greeting.server_key
            else "host key verified"
        )
        output.detail(
            f"{host.name} ({host.address}): {server_key}; {greeting.message or 'key accepted'}"
        )


def pip_env(plan: Plan, setup: sshconfig.Setup) -> dict[str, str]:
    """pip's environment: the allow-list, the user's PIP_*/UV_* config vars, the ssh command."""
    from deploykey.childenv import child_env

    extra = {
        name: value.decode("utf-8", "replace").strip()
        for name, value in plan.env.values.items()
        if name.startswith(("PIP_", "UV_")) and name not in os.environ
    }
    extra["GIT_SSH_COMMAND"] = setup.command
    return child_env(extra)


def report_scrub(cleanup: Cleanup, removed_dir: Path | None) -> None:
    for what in cleanup.done:
        output.detail(f"removed {what}")
    if removed_dir is not None and removed_dir.exists():
        raise RuntimeError(f"{removed_dir} still exists after the scrub")


def leak_check(roots: Sequence[Path], key: Key) -> UserError | None:
    """Scan the kept directories for the key; a UserError naming the files if it is there."""
    existing = [root for root in roots if root.exists()]
    report = scan.scan(existing, [key])
    size = report.size / 1_000_000
    output.detail(
        f"scanned {report.files} files ({size:.1f} MB) in {', '.join(map(str, existing))} for {key.fingerprint}"
    )
    for path in report.unreadable:
        output.warn(f"could not read {path}: it was not checked")
    if not report.hits:
        output.detail("no key material found")
        return None
    files = sorted({f"{hit.path} ({hit.kind})" for hit in report.hits})
    return UserError("leak::found", count=len(files), files="\n".join(files))
