"""The environment a lockfile install made, kept in the build cache and restored by the next build
when nothing it was made from has changed: uv or Poetry does not run again.

A warm build of a uv.lock or poetry.lock app otherwise runs the tool to rebuild the same
environment from its caches: Poetry 2.5.1 takes 0.8 s before it installs anything (measured on
this project's 2-core machine, bench/lockfiles.py), uv less but still a venv and a sync. The
result is fixed by what the tool reads: the lockfile (exact versions, hashes, git commits), the
manifests and settings files beside it, the Python, the tool itself and its settings (the
environment deploykey gives it, its config files). So after a successful install the
environment is copied to `<kit cache>/venvs/<digest of all of those>`, and a later build whose
digest is the same copies it back instead of running the tool, moved to where this build makes
it (the files that name the path, see _move). Only for lockfiles whose packages all come from an
index or a git commit, and whose project itself is not installed (uv's `virtual` root, Poetry's
`package-mode = false`): a local path (`-e .`, a path dependency) is the app's own files, which
can change while the lockfile does not.

The copy is installer state like uv's and Poetry's caches (installer.STATE): build code runs
beside the tool while it installs, so it is tied to the build's key (installer.rekey drops it
after a rotation); SECURITY.md says what that trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykey.core import output
from deploykey.core.errors import UserError
from deploykey.installers.installer import Installer

DIR = "venvs"  # in the kit's part of the build cache; one of installer.STATE
VERSION = "deploykey/kept-venv/v2"  # v2: without the mirrors' settings
# What uv and Poetry read beside the lockfile in the app (uv: pyproject.toml, uv.toml,
# .python-version(s); Poetry: pyproject.toml, poetry.toml).
APP_FILES = ("pyproject.toml", "uv.toml", ".python-version", ".python-versions", "poetry.toml")
# Their user and system settings files (uv: ~/.config/uv/uv.toml, /etc/uv/uv.toml; Poetry:
# ~/.config/pypoetry/config.toml; pip's, which the build backends' pip reads).
HOME_FILES = (".config/uv/uv.toml", ".config/pypoetry/config.toml", ".config/pip/pip.conf")
SYSTEM_FILES = ("/etc/uv/uv.toml", "/etc/pip.conf", "/etc/xdg/pip/pip.conf")
# Per-build paths that change no installed byte: the files they name are hashed instead.
VOLATILE = ("HOME", "TMPDIR")
# deploykey's own git settings (mirrors.as_env; childenv passes no GIT_CONFIG_* of the user's):
# they send the lockfile's git URLs to the mirrors, which serve the commits the lockfile pins by
# id, so they change no installed byte, and a warm build can find its environment before any
# fetch (build.install_cycle), with no mirror to name.
MIRROR_SETTINGS = "GIT_CONFIG_"
# The trusted CAs (trust.installer_env): a bundle in a temp dir of this build's own when the user
# added certificates, so the same CAs have another path each build: their bytes are hashed.
CA_FILES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO")
# The digest names a directory of the cache and is shown in the output: it must not let anyone
# test guesses of a password the settings hold (PIP_INDEX_URL=https://user:password@host/...,
# UV_INDEX_<NAME>_PASSWORD, POETRY_HTTP_BASIC_<NAME>_PASSWORD). A credential changes no byte of
# what a lockfile installs (versions and hashes are locked), so it is left out: a URL's userinfo,
# and the value of a setting whose name says it holds one. Matched with its `://` and put back
# (no look-behind, which tries every byte: 1.5 ms for the 220 kB system CA bundle, hashed for
# SSL_CERT_FILE, REQUESTS_CA_BUNDLE and GIT_SSL_CAINFO; with the literal, 0.06 ms, the same bytes).
USERINFO = re.compile(rb"://[^/@\s]*@")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|AUTH|CREDENTIAL|KEY", re.IGNORECASE)


@dataclass(frozen=True)
class Kept:
    """Where an environment made from exactly these inputs is kept."""

    root: Path  # <kit cache>/venvs
    digest: str
    tool: str  # as the output shows it

    @property
    def path(self) -> Path:
        return self.root / self.digest

    @property
    def present(self) -> bool:
        """Whether an environment is kept for these inputs, with the path it was made at (a
        copy back may still fail: a full disk)."""
        if self.path.is_symlink() or not self.path.is_dir() or self.made_at.is_symlink():
            return False
        try:
            self.made_at.read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            return False
        return True

    @property
    def made_at(self) -> Path:
        """Beside the copy: the path the environment was made at (its scripts name it)."""
        return self.root / f"{self.digest}.from"

    def restore(self, where: Path) -> bool:
        """Copy the kept environment to `where` (absent, or an empty directory), its scripts
        moved there; False when none is kept for these inputs. Links are copied as links (the
        venv's python)."""
        if self.path.is_symlink() or not self.path.is_dir() or self.made_at.is_symlink():
            return False
        try:
            made_at = self.made_at.read_text(encoding="utf-8")
            shutil.copytree(self.path, where, symlinks=True, dirs_exist_ok=True)
            _move(where, made_at, str(where))
        except (OSError, UnicodeError) as error:
            shutil.rmtree(where, ignore_errors=True)
            output.detail(f"could not restore {where} from {self.path} ({error}): installing")
            return False
        output.detail(
            f"restored {where} from {self.path}: {self.tool} made it from exactly these inputs "
            f"(lockfile, manifests, Python, {self.tool} and its settings) in an earlier build "
            f"under this build's key, so {self.tool} does not run again"
        )
        return True

    def drop(self) -> None:
        """Remove the kept copy (one that could not be restored), so that the next build
        installs."""
        for path in (self.path, self.made_at):
            if os.path.lexists(path):
                _remove(path)

    def save(self, where: Path) -> None:
        """Keep a copy of the environment just installed, in place of any other one."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
            shutil.copytree(where, staging, symlinks=True, dirs_exist_ok=True)
            for entry in self.root.iterdir():
                if entry != staging:
                    _remove(entry)
            self.made_at.write_text(str(where), encoding="utf-8")
            staging.rename(self.path)
        except OSError as error:
            output.detail(
                f"could not keep {where} in {self.root} ({error}): the next build installs"
            )
            return
        output.detail(
            f"kept {where} in {self.path}: the next build restores it while the lockfile, "
            f"manifests, Python, {self.tool} and its settings stay the same"
        )


def _move(venv: Path, made_at: str, where: str) -> None:
    """An environment's files that name the path it was made at: in bin/, the activate scripts
    (`uv venv`'s and `python -m venv`'s, checked) and the `#!` lines of the scripts installed
    there; pyvenv.cfg (`command =`, as `python -m venv` of Python 3.11 writes it). What else
    names it (cached bytecode's file names) only shows in tracebacks."""
    if made_at == where:
        return
    old, new = made_at.encode(), where.encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))


def of(
    installer: Installer,
    argv: list[str],
    env: dict[str, str],
    app_dir: Path,
    where: Path,
    say: bool = True,
) -> Kept | None:
    """Where the environment `argv` installs at `where` would be kept (None when a lockfile
    package comes from a local path, or the project itself is installed: said why, if `say`)."""
    assert installer.lockfile is not None
    lockfile = app_dir / installer.lockfile
    why = _not_kept(installer.name, lockfile, app_dir / "pyproject.toml")
    if why is not None:
        if say:
            output.detail(f"{where} is not kept for the next build: {why}")
        return None
    home = Path(env.get("HOME", "/nonexistent"))
    named = (
        [(lockfile.name, lockfile)]
        + [(name, app_dir / name) for name in APP_FILES]
        + [(f"~/{name}", home / name) for name in HOME_FILES]
        + [(name, Path(name)) for name in SYSTEM_FILES]
        + [(f"${name}", Path(env[name])) for name in CA_FILES if name in env]
    )
    # Each file read once: the three CA settings name the same bundle.
    digests = {path: _digest(path) for path in dict.fromkeys(path for _label, path in named)}
    # Not where it is made: a restore moves it (_move). The tool's settings name it (VIRTUAL_ENV,
    # UV_PROJECT_ENVIRONMENT, PATH): as a placeholder.
    here = str(where)
    inputs: dict[str, Any] = {
        "version": VERSION,
        "argv": [part.replace(here, "<venv>") for part in argv],
        "env": sorted(
            (k, "" if SECRET_NAME.search(k) else _public(v).replace(here, "<venv>"))
            for k, v in env.items()
            if k not in VOLATILE and k not in CA_FILES and not k.startswith(MIRROR_SETTINGS)
        ),
        # os.uname().machine is what platform.machine() returns on Linux (and 2 ms less to import)
        "python": [sys.executable, sys.version, os.uname().machine, _stat(Path(sys.executable))],
        "tool": _tool(installer),
        "files": {label: digests[path] for label, path in named},
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return Kept(installer.cache / DIR, digest, installer.shown)


def _not_kept(name: str, lockfile: Path, pyproject: Path) -> str | None:
    """Why an environment made from this lockfile may differ with the same lockfile, or None."""
    from deploykey.manifests import base

    try:
        lock = base.load_toml(lockfile.name, base.read_text(lockfile))
        project = base.load_toml(pyproject.name, base.read_text(pyproject))
    except (OSError, UserError):
        return "its lockfile or pyproject.toml cannot be read"
    local = (
        "a package from a local path (the app's own files, which change with no lockfile change)"
    )
    for package in base.tables(lock.get("package")):
        source = base.table(package.get("source"))
        if name == "uv" and not (set(source) <= {"registry", "git"} or set(source) == {"virtual"}):
            return f"{lockfile.name} installs {local}"
        if name == "poetry" and source and source.get("type") not in ("git", "legacy"):
            return f"{lockfile.name} installs {local}"
    if name == "poetry":
        poetry = base.table(base.table(project.get("tool")).get("poetry"))
        if poetry.get("package-mode", True) is not False:
            return "Poetry installs the project itself (no `package-mode = false`)"
    return None if name in ("uv", "poetry") else f"{name} environments are not kept"


def _tool(installer: Installer) -> list[Any]:
    """What tells one version of the tool from another: the executable's stat (its venv's python
    for `python -m poetry`), and the distributions installed in the venv it comes from."""
    found: list[Any] = []
    for part in [str(installer.uv)] if installer.uv else list(installer.tool):
        path = Path(part)
        if not path.is_absolute():
            found.append(part)
            continue
        found.append([part, _stat(path)])
        for venv in dict.fromkeys([path.parent.parent, path.resolve().parent.parent]):
            if (venv / "pyvenv.cfg").is_file():
                names = venv.glob("lib/python*/site-packages/*.dist-info")
                found.append(sorted(name.name for name in names))
    return found


def _stat(path: Path) -> list[int] | None:
    try:
        info = path.resolve().stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def _public(value: str) -> str:
    """A setting without the userinfo of the URLs it holds."""
    return USERINFO.sub(b"://", value.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape"
    )


def _digest(path: Path) -> str | None:
    """The file's sha256, without the userinfo of the URLs in it (pip.conf's index-url)."""
    try:
        return hashlib.sha256(USERINFO.sub(b"://", path.read_bytes())).hexdigest()
    except OSError:
        return None


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
