"""What a fetched commit names in turn: its submodules and its manifests' git dependencies.

The fetch phase must bring every private repository the install will need before the key is
removed, and the app's own files name only the first level. So each fetched commit is read (as
files through `git show`, never built or run): pyproject.toml, setup.cfg and requirements.txt at
the package's subdirectory, and .gitmodules. A dependency computed by a setup.py at build time
cannot be seen this way: the install then fails naming it (see mirrors.not_fetched).
"""

from __future__ import annotations

from deploykey.fetch import mirrors
from deploykey.manifests.requirements import GitRequirement, Requirements

MANIFESTS = ("pyproject.toml", "setup.cfg", "requirements.txt")


def subdirectory(req: GitRequirement) -> str:
    """The package's directory in its repository (`#subdirectory=`, or a lockfile's field)."""
    from deploykey.manifests import base

    return (req.subdirectory or base.subdirectory_of(req.fragment) or "").strip("/")


def named_by(fetcher: mirrors.Fetcher, req: GitRequirement, commit: str) -> Requirements:
    """The git dependencies named at `commit` of req's mirror (already fetched)."""
    from deploykey import manifests

    path = mirrors.mirror_path(fetcher.root, req)
    base = subdirectory(req)
    wanted = {f"{base}/{name}" if base else name: name for name in MANIFESTS}
    there = mirrors.present(fetcher.git, path, commit, [*wanted, ".gitmodules"])
    parts = []
    for inside in there:
        text = mirrors.show(fetcher.git, path, commit, inside) if inside in wanted else None
        if text is not None:
            label = f"{req.host}/{req.repo}@{commit[:7]}:{inside}"
            parts.append(manifests.read_repository_file(wanted[inside], text, label))
    submodules = mirrors.submodules(fetcher.git, path, commit) if ".gitmodules" in there else []
    for sub_path, url, gitlink in submodules:
        label = f"{req.host}/{req.repo}@{commit[:7]}:.gitmodules ({sub_path})"
        parts.append(_submodule(mirrors.resolve_url(req.remote, url), gitlink, label))
    return manifests.merge(parts)


def _submodule(url: str, gitlink: str, label: str) -> Requirements:
    """A submodule at the commit its superproject records (ssh, scp-like or https URL; a local
    path is not fetched)."""
    from deploykey.manifests import base

    collector = base.Collector(label, url)
    collector.git(url, name=None, commit=gitlink)
    return collector.found
