"""The private git dependencies an app declares, from every manifest and lockfile it has.

One module per format, each with `NAMES` (the file names or globs it reads), `read(app_dir, path)`
and `parse(label, text)`, in the plain registry `READERS` (as pre-commit's `languages/`):

    requirements_txt  requirements*.txt, requirements/*.txt, *.in   (deploykey.manifests.requirements)
    setup_cfg         setup.cfg
    pyproject         pyproject.toml
    pipfile           Pipfile, Pipfile.lock
    pylock            pylock.toml, pylock.*.toml
    poetry_lock       poetry.lock
    uv_lock           uv.lock

Public API: `read_all`, `read_repository_file` (also `read_text`), `installer_for`, `merge`.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Protocol

from deploykey.core.errors import UserError
from deploykey.manifests import (
    pipfile,
    poetry_lock,
    pylock,
    pyproject,
    requirements_txt,
    setup_cfg,
    uv_lock,
)
from deploykey.manifests.requirements import GitRequirement, Requirements


class Reader(Protocol):
    @property
    def NAMES(self) -> tuple[str, ...]: ...  # a module constant, read only

    def read(self, app_dir: Path, path: Path) -> Requirements: ...

    def parse(self, label: str, text: str) -> Requirements: ...


READERS: dict[str, Reader] = {
    "requirements_txt": requirements_txt,
    "setup_cfg": setup_cfg,
    "pyproject": pyproject,
    "pipfile": pipfile,
    "pylock": pylock,
    "poetry_lock": poetry_lock,
    "uv_lock": uv_lock,
}

# heroku-buildpack-python picks the package manager from these files, and refuses an app with more
# than one of them (since v325, #1993) or with a Pipfile but no Pipfile.lock (since v292, #1833):
# lib/package_manager.sh, package_manager::determine_package_manager, at tag v351. Listed in its
# order, with its display text.
DECIDING = (
    ("Pipfile.lock", "pipenv", "Pipenv"),
    ("requirements.txt", "pip", "pip"),
    ("poetry.lock", "poetry", "Poetry"),
    ("uv.lock", "uv", "uv"),
)


def read_all(app_dir: Path) -> Requirements:
    """Every manifest and lockfile present in the app dir, merged (see `merge`)."""
    return merge(
        reader.read(app_dir, path)
        for reader in READERS.values()
        for path in present(app_dir, reader.NAMES)
    )


def present(app_dir: Path, names: Iterable[str]) -> list[Path]:
    """The files matching `names` (globs relative to the app dir), in order, each once."""
    found: list[Path] = []
    for pattern in names:
        found += [p for p in sorted(app_dir.glob(pattern)) if p.is_file() and p not in found]
    return found


def read_file(app_dir: Path, path: Path) -> Requirements:
    """One file the user names (DEPLOYKEY_REQUIREMENTS): read by its kind, by name; a name no
    manifest reader takes is a requirements file (`requirements/prod.txt`, `deps.in`)."""
    reader = reader_for(path.name) or requirements_txt
    return reader.read(app_dir, path)


def read_repository_file(name: str, text: str, label: str | None = None) -> Requirements:
    """A manifest's text taken from a fetched repository (`git show COMMIT:path`), for transitive
    discovery. `name` is its path in the repository (the reader is chosen by its file name);
    `label` (default: `name`) is what the findings name as their file. A pyproject.toml is read
    for what the build backend puts into the package's metadata only, since that is all pip sees
    of a dependency; a requirements file's includes are not followed. Raises ValueError for a
    name no reader takes."""
    reader = reader_for(name)
    if reader is None:
        raise ValueError(f"no manifest reader for {name}")
    if reader is pyproject:
        return pyproject.parse(label or name, text, metadata_only=True)
    return reader.parse(label or name, text)


read_text = read_repository_file  # the name discover.py calls it by


def reader_for(name: str) -> Reader | None:
    base = PurePosixPath(name).name
    for reader in READERS.values():
        if any(fnmatchcase(name, p) or fnmatchcase(base, p) for p in reader.NAMES):
            return reader
    return None


def installer_for(app_dir: Path) -> tuple[str, str]:
    """(installer, the file that decides it), as heroku-buildpack-python chooses: Pipfile.lock ->
    pipenv, requirements.txt -> pip, poetry.lock -> poetry, uv.lock -> uv; more than one is
    manifests::ambiguous. A Pipfile without its lockfile counts as Pipenv's file (the buildpack
    refuses it). With none of them: ("pip", "requirements.txt"), the kit's default, which the
    caller reports as missing."""
    found = [(file, installer, shown) for file, installer, shown in DECIDING if _has(app_dir, file)]
    if not _has(app_dir, "Pipfile.lock") and _has(app_dir, "Pipfile"):
        found.insert(0, ("Pipfile", "pipenv", "Pipenv"))
    if len(found) > 1:
        files = ", ".join(f"{file} ({shown})" for file, _, shown in found)
        raise UserError("manifests::ambiguous", files=files)
    if found:
        file, installer, _ = found[0]
        return installer, file
    return "pip", "requirements.txt"


def _has(app_dir: Path, name: str) -> bool:
    return (app_dir / name).is_file()


def merge(parts: Iterable[Requirements]) -> Requirements:
    """One `Requirements` from several. The same repository (and subdirectory) at the same ref is
    kept once; an entry a lockfile pins to a commit replaces the manifests' entries it resolves:
    those asking for its ref, its commit, or any ref when the lockfile does not say which one was
    asked for (Pipfile.lock). Files, problems and the `file:line` lists are kept once each."""
    merged = Requirements()
    git: list[GitRequirement] = []
    https: list[GitRequirement] = []
    for part in parts:
        merged.files += [f for f in part.files if f not in merged.files]
        merged.problems += [p for p in part.problems if not _known(p, merged.problems)]
        merged.other_ssh += [w for w in part.other_ssh if w not in merged.other_ssh]
        merged.editable_vcs += [w for w in part.editable_vcs if w not in merged.editable_vcs]
        git += part.git
        https += part.https
    merged.git = _unique(git)
    merged.https = _unique(https)
    return merged


def _known(problem: UserError, problems: list[UserError]) -> bool:
    return any(p.slug == problem.slug and p.facts == problem.facts for p in problems)


def _repository(req: GitRequirement) -> tuple[str, str, int, str, str | None]:
    return req.scheme, req.host, req.port, req.repo, req.subdirectory


def _unique(found: list[GitRequirement]) -> list[GitRequirement]:
    locked = [req for req in found if req.commit]
    kept: list[GitRequirement] = []
    for req in found:
        same = [k for k in kept if _repository(k) == _repository(req) and k.ref == req.ref]
        if req.commit:
            if not any(k.commit == req.commit for k in same):
                kept.append(req)
        elif not any(_resolves(lock, req) for lock in locked) and not same:
            kept.append(req)
    return kept


def _resolves(lock: GitRequirement, req: GitRequirement) -> bool:
    """Whether the lockfile entry `lock` is the pinned form of the unpinned `req`."""
    if _repository(lock) != _repository(req):
        return False
    return lock.ref is None or lock.ref == req.ref or lock.commit == req.ref
