"""The cycle every platform runs: read the keys, plan, open access, check, (install), scrub, scan.

Platform modules (heroku, apphooks, cli's doctor) decide where things come from and which steps
run; this module holds the steps themselves, each a function a platform calls under a step header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deploykey.core import output, permissions, run, trust
from deploykey.core.errors import UserError
from deploykey.core.sources import EnvSource
from deploykey.fetch import mirrors
from deploykey.fetch.mirrors import Mirrors
from deploykey.installers import install, installer
from deploykey.installers.install import Target
from deploykey.installers.installer import Choice
from deploykey.leak import scan
from deploykey.leak.scrub import Cleanup
from deploykey.manifests.requirements import GitRequirement, Requirements
from deploykey.secrets import credentials, githubapp, hosts, keydir, keys
from deploykey.secrets.config import HostConfig, Settings
from deploykey.secrets.credentials import Token
from deploykey.secrets.keys import Key

if TYPE_CHECKING:
    # Imported where the fetch, the doctor and a dry run's plan use them: a warm build that
    # restores its kept environment fetches nothing, and importing them (the ssh agent, routing,
    # ssh config, socket) was 12-17 ms of its start-up (python3 -X importtime).
    from deploykey.fetch import doctor
    from deploykey.fetch.access import Access

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
    choice: Choice | None = None  # the package manager, when deploykey installs
    app: githubapp.App | None = None  # a GitHub App that mints tokens for the build

    @property
    def secret_keys(self) -> tuple[Key, ...]:
        """What the leak check looks for: the keys, and the App's private key."""
        return self.keys + ((self.app.key,) if self.app else ())

    @property
    def secret_tokens(self) -> tuple[Token, ...]:
        """The tokens, and those the App minted (filled in by the fetch)."""
        return self.tokens + (tuple(self.app.minted) if self.app else ())

    @property
    def outside(self) -> list[Path]:
        """Directories that are kept after the build: the key may never be written under them."""
        return [self.app_dir] + ([self.cache_dir] if self.cache_dir else []) + list(self.kept)


def read_keys(
    env: EnvSource,
    tokens: Sequence[Token] = (),
    agent: str | None = None,
    app: githubapp.App | None = None,
) -> list[Key]:
    """DEPLOY_KEY and every DEPLOY_KEY_<NAME>; at least one of them, a token, an agent or an App."""
    names = env.key_names()
    if not names and not tokens and not agent and not app:
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
    if app is not None:
        output.detail(f"{githubapp.PRIVATE_KEY}: {app.describe()}")
    return found


def read_requirements(app_dir: Path, settings: Settings) -> tuple[Path, Requirements]:
    """The requirements file to install (DEPLOYKEY_REQUIREMENTS), and the private git dependencies
    of every manifest and lockfile the app has, that file included (see manifests/)."""
    from deploykey import manifests
    from deploykey.manifests import requirements

    name = settings.get("DEPLOYKEY_REQUIREMENTS")
    path = app_dir / name
    found = manifests.read_all(app_dir)
    if path.is_file() and requirements.label(app_dir, path) not in found.files:
        found = manifests.merge([found, manifests.read_file(app_dir, path)])
    return path, found


def _not_a_file(path: Path, name: str) -> None:
    """A requirements file that is there but is no file: say what it is (not 'no requirements.txt'
    while the listing shows one)."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.txt") if p.is_file())
        example = f" (e.g. {name}/{inside[0]})" if inside else ""
        raise UserError("requirements::not-a-file", file=name, kind="a directory", example=example)
    if path.is_symlink() and not path.exists():
        kind = f"a symbolic link to {path.readlink()}, which does not exist"
        raise UserError("requirements::not-a-file", file=name, kind=kind, example="")
    if path.exists():
        kind = "neither a file nor a directory"
        raise UserError("requirements::not-a-file", file=name, kind=kind, example="")


def looked_for(env: EnvSource, settings: Settings) -> tuple[list[Key], list[Token]] | None:
    """What a scan after the fetch looks for, in a process of its own (post_compile, the CNB
    scan post-group, `deploykey scan`): the keys, the tokens, the App's private key; None when
    the build has none of them. (The App's minted tokens were revoked where they were minted.)"""
    tokens = credentials.read(env, settings)
    # The id alone is no secret: left where the key was removed from (Heroku's ENV_DIR).
    app = githubapp.read(env, settings) if env.get(githubapp.PRIVATE_KEY) else None
    if not env.key_names() and not tokens and app is None:
        return None
    found = read_keys(env, tokens, app=app)
    return found + ([app.key] if app else []), tokens


def host_configs(
    found: Requirements,
    settings: Settings,
    requirements_file: Path,
    app: githubapp.App | str | None = None,
) -> tuple[HostConfig, ...]:
    """The hosts ssh is set up for: those the requirements name, those deploykey.yml configures,
    or the three pinned hosts when there are neither; each must have trusted host keys. Not the
    GitHub App's host: every repository there is fetched over HTTPS (its ssh URLs too), so ssh
    never connects to it and no host key of it is needed (`app` may be just its host name: an
    install from what an earlier step fetched has no App key, and runs no ssh)."""
    served = app.host if isinstance(app, githubapp.App) else app
    names = [host for host, _port in found.hosts if host != served]
    names += [name for name in settings.hosts if name not in names]
    if not names and served is None:
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


# The targets deploykey installs into itself (`off` hands the install to another tool).
INSTALLING = ("python", "venv", "docker")


def plan(
    app_dir: Path,
    cache_dir: Path | None,
    env: EnvSource,
    settings: Settings,
    target: Target | None = None,
    agent: str | None = None,
    given: str | None = None,
    keyless: bool = False,
) -> Plan:
    """What the build will do, everything checked that can be before the fetch: the keys, the
    manifests, the hosts, and (when deploykey installs) the package manager. `given` names the
    option that chose the requirements file (`-r`), when it was not DEPLOYKEY_REQUIREMENTS.
    `keyless`: an install from what an earlier step fetched, which must have no key at all."""
    tokens = credentials.read(env, settings)
    if keyless:
        app = None
        app_key = [githubapp.PRIVATE_KEY] if env.get(githubapp.PRIVATE_KEY) else []
        if env.key_names() or tokens or agent or app_key:
            names = (
                ", ".join([*env.key_names(), *(t.name for t in tokens), *app_key]) or "an ssh agent"
            )
            raise UserError("fetch::key-present", names=names)
        found_keys: list[Key] = []
    else:
        app = githubapp.read(env, settings)
        found_keys = read_keys(env, tokens, agent, app)
    requirements_file, found = read_requirements(app_dir, settings)
    for problem in found.problems:
        # An ssh option in disguise, or a path or ref that git or the mirror would take for
        # something else: before any ssh or git runs.
        if problem.slug in ("requirements::ssh-user", "requirements::unsafe"):
            raise problem
    served = settings.github_app.host if keyless else app
    configs = host_configs(found, settings, requirements_file, served)
    if app is not None and any(host == app.host for host, _port in found.hosts):
        output.detail(
            f"{app.host}: no ssh (every repository there is fetched over HTTPS with the App's "
            "installation tokens, its ssh URLs too): no host key needed"
        )
    if target is None:
        target = install.choose(app_dir, settings)
    choice = None
    if target.kind in INSTALLING:
        if given is None and "DEPLOYKEY_REQUIREMENTS" in settings.given:
            given = "DEPLOYKEY_REQUIREMENTS"
        choice = installer.decide(app_dir, requirements_file, given)
        if not choice.locked and not requirements_file.is_file():
            _not_a_file(requirements_file, settings.get("DEPLOYKEY_REQUIREMENTS"))
            listing = ", ".join(sorted(p.name for p in app_dir.iterdir())[:20]) or "nothing"
            name = settings.get("DEPLOYKEY_REQUIREMENTS")
            raise UserError("requirements::missing", file=name, listing=listing)
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
        choice=choice,
        app=app,
    )


def show_plan(plan: Plan, steps: Sequence[str], kit_cache: Path | None = None) -> None:
    """What a real run would do, with the files it would write (the checks follow)."""
    from deploykey.secrets import sshconfig

    chosen = keydir.where(plan.outside)
    placeholder = chosen.path.with_name(keydir.PREFIX + "XXXXXXXX")
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
    if plan.app is not None:
        output.detail(
            f"  {githubapp.PRIVATE_KEY}: {plan.app.describe()}: mints a token per installation "
            f"for the repositories on {plan.app.host} (contents: read), revoked after the fetch"
        )
    output.detail("Private git requirements:")
    for req in plan.requirements.git + plan.requirements.https:
        output.detail(f"  {req.where}: {req.remote}" + (f" @ {req.ref}" if req.ref else ""))
    if not plan.requirements.git and not plan.requirements.https:
        output.detail(f"  none found in {plan.requirements_file.name}")
    why = f" ({'; '.join(chosen.passed_over)})" if chosen.passed_over else ""
    held = (
        "each key in an ssh agent of the build's own, its socket there"
        if plan.keys
        else "no key or token in a file"
    )
    output.detail(f"Key dir: {placeholder} (0700), {held}{why}; ssh config:")
    for line in sshconfig.render_config(plan.hosts, plan.keys, placeholder).splitlines():
        output.detail("  | " + line)
    output.detail(f"Install: {plan.target.describe(plan.settings)}")
    if plan.choice is not None:
        setting = plan.settings.get("DEPLOYKEY_INSTALLER")
        output.detail(f"  package manager: {plan.choice.shown} ({plan.choice.reason})")
        runs = installer.planned(plan.choice, setting, kit_cache, plan.requirements.editable_vcs)
        output.detail(f"  runs: {runs}")
    for step in steps:
        output.detail(step)
    output.detail(f"Scrub: remove {placeholder} and everything listed above as written")
    roots = " and ".join(str(p) for p in plan.outside)
    output.detail(f"Leak check: scan {roots} for the keys and tokens")


def open_access(plan: Plan, cleanup: Cleanup, directory: keydir.KeyDir | None = None) -> Access:
    """The key dir (a new temp dir, or the one given), and the routes learnt from each key's
    greeting; `cleanup` removes it."""
    from deploykey.fetch import access

    if directory is None:
        for stale, reason in keydir.sweep():
            output.detail(f"removed {stale}, {reason}")
        directory = keydir.create(plan.outside)
        for reason in directory.passed_over:
            output.detail(f"{reason}: the key dir is {directory.path} instead")
    opened = access.open(
        directory,
        plan.hosts,
        plan.keys,
        plan.tokens,
        dict(plan.settings.keys),
        plan.requirements,
        plan.agent,
        plan.app,
    )
    cleanup.add(f"the key dir {opened.key_dir}", directory.remove)
    if opened.app is not None:
        # Before the key dir goes (last added, first run): revoked also on failure or a signal.
        cleanup.add("the GitHub App's installation tokens (revoked)", opened.app.revoke)
    for route in opened.routes:
        output.detail(f"route: {route.describe()} -> {route.key.name}")
    return opened


def fetch(plan: Plan, root: Path) -> tuple[Mirrors, list[doctor.Finding]]:
    """Phase 1, with the keys: open access, fetch every private repository the app needs (and what
    their fetched commits name in turn) into mirrors under `root`. Phase 2: remove the keys,
    always, also on failure or a signal: nothing that runs after this can read them."""
    from deploykey.fetch import doctor
    from deploykey.leak import scrub

    cleanup = Cleanup()
    key_dir: Path | None = None
    fetcher: mirrors.Fetcher | None = None
    try:
        with scrub.guarded(cleanup):
            output.step("Fetching every private repository (the only step that has the keys)")
            # A deadline and a byte limit for all of it: a host that keeps talking is never cut
            # by ssh's ServerAlive or git's http.lowSpeedLimit, which end silence only.
            seconds = plan.settings.amount("DEPLOYKEY_FETCH_TIMEOUT")
            with run.bounded(seconds, plan.settings.amount("DEPLOYKEY_FETCH_MAX_SIZE")):
                opened = open_access(plan, cleanup)
                key_dir = opened.key_dir
                git = run.which("git", "fetch git dependencies")
                seal = mirrors.SealKey.derive(seal_secrets(plan))
                fetcher = mirrors.Fetcher(
                    git, opened.env(), root, seal, partial_ok(plan), shallow_ok(plan)
                )
                findings = doctor.check(
                    plan.requirements, opened, plan.tokens, plan.settings, fetcher
                )
            fetcher.prune()
            for path, why in fetcher.discarded:
                said = f"discarded the cached mirror {path}: {why}, so it was fetched again"
                # Expected every build with an agent only: a detail, not a warning.
                (output.detail if why == mirrors.AGENT_ONLY else output.warn)(said)
            for path, why in fetcher.removed:
                output.warn(f"removed {path} from the build cache: {why} (build code?)")
            doctor.report(findings)
            _untampered(keydir.KeyDir(opened.key_dir), fetcher)
    finally:
        if fetcher is not None:
            fetcher.tidy()
        if key_dir is not None:
            output.step("Removing the keys: nothing that runs after this can read them")
            report_scrub(cleanup, key_dir)
    assert fetcher is not None
    # Mirrors kept in a build cache are <kit cache>/mirrors, beside the installers' tools and
    # caches; a temporary root (the doctor, a dry run, CI setup without a cache) has none.
    kit = root.parent if root.name == mirrors.DIR else None
    ident = fetcher.seal.ident if fetcher.seal else None
    dropped = installer.rekey(kit, ident) if kit is not None else []
    if dropped:
        output.detail(
            f"dropped the installers' tools and caches kept under another key (or none): "
            f"{', '.join(dropped)} in {kit}"
        )
    fetched = mirrors_of(plan, fetcher, findings)
    refused = mirrors.planted(fetcher.git, fetched)
    if refused is not None:
        raise refused
    return fetched, findings


def partial_ok(plan: Plan) -> bool:
    """Whether the installer is sure to read a partial mirror (history without its files, and
    every file of what is checked out): pip clones with `--filter=blob:none` (Pipenv's is pip
    too), and uv's fetch asks for the same filter when its URL is a promisor remote
    (`Mirrors.promisors`). Poetry's system git client runs `git clone --recurse-submodules --
    <url>` (python-poetry/poetry src/poetry/vcs/git/system.py, SystemGit.clone), which takes no
    filter from config (git 2.39 builtin/clone.c: `--filter` only) and needs every file of the
    history from a partial mirror: Poetry gets a shallow one (`shallow_ok`), and an installer
    not known here a full one."""
    choice = plan.choice
    return choice is not None and choice.manager in ("pip", "pipenv", "uv")


def shallow_ok(plan: Plan) -> bool:
    """Whether the installer is Poetry, whose system git client (deploykey sets
    POETRY_SYSTEM_GIT_CLIENT, `Mirrors.env`) runs `git clone --recurse-submodules -- <url>` then
    `git checkout <the lock's commit>` (python-poetry/poetry src/poetry/vcs/git/system.py,
    SystemGit; backend.py, Git._clone_legacy): git clones a shallow repository into a shallow
    clone (git-clone(1), "--depth"; upload-pack stops at the `shallow` commits), and the
    checkout needs nothing but the commit: so a shallow mirror, the commits asked for with
    their trees and no history (`Fetcher._shallow_fetch`), serves it."""
    choice = plan.choice
    return choice is not None and choice.manager == "poetry"


def seal_secrets(plan: Plan) -> list[bytes]:
    """What the mirrors' seal key is derived from: the build's own long-lived secrets, which no
    build code ever had (the keys, the App's private key, the tokens; not the tokens the App
    mints, which change every build). An ssh agent's key never reaches deploykey: with an agent
    only, there is none, and no cached mirror is trusted (each is fetched again)."""
    return secrets_of(plan.secret_keys, plan.tokens)


def secrets_of(found_keys: Sequence[Key], tokens: Sequence[Token]) -> list[bytes]:
    """The keys' and tokens' secrets: what seal keys are derived from (see seal_secrets)."""
    return [key.material for key in found_keys] + [token.value for token in tokens]


def _untampered(directory: keydir.KeyDir, fetcher: mirrors.Fetcher) -> None:
    """Fail the build if something other than deploykey changed the key dir while the fetch ran
    (a process of this user left running by an earlier build's code can: ssh and git would have
    obeyed its settings); what this fetch put in the mirrors is then discarded, never installed."""
    changed = directory.changed()
    if not changed:
        return
    for path in fetcher.fetched:
        fetcher.discard(path)  # and its seal: the next build fetches it again
    raise UserError(
        "keydir::tampered",
        path=directory.path,
        files=", ".join(changed),
        mirrors=", ".join(str(path) for path in sorted(fetcher.fetched)) or "none",
    )


def mirrors_of(plan: Plan, fetcher: mirrors.Fetcher, findings: Sequence[doctor.Finding]) -> Mirrors:
    """What was fetched, and the private hosts whose other URLs must fail fast."""
    reqs = [f.requirement for f in findings if f.ok and f.requirement is not None]
    # Every requirement the app names is among `reqs`: the fetch failed otherwise.
    private = {
        ("ssh", req.host_port.replace(req.host, name, 1))
        for req in reqs
        if req.scheme == "ssh"
        for name in req.written_hosts
    }
    private |= {("https", token.host) for token in plan.tokens}
    repositories = tuple((req, path) for path, req in sorted(fetcher.fetched.items()))
    submodules = any(".gitmodules" in req.file for req in reqs)
    for req, path in repositories:
        output.detail(f"mirror: {req.host_port}/{req.repo} -> {path.parent}")
    return Mirrors(fetcher.root, repositories, tuple(sorted(private)), submodules)


RECORD = (
    "fetched.json"  # in the cache: what `deploykey fetch` left for `deploykey install --fetched`
)
SCAN_RECORD = "scan-record"  # in the cache: what the last leak check read and found clean


def scan_record(
    secrets: Sequence[bytes], cache: Path, name: str = SCAN_RECORD
) -> scan.Record | None:
    """The leak check's record in the kit's part of the build cache, sealed with a key derived
    from the build's own secrets like the mirrors' seals, with a label of its own (HMAC as
    HKDF-Expand, RFC 5869: a key for one use tells nothing of the other). None without such a
    secret (an ssh agent only): every file is read."""
    seal = mirrors.SealKey.derive(secrets)
    if seal is None:
        return None
    key = hmac.new(seal.mac, b"deploykey/scan-record/v1\x01", hashlib.sha256).digest()
    return scan.Record(cache / name, key, seal.ident)


def _wanted(plan: Plan) -> list[list[str]]:
    """The private requirements as the app names them: a record is for these and no others."""
    reqs = plan.requirements.git + plan.requirements.https
    return sorted([req.url, req.ref or "", req.commit or "", req.fragment] for req in reqs)


def write_record(
    cache: Path, plan: Plan, fetched: Mirrors, findings: Sequence[doctor.Finding]
) -> Path:
    """What the fetch left in the cache, for an install that runs later without the keys (a
    second Docker RUN, with no secret mounted): the mirrors, the pins, and what they are for."""
    from deploykey.fetch import doctor

    record = {
        "wanted": _wanted(plan),
        "root": str(fetched.root),
        "repositories": [
            [dataclasses.asdict(req), str(path)] for req, path in fetched.repositories
        ],
        "private_hosts": [list(pair) for pair in fetched.private_hosts],
        "submodules": fetched.submodules,
        "pins": doctor.pins(findings),
    }
    path = cache / RECORD
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(json.dumps(record, indent=1))
    temporary.replace(path)
    return path


def read_record(cache: Path, plan: Plan) -> tuple[Mirrors, list[str]]:
    """The mirrors and pins `deploykey fetch` recorded in this cache for exactly these
    requirements; every mirror must hold every commit it names. The mirrors are taken where the
    cache is now: a cache the fetch filled elsewhere (on the user's machine, then mounted into a
    CNB build at another path) names them under the root it had there."""
    path = cache / RECORD
    root = cache / mirrors.DIR
    try:
        record = json.loads(path.read_text())
        wanted, pins = record["wanted"], [str(pin) for pin in record["pins"]]
        was = Path(record["root"])
        fetched = Mirrors(
            root,
            tuple(
                (GitRequirement(**req), root / _under(Path(where), was))
                for req, where in record["repositories"]
            ),
            tuple((str(scheme), str(host)) for scheme, host in record["private_hosts"]),
            bool(record["submodules"]),
        )
    except FileNotFoundError:
        raise UserError("fetch::missing", path=path) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError("fetch::stale", path=path, detail=f"it cannot be read ({exc})") from None
    if wanted != _wanted(plan):
        raise UserError(
            "fetch::stale",
            path=path,
            detail="it was written for other requirements than the app has now",
        )
    git = run.which("git", "install from the mirrors")
    for req, mirror in fetched.repositories:
        if not mirror.is_relative_to(fetched.root) or not mirror.is_dir():
            raise UserError("fetch::stale", path=path, detail=f"{mirror} is not a mirror there")
        output.detail(f"mirror: {req.host_port}/{req.repo} -> {mirror.parent}")
    for pin in pins:
        commit = pin.rsplit("@", 1)[1].split("#")[0]
        names = [m for r, m in fetched.repositories if r.name and pin.startswith(f"{r.name} @")]
        if names and not mirrors.holds_commit(git, names[0], commit):
            raise UserError("fetch::stale", path=path, detail=f"{names[0]} lacks {commit}")
    refused = mirrors.planted(git, fetched)
    if refused is not None:
        raise refused
    return fetched, pins


def _under(path: Path, root: Path) -> Path:
    """`path` relative to `root`; a path outside it (a record written by hand) is not a mirror."""
    if not path.is_relative_to(root) or ".." in path.parts:
        raise ValueError(f"{path} is not under {root}")
    return path.relative_to(root)


def install_cycle(
    plan: Plan,
    where: str,
    install_into: Callable[[install.Job, Cleanup], None],
    scanned: Sequence[Path],
    cache: Path | None,
    user: bool = False,
    recorded: tuple[Mirrors, list[str]] | None = None,
    venv: Path | None = None,
) -> None:
    """The whole cycle in one process: fetch every private repository into mirrors in `cache`
    (the build cache) with the keys, remove the keys, install (with the package manager
    `plan.choice` names: uv or pip for a requirements file, uv, Poetry or Pipenv for a lockfile;
    from the mirrors, its cache in `cache` too), then ALWAYS scan `scanned`, also when something
    failed or a signal came; a leak is reported even when the install failed, and fails the
    build. `venv`: where `install_into` makes a new environment (`install.into(venv, True,
    job)`), when the caller knows: a lockfile's kept environment for it is restored with no
    fetch (kept_first)."""
    import tempfile

    from deploykey.leak import scrub

    cleanup = Cleanup()
    failure: BaseException | None = None
    record = scan_record(seal_secrets(plan), cache) if cache is not None else None
    keep = cache is not None  # a build cache, which later builds see (not a temporary one)
    try:
        with scrub.guarded(cleanup):
            if cache is None:
                cache = Path(tempfile.mkdtemp(prefix="deploykey-cache-"))
                temporary = cache
                cleanup.add(
                    f"the temporary cache {cache}",
                    lambda: shutil.rmtree(str(temporary), ignore_errors=True),
                )
            bundle = installer_bundle(cleanup)  # once: the kept environment's digest reads it
            ready = recorded is None and keep and venv is not None
            kept = kept_first(plan, cache, venv, bundle) if ready and venv is not None else None
            if kept is not None:  # nothing to fetch: the environment is restored
                fetched, pinned = kept, []
            elif recorded is None:
                from deploykey.fetch import doctor

                fetched, findings = fetch(plan, cache / mirrors.DIR)
                pinned = doctor.pins(findings)
            else:  # fetched by an earlier step (`deploykey fetch`): no key here at all
                fetched, pinned = recorded
            choice = plan.choice
            assert choice is not None, "plan() chooses the package manager for an install"
            setting = plan.settings.get("DEPLOYKEY_INSTALLER")
            if choice.locked:
                chosen = installer.for_lockfile(choice, setting, cache)
            else:
                chosen = installer.choose(setting, cache, plan.requirements.editable_vcs, user)
            # A lockfile pins its commits itself; uv's requirements install is pinned here.
            pins = pinned if chosen.name == "uv" and not choice.locked else []
            overrides = cache / "overrides.txt" if pins else None
            if overrides is not None:
                overrides.write_text("".join(line + "\n" for line in pins))
            env = chosen.env(pip_env(plan, fetched, bundle))
            job = install.Job(
                chosen, choice.file, env, plan.app_dir, fetched, overrides, keep, kept is not None
            )
            how = f"{chosen.name} sync" if chosen.name == "uv" and choice.locked else chosen.shown
            if kept is not None:
                output.step(
                    f"Restoring {where} as {chosen.shown} made it from {choice.file.name} in an "
                    "earlier build: nothing to fetch, nothing runs"
                )
            else:
                output.step(
                    f"Installing {choice.file.name} into {where} with {how} ({choice.reason}), "
                    "from the mirrors, with no key on the machine"
                )
            install_into(job, cleanup)
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the leak check
        failure = exc
    for what in cleanup.done:
        output.detail(f"removed {what}")
    if failure is None and keep:
        plan.settings.keep_parse()
    output.step("Checking what the build keeps for the keys")
    leak = leak_check(scanned, plan.secret_keys, plan.secret_tokens, plan.settings, record=record)
    if failure is not None:
        if leak is not None:
            output.error(leak)
        raise failure
    if leak is not None:
        raise leak
    output.step("Done: private dependencies installed; the keys were gone before the install")


def kept_first(plan: Plan, cache: Path, venv: Path, bundle: Path | None) -> Mirrors | None:
    """Before any fetch: whether the build cache keeps the environment a uv.lock or poetry.lock
    install would make now (keptvenv.py: the same lockfile, manifests, Python, tool and
    settings), to be restored with no fetch at all (no ssh-agent, no ssh, no git): it holds the
    commits the lockfile pins, which is all the mirrors would serve, and is trusted as the
    installers' state is, under this build's key, checked here first (installer.rekey) as the
    fetch checks it. Returns the (empty) mirrors to install with, or None: fetch as usual. Not
    without a secret of the build's own (an ssh agent only: no key to check the state's), nor
    when the tool would be installed from PyPI first."""
    choice = plan.choice
    seal = mirrors.SealKey.derive(seal_secrets(plan))
    if choice is None or not choice.locked or seal is None:
        return None
    dropped = installer.rekey(cache, seal.ident)
    if dropped:
        output.detail(
            f"dropped the installers' tools and caches kept under another key (or none): "
            f"{', '.join(dropped)} in {cache}"
        )
        return None
    chosen = installer.found_for_lockfile(choice, cache)
    if chosen is None:
        return None
    nothing = Mirrors(cache / mirrors.DIR, (), ())
    env = chosen.env(pip_env(plan, nothing, bundle))
    job = install.Job(chosen, choice.file, env, plan.app_dir, nothing, None, True)
    kept = install.kept_for(venv, job)
    return nothing if kept is not None and kept.present else None


def checked(plan: Plan) -> None:
    """Fetch every private repository into temporary mirrors with the keys, then remove both:
    the doctor, and compile's dry run (they write nothing that is kept)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="deploykey-mirrors-"))
    try:
        _fetched, findings = fetch(plan, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if findings:
        output.step(f"Every private repository can be fetched ({len(findings)} checked)")
        return
    read = ", ".join(plan.requirements.files) or "no manifest or lockfile"
    output.step(f"Nothing to fetch: no private git dependency in {read}")


def installer_bundle(cleanup: Cleanup) -> Path | None:
    """The trusted CAs as one bundle for the installers (trust.py), when the user added any: in
    a private temp dir this step makes now, so no build code ran before it could write or swap
    it; removed with the build's other temporary files."""
    import tempfile

    pem = trust.bundle()
    if pem is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="deploykey-trust-"))
    cleanup.add(
        f"the CA bundle {directory}", lambda: shutil.rmtree(str(directory), ignore_errors=True)
    )
    return keydir.write_new(directory / trust.BUNDLE, pem, 0o644)


def pip_env(plan: Plan, fetched: Mirrors, ca_bundle: Path | None = None) -> dict[str, str]:
    """The installer's environment: the allow-list, the user's PIP_*/UV_*/POETRY_*/PIPENV_* config
    vars, the git settings that send the private URLs to the mirrors, and the trusted CAs in the
    form each installer reads (trust.py). No key, no ssh command, no token."""
    from deploykey.core.childenv import INSTALLER_PREFIXES, child_env

    extra = {
        name: value.decode("utf-8", "replace").strip()
        for name, value in plan.env.values.items()
        if name.startswith(INSTALLER_PREFIXES) and name not in os.environ
    }
    extra.update(fetched.env())
    env = child_env(extra)
    env.update(trust.installer_env(ca_bundle, env))
    return env


def report_scrub(cleanup: Cleanup, removed_dir: Path | None) -> None:
    for what in cleanup.done:
        output.detail(f"removed {what}")
    if removed_dir is not None and removed_dir.exists():
        raise RuntimeError(f"{removed_dir} still exists after the scrub")


UNREADABLE_SHOWN = 20  # paths an error names; a cache another user filled can hold thousands


def leak_check(
    roots: Sequence[Path],
    found_keys: Sequence[Key],
    tokens: Sequence[Token],
    settings: Settings,
    strict: bool = False,
    record: scan.Record | None = None,
) -> UserError | None:
    """Scan the kept directories for the keys and tokens; a UserError naming the files if found.
    Another private key (a package's test key, say) fails only a `strict` scan (`deploykey
    scan`); a build warns about it: only the build's own keys and tokens are its to guard. What
    it could not read, or not unpack in full, fails it too (an archive only warns with
    DEPLOYKEY_SCAN_INCOMPLETE=warn): it never says clean about what it did not search, or did
    not verify unchanged since it last searched it (`record`, see scan.Record)."""
    import time

    existing = [root for root in roots if _present(root)]
    began = time.monotonic()
    report = scan.scan(existing, found_keys, {token.name: token.value for token in tokens}, record)
    seconds = time.monotonic() - began
    size = report.size / 1_000_000
    what = ", ".join([key.fingerprint for key in found_keys] + [token.name for token in tokens])
    output.detail(
        f"scanned {report.files} files ({size:.1f} MB) in {', '.join(map(str, existing))} for "
        f"{what or 'other private keys and URL credentials'} in {seconds:.1f} s "
        f"({report.processes} {'process' if report.processes == 1 else 'processes'}, {report.engine})"
    )
    if record is not None and report.previous == scan.VERIFIED and report.skipped:
        output.detail(
            f"and {report.skipped} more files unchanged since the scan that read them, as its "
            f"sealed record says ({record.path}): not read again"
        )
    if report.linked:
        output.detail(
            f"and {report.linked} more files that are other names (hard links) of files read "
            "above, unchanged since: not read twice"
        )
    if record is not None and report.previous not in (scan.NO_RECORD, scan.VERIFIED):
        said = f"the scan record {record.path} {report.previous}: every file was read"
        # Another key is a rotation, expected; anything else was written by something else.
        (output.detail if report.previous == scan.OTHER_KEYS else output.warn)(said)
    if report.engine == scan.PYTHON_SEARCH:
        output.detail(
            "ahocorasick-rs is not installed for this Python (no wheel for this platform?): "
            "the scan searched with Python alone, several times slower"
        )
    incomplete_ok = settings.get("DEPLOYKEY_SCAN_INCOMPLETE") == "warn"
    if incomplete_ok:
        for path in report.unpacked:
            output.warn(
                f"could not unpack the archive {path}: its bytes were searched, not its members "
                "(DEPLOYKEY_SCAN_INCOMPLETE=warn)"
            )
    failing = [hit for hit in report.hits if strict or hit.is_ours]
    for hit in report.hits:
        if hit not in failing:
            output.warn(
                f"{hit.path}: {hit.kind} ({hit.label}); not this build's, so not failing it"
            )
    if failing:
        for path in report.unreadable:
            output.warn(f"could not read {path}: not searched")
        for path in report.unpacked if not incomplete_ok else ():
            output.warn(f"could not unpack the archive {path}: only its bytes were searched")
        files = sorted({f"{hit.path} ({hit.kind}, {hit.label})" for hit in failing})
        paths = tuple(sorted({hit.path.split("!", 1)[0] for hit in failing}))
        return UserError("leak::found", count=len(files), files="\n".join(files), paths=paths)
    if report.unreadable:
        # A file the scan could not read could hold a copy: never "clean" with it unsearched.
        return UserError(
            "scan::unreadable",
            count=len(report.unreadable),
            paths=_listed(report.unreadable),
            uid=os.getuid(),
            user=permissions.user_name(),
        )
    if report.unpacked and not incomplete_ok:
        return UserError(
            "scan::incomplete", count=len(report.unpacked), paths=_listed(report.unpacked)
        )
    if report.unpacked:
        output.detail("no key material found (the archives named above: in their bytes only)")
    else:
        output.detail("no key material found")
    return None


def _listed(entries: Sequence[str]) -> str:
    """The first UNREADABLE_SHOWN entries, one a line, and how many more there are."""
    shown = list(entries[:UNREADABLE_SHOWN])
    if len(entries) > UNREADABLE_SHOWN:
        shown.append(f"... and {len(entries) - UNREADABLE_SHOWN} more")
    return "\n".join(shown)


def _present(root: Path) -> bool:
    """Whether a root exists; one this user cannot even look at is there for the scan to name."""
    try:
        return root.exists()
    except OSError:
        return True
