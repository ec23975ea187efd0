"""pyproject.toml: PEP 621 dependencies, PEP 735 dependency groups, uv sources, Poetry dependencies.

- `[project] dependencies` and `optional-dependencies`, `[dependency-groups]`: PEP 508 strings
  (`name @ git+ssh://git@host/org/repo.git@ref#subdirectory=sub`), read as pip reads them.
  A group's `{include-group = ...}` tables name no URL and are skipped.
- `[tool.uv.sources]`: `name = { git = URL, tag | rev | branch = REF, subdirectory = DIR }`, or a
  list of such tables (one per marker).
- `[tool.poetry.dependencies]`, `[tool.poetry.group.<group>.dependencies]` and the older
  `[tool.poetry.dev-dependencies]`: the same keys, a table or a list of tables (multiple
  constraints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

NAMES = ("pyproject.toml",)
REFS = ("tag", "rev", "branch")  # uv and Poetry take exactly one of them


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str, *, metadata_only: bool = False) -> Requirements:
    """The git dependencies the file names. With `metadata_only`, only those a build backend puts
    into the package's metadata (what pip sees when the project is itself a dependency):
    `[project]` and Poetry's main group, which poetry-core writes as `name @ git+URL`. Dependency
    groups, other Poetry groups and `[tool.uv.sources]` only count for the project itself."""
    data = base.load_toml(label, text)
    collector = base.Collector(label, text)
    project = base.table(data.get("project"))
    declared = [base.strings(project.get("dependencies"))]
    declared += [base.strings(v) for v in base.table(project.get("optional-dependencies")).values()]
    if not metadata_only:
        declared += [base.strings(v) for v in base.table(data.get("dependency-groups")).values()]
    for requirement in (item for group in declared for item in group):
        collector.pep508(requirement)
    tool = base.table(data.get("tool"))
    poetry = base.table(tool.get("poetry"))
    groups = [poetry.get("dependencies")]
    if not metadata_only:
        _sources(collector, base.table(tool.get("uv")).get("sources"))
        groups.append(poetry.get("dev-dependencies"))
        groups += [
            base.table(g).get("dependencies") for g in base.table(poetry.get("group")).values()
        ]
    for group in groups:
        _sources(collector, group)
    return collector.found


def _sources(collector: base.Collector, entries: object) -> None:
    """`name = { git = ..., tag = ... }` entries (uv sources, Poetry dependencies)."""
    for name, value in base.table(entries).items():
        for entry in base.tables(value):
            url = base.text_or_none(entry.get("git"))
            if url is not None:
                collector.git(
                    url,
                    name=name,
                    ref=_ref(entry),
                    subdirectory=base.text_or_none(entry.get("subdirectory")),
                )


def _ref(entry: dict[str, Any]) -> str | None:
    return next((ref for key in REFS if (ref := base.text_or_none(entry.get(key)))), None)
