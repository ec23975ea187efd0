"""poetry.lock: every `[[package]]` whose `[package.source]` has `type = "git"`.

Poetry writes the URL as the pyproject gives it (scp-like `git@host:org/repo.git` included), the
requested `reference` (`HEAD` when none was asked for), the `resolved_reference` (the commit) and
the `subdirectory`. Transitive dependencies are packages of their own.
"""

from __future__ import annotations

from pathlib import Path

from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

NAMES = ("poetry.lock",)


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str) -> Requirements:
    data = base.load_toml(label, text)
    collector = base.Collector(label, text)
    for package in base.tables(data.get("package")):
        source = base.table(package.get("source"))
        url = base.text_or_none(source.get("url"))
        if source.get("type") != "git" or url is None:
            continue
        ref = base.text_or_none(source.get("reference"))
        collector.git(
            url,
            name=base.text_or_none(package.get("name")),
            ref=None if ref == "HEAD" else ref,
            commit=base.text_or_none(source.get("resolved_reference")),
            subdirectory=base.text_or_none(source.get("subdirectory")),
            near=f'url = "{url}"',
        )
    return collector.found
