"""pylock.toml and pylock.<name>.toml (PEP 751): `[[packages]]` with a `[packages.vcs]` table.

A git entry has `type = "git"`, `url` (or only a local `path`, skipped), `requested-revision`,
`commit-id` (required) and `subdirectory`.
"""

from __future__ import annotations

from pathlib import Path

from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

NAMES = ("pylock.toml", "pylock.*.toml")


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str) -> Requirements:
    data = base.load_toml(label, text)
    collector = base.Collector(label, text)
    for package in base.tables(data.get("packages")):
        vcs = base.table(package.get("vcs"))
        url = base.text_or_none(vcs.get("url"))
        if vcs.get("type") != "git" or url is None:
            continue
        collector.git(
            url,
            name=base.text_or_none(package.get("name")),
            ref=base.text_or_none(vcs.get("requested-revision")),
            commit=base.text_or_none(vcs.get("commit-id")),
            subdirectory=base.text_or_none(vcs.get("subdirectory")),
            near=f'url = "{url}"',
        )
    return collector.found
