"""Which package manager installs the app, and its cache in the build cache.

The app's files decide, as heroku-buildpack-python decides (`manifests.installer_for`): uv.lock is
installed with `uv sync --locked`, poetry.lock with `poetry sync --only main`, Pipfile.lock with
`pipenv install --deploy`, each run the way heroku-buildpack-python v351 runs it (lib/uv.sh,
lib/poetry.sh, lib/pipenv.sh) but into the environment deploykey builds. Poetry and Pipenv come
from PATH, or from a virtual environment of their own in the build cache, installed from PyPI by
the first build that needs them.

A requirements file (requirements.txt, or the file DEPLOYKEY_REQUIREMENTS or `install -r` names)
is installed with uv or pip, as DEPLOYKEY_INSTALLER chooses.

uv (from PyPI) fetches git dependencies with the git CLI, so the router and the pinned host keys
apply unchanged, several at once, and caches built wheels and checkouts by commit. The kit keeps
its cache in the platform's build cache (Heroku CACHE_DIR, a CNB cache layer, a Docker cache
mount), and pins every checked requirement to the commit its tag names now (uv `--override`), so
a warm build neither clones nor builds again, nor even fetches: a dependency is fetched once per
commit. The cache is scanned like the app after every build; it never holds key material (git
keeps no credentials, only the repository URLs and code).

`auto` (the default): uv on PATH, or cached from an earlier build, or installed into the build
cache from PyPI; pip when that fails, when the requirements have `-e git+...` lines (uv installs
editables from local paths only), or for `--user`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey.core import output
from deploykey.core.errors import UserError

UV_REQUIREMENT = "uv>=0.4,<1"
# Poetry 2 has `poetry sync` (v351 runs it: lib/poetry.sh); Pipenv as v351 pins it or newer.
TOOL_REQUIREMENTS = {"poetry": "poetry>=2.4,<3", "pipenv": "pipenv>=2026.7"}
# The package managers of lockfiles: how each is shown, its install command as v351 runs it (less
# v351's `--compile`/`--compile-bytecode` and `--color`), and how a developer updates the lockfile.
LOCKED = {
    "uv": ("uv", ("sync", "--locked", "--no-default-groups", "--no-progress"), "uv lock"),
    "poetry": (
        "Poetry",
        ("sync", "--only", "main", "--no-interaction", "--no-ansi"),
        "poetry lock",
    ),
    "pipenv": ("Pipenv", ("install", "--deploy"), "pipenv lock"),
}
# What each tool says when its lockfile no longer matches the manifest it was made from (uv 0.13,
# Poetry 2.5, Pipenv 2026.10, their output joined into one line: Pipenv wraps at 80 columns).
OUTDATED = {
    "uv": re.compile(r"needs to be updated, but `--locked` was provided"),
    "poetry": re.compile(r"pyproject\.toml changed significantly since poetry\.lock was last"),
    "pipenv": re.compile(r"Pipfile\.lock \([0-9a-f]+\) is out of date"),
}
# pip's settings with a uv equivalent: the user's index configuration applies to both.
PIP_TO_UV = {
    "PIP_INDEX_URL": "UV_INDEX_URL",
    "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS": "UV_FIND_LINKS",
    "PIP_TRUSTED_HOST": "UV_INSECURE_HOST",
}


@dataclass(frozen=True)
class Choice:
    """The package manager that installs the app, and the file that decided it."""

    manager: str  # "pip": a requirements file (uv or pip); "uv", "poetry", "pipenv": a lockfile
    file: Path  # what is installed: the requirements file or the lockfile
    reason: str  # why, for the output

    @property
    def locked(self) -> bool:
        return self.manager != "pip"

    @property
    def shown(self) -> str:
        return LOCKED[self.manager][0] if self.locked else "uv or pip, for a requirements file"

    def command(self) -> str:
        """The install command, as the output shows it."""
        if not self.locked:
            return f"install --requirement {self.file}"
        return " ".join((self.manager, *LOCKED[self.manager][1]))


def decide(app_dir: Path, requirements: Path, given: str | None) -> Choice:
    """The package manager, as heroku-buildpack-python chooses it (`manifests.installer_for`; more
    than one deciding file is manifests::ambiguous), unless the requirements file was `given`
    (DEPLOYKEY_REQUIREMENTS, `install -r`): then that file, with uv or pip."""
    from deploykey import manifests

    if given is not None:
        return Choice("pip", requirements, f"{given} names it")
    manager, file = manifests.installer_for(app_dir)
    if manager == "pip":
        return Choice("pip", requirements, f"{file} decides")
    if file == "Pipfile":  # heroku-buildpack-python refuses it too (v292+)
        raise UserError("install::lock-missing", file=file, lockfile="Pipfile.lock", tool="Pipenv")
    return Choice(manager, app_dir / file, f"{file} decides, as heroku-buildpack-python chooses")


@dataclass(frozen=True)
class Installer:
    name: str  # "uv" or "pip" for a requirements file; "uv", "poetry" or "pipenv" for a lockfile
    cache: Path  # the kit's part of the build cache (or a temp dir, removed after the build)
    uv: Path | None = None
    lockfile: str | None = None  # the lockfile it installs (uv.lock, poetry.lock, Pipfile.lock)
    tool: tuple[str, ...] = ()  # how Poetry or Pipenv runs: its path, or its venv's python -m

    @property
    def shown(self) -> str:
        return LOCKED[self.name][0] if self.lockfile else self.name

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The child environment with the installer's own settings."""
        found = dict(env)
        if self.name == "poetry":
            found.update(
                POETRY_CACHE_DIR=str(self.cache / "poetry-cache"),
                # Install into the environment named by VIRTUAL_ENV (see `locked`), never a
                # venv of Poetry's own (v351 lib/poetry.sh).
                POETRY_VIRTUALENVS_CREATE="false",
                POETRY_NO_INTERACTION="1",
            )
        if self.name == "pipenv":
            found.update(
                PIPENV_CACHE_DIR=str(self.cache / "pipenv-cache"),
                # The "system" Python, which VIRTUAL_ENV and PATH name (see `locked`), as v351
                # runs it (lib/pipenv.sh).
                PIPENV_SYSTEM="1",
                PIPENV_VERBOSITY="-1",
                PIPENV_NOSPIN="1",
                PIPENV_YES="1",
            )
        if self.name == "uv":
            # pip's index settings apply to a requirements file; a uv.lock names its own indexes,
            # and another one would fail `--locked`.
            for pip_name, uv_name in PIP_TO_UV.items() if self.lockfile is None else ():
                if pip_name in found and uv_name not in found:
                    found[uv_name] = found[pip_name]
            found.update(
                UV_CACHE_DIR=str(self.cache / "uv-cache"),
                UV_LINK_MODE="copy",  # until link_mode() knows where it installs
                UV_NO_PROGRESS="1",
                UV_PYTHON_DOWNLOADS="never",
                # A private repository has no public API answer: ask git, not api.github.com.
                UV_NO_GITHUB_FAST_PATH="1",
            )
            # uv trusts its bundled roots unless told otherwise; pip trusts the system's. Behind
            # a TLS-intercepting proxy whose CA is in the system store, only the system's work.
            # (UV_SYSTEM_CERTS since uv 0.11, 2026-03; UV_NATIVE_TLS, its older name, for older uv.)
            found.setdefault("UV_SYSTEM_CERTS", "true")
            found.setdefault("UV_NATIVE_TLS", "true")
        return found

    def venv_argv(self, where: Path) -> list[str]:
        if self.uv is not None:
            # --allow-existing: an environment already there (a second local run) is updated.
            return [
                str(self.uv),
                "venv",
                "--quiet",
                "--allow-existing",
                "--python",
                sys.executable,
                str(where),
            ]
        if self.lockfile is not None:  # Poetry and Pipenv install with their own installers
            return [sys.executable, "-m", "venv", "--without-pip", str(where)]
        return [sys.executable, "-m", "venv", str(where)]

    def locked(self, where: Path, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The lockfile's install into the Python environment at `where` (its run-time path):
        the command and its environment."""
        assert self.lockfile is not None
        found = dict(env)
        if self.name == "uv":
            found.update(UV_PROJECT_ENVIRONMENT=str(where), UV_NO_MANAGED_PYTHON="1")
            # The Python `venv_argv` names, for the environment `uv sync` makes itself when there
            # is none (install.into: one process and one interpreter query fewer than `uv venv`
            # first); a UV_PYTHON of the user's wins, as it did over that `uv venv`'s environment
            # (uv replaces a project environment whose Python the request does not match).
            found.setdefault("UV_PYTHON", sys.executable)
            return [str(self.uv), *LOCKED["uv"][1]], found
        # Poetry and Pipenv install into the active environment: VIRTUAL_ENV, its python first
        # on PATH (v351 sets both for Pipenv; for Poetry, whose own venv is made from the Python it
        # installs into, VIRTUAL_ENV is what names another one).
        found.update(VIRTUAL_ENV=str(where), PATH=f"{where / 'bin'}:{found.get('PATH', '')}")
        if self.name == "pipenv":
            found["PIP_SRC"] = str(where / "src")  # `-e` VCS checkouts: in the environment
        return [*self.tool, *LOCKED[self.name][1]], found

    def install_argv(
        self,
        python: Path,
        requirements: Path,
        src: Path | None,
        extra: Sequence[str] = (),
        overrides: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        if self.uv is not None:
            argv = [
                str(self.uv),
                "pip",
                "install",
                "--python",
                str(python),
                "--requirement",
                str(requirements),
            ]
            # uv reads no environment variable for this one
            if (env or {}).get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
                argv.append("--no-index")
            return argv + (["--override", str(overrides)] if overrides else []) + list(extra)
        argv = [
            str(python),
            "-m",
            "pip",
            "install",
            "--requirement",
            str(requirements),
            "--no-input",
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
            "--exists-action",
            "w",
            "--cache-dir",
            str(self.cache / "pip-cache"),
            *extra,
        ]
        return argv + (["--src", str(src)] if src is not None else [])


def link_mode(cache: Path, where: Path) -> str:
    """How uv puts files from its cache into the environment at `where`: hard links when both are
    on one filesystem (a warm build then writes no file's bytes again: the heavy app's 280 MB took
    1.6-2.8 s to copy), else copies, which uv would fall back to anyway with a warning (its
    crates/uv-fs/src/link.rs). Build code that writes into a linked file changes the one inode
    both names share: its ctime moves (inode(7)), so the leak check reads it (scan.scan reads each
    inode once and vouches for its other names only while their stat is the one read)."""
    existing = next((path for path in (where, *where.parents) if path.exists()), where)
    try:
        same = cache.stat().st_dev == existing.stat().st_dev
    except OSError:
        return "copy"
    return "hardlink" if same else "copy"


def choose(
    setting: str, cache: Path, editable_vcs: Sequence[str] = (), user: bool = False
) -> Installer:
    """The installer DEPLOYKEY_INSTALLER asks for, uv bootstrapped into `cache` when missing."""
    if setting == "pip":
        return Installer("pip", cache)
    if editable_vcs or user:
        why = f"`-e` VCS requirements ({', '.join(editable_vcs)})" if editable_vcs else "--user"
        if setting == "uv":
            output.warn(f"using pip, not uv: uv does not install {why}")
        return Installer("pip", cache)
    uv = find_uv(cache)
    if uv is None:
        try:
            uv = bootstrap_uv(cache)
        except UserError as error:
            if setting == "uv":
                raise
            output.warn(f"uv could not be installed ({error.why}); installing with pip")
            return Installer("pip", cache)
    return Installer("uv", cache, uv)


def for_lockfile(choice: Choice, setting: str, cache: Path) -> Installer:
    """The lockfile's own package manager: uv, Poetry or Pipenv, from PATH or the build cache,
    installed there from PyPI when missing (DEPLOYKEY_INSTALLER chooses for requirements only)."""
    assert choice.locked
    if setting == "pip":
        output.warn(f"DEPLOYKEY_INSTALLER=pip is for requirements files: {choice.reason}")
    if choice.manager == "uv":
        uv = find_uv(cache) or bootstrap_uv(cache)
        return Installer("uv", cache, uv, choice.file.name)
    tool = find_tool(choice.manager, cache) or bootstrap_tool(choice.manager, cache)
    return Installer(choice.manager, cache, None, choice.file.name, tool)


def found_for_lockfile(choice: Choice, cache: Path) -> Installer | None:
    """The installer `for_lockfile` would return when its tool is there already (None when it
    would install it from PyPI first), saying nothing."""
    assert choice.locked
    if choice.manager == "uv":
        uv = find_uv(cache)
        return None if uv is None else Installer("uv", cache, uv, choice.file.name)
    tool = find_tool(choice.manager, cache)
    return None if tool is None else Installer(choice.manager, cache, None, choice.file.name, tool)


def lock_outdated(name: str, text: str) -> bool:
    """Whether the package manager `name` failed because its lockfile is out of date."""
    pattern = OUTDATED.get(name)
    return pattern is not None and pattern.search(" ".join(text.split())) is not None


def find_tool(name: str, cache: Path) -> tuple[str, ...] | None:
    """Poetry or Pipenv: on PATH, or in its venv in the build cache (for this Python)."""
    on_path = shutil.which(name)
    if on_path:
        return (str(Path(on_path).absolute()),)
    python = cache / name / "bin" / "python"
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if python.exists() and (cache / name / "lib" / version / "site-packages" / name).is_dir():
        return (str(python), "-m", name)
    return None


def where_found(name: str, cache: Path | None) -> tuple[str, bool]:
    """Where the build will take uv, Poetry or Pipenv from, for the plan (nothing is installed),
    and whether it is there already."""
    on_path = shutil.which(name)
    if on_path:
        return f"{name} on PATH ({on_path})", True
    if cache is not None and (find_uv(cache) if name == "uv" else find_tool(name, cache)):
        return f"{name} cached in {cache / name}", True
    where = cache / name if cache is not None else "the build cache"
    return f"{name} installed from PyPI into {where} by this build, kept for the next ones", False


def planned(
    choice: Choice, setting: str, cache: Path | None, editable_vcs: Sequence[str] = ()
) -> str:
    """What will run, for the plan: the command line and where its tool comes from (as `choose`
    and `for_lockfile` will decide it)."""
    if choice.locked:
        return f"{choice.command()} ({where_found(choice.manager, cache)[0]})"
    pip = f"pip {choice.command()}"
    if setting == "pip":
        return f"{pip} (DEPLOYKEY_INSTALLER=pip)"
    if editable_vcs:
        return (
            f"{pip} (not uv: uv does not install `-e` VCS requirements: {', '.join(editable_vcs)})"
        )
    uv, present = where_found("uv", cache)
    fallback = "; pip if that fails" if setting == "auto" and not present else ""
    return f"uv pip {choice.command()}, each checked ref pinned to its commit ({uv}{fallback})"


def bootstrap_tool(name: str, cache: Path) -> tuple[str, ...]:
    """Install Poetry or Pipenv from PyPI into a venv of its own, `<cache>/<name>` (once; later
    builds find it there). Made beside it and renamed: a failed install leaves nothing behind. It
    is run as `<venv>/bin/python -m <name>`, so the rename breaks none of its scripts' paths."""
    import tempfile

    from deploykey.core import run

    requirement = TOOL_REQUIREMENTS[name]
    target = cache / name
    output.detail(f"installing {requirement} into {target} (once: the build cache keeps it)")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    python = staging / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(staging)],
        [str(python), "-m", "pip", "install", "--quiet", "--no-input", "--no-cache-dir"]
        + ["--disable-pip-version-check", requirement],
        [str(python), "-m", name, "--version"],
    ]
    for argv in steps:
        result = run.run(argv, env=run.child_env(), cwd=cache)
        if not result.ok:
            shutil.rmtree(staging, ignore_errors=True)
            said = [line for line in result.lines if line.strip()][-3:]
            raise UserError(
                "tool::bootstrap",
                requirement=requirement,
                target=target,
                detail=f"`{result.command}` failed (exit status {result.status}): "
                + (" ".join(said) or "no output"),
                tool=name,
            )
    output.detail(f"{result.text.strip()}, in {target}")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return (str(target / "bin" / "python"), "-m", name)


# What the installers keep in the kit's part of the build cache: their own tools (uv, Poetry,
# Pipenv, installed from PyPI once), their caches (built wheels, checkouts by commit) and the
# environments a lockfile install made (keptvenv.DIR). Build code runs beside them while they
# install and can change any of it; see rekey().
STATE = (
    *("uv", "poetry", "pipenv", "uv-cache", "pip-cache", "poetry-cache", "pipenv-cache"),
    "venvs",
)
KEYED = "installers.key"  # the seal key's public id (mirrors.SealKey.ident) they were kept under


def rekey(cache: Path, ident: str | None) -> list[str]:
    """Drop the installers' tools and caches unless they were kept under this build's key: after a
    key is rotated (what a user does after a hostile dependency ran), nothing that build code of
    the builds before could have planted there (a `uv` of its own, a wheel for a pinned commit)
    is run or installed. Build code cannot write the new key's id: it never had the key. Under
    the same key they are kept (the price of a warm build): after removing a hostile dependency,
    rotate the key, or clear the build cache. With no secret of the build's own (an ssh agent
    only), nothing tells a rotation apart: kept. Returns what was dropped."""
    if ident is None:
        return []
    stamp = cache / KEYED
    with contextlib.suppress(OSError):
        if not stamp.is_symlink() and stamp.read_text() == ident + "\n":
            return []
    dropped = []
    for name in STATE:
        path = cache / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        dropped.append(name)
    cache.mkdir(parents=True, exist_ok=True)
    temporary = cache / f".{KEYED}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.write_text(ident + "\n")
    temporary.replace(stamp)  # over a planted link, never through it
    return dropped


def find_uv(cache: Path) -> Path | None:
    on_path = shutil.which("uv")
    if on_path:
        return Path(on_path)
    cached = cache / "uv" / "bin" / "uv"
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


def bootstrap_uv(cache: Path) -> Path:
    """Install uv from PyPI into the build cache (once; later builds find it there)."""
    from deploykey.kit import bootstrap

    target = cache / "uv"
    output.detail(f"installing uv into {target} (once: the build cache keeps it)")
    cache.mkdir(parents=True, exist_ok=True)
    bootstrap.pip_install(target, [UV_REQUIREMENT])
    binary = target / "bin" / "uv"
    if not binary.is_file():
        shutil.rmtree(target, ignore_errors=True)
        raise UserError(
            "deps::bootstrap",
            packages=UV_REQUIREMENT,
            detail=f"pip installed {UV_REQUIREMENT} without a bin/uv",
            python=sys.executable,
        )
    return binary
