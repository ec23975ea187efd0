"""uv.lock: every `[[package]]` whose source is git, with the commit uv resolved.

uv writes a git source as one URL: the requested reference and the subdirectory in the query, the
precise commit in the fragment, e.g.
`source = { git = "ssh://git@github.com/acme/x.git?subdirectory=pkg%2Fx&tag=v1.0#<full sha>" }`
(`locked_git_url` in astral-sh/uv crates/uv-resolver/src/lock; checked against the real
`uv lock` 0.13.9, which percent-encodes the query). The `[package.metadata] requires-dist` URLs
are the project's requests without the commit: skipped, the package entries name the same
repositories pinned. Transitive dependencies are packages of their own.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from deploykey.core.errors import UserError
from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

NAMES = ("uv.lock",)
REFS = ("tag", "branch", "rev")


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str) -> Requirements:
    data = base.load_toml(label, text)
    collector = base.Collector(label, text)
    for package in base.tables(data.get("package")):
        source = base.text_or_none(base.table(package.get("source")).get("git"))
        if source is None:
            continue
        try:
            url = urlsplit(source)
        except ValueError as error:  # `ssh://[host/x`: an unclosed IPv6 bracket
            name = base.text_or_none(package.get("name")) or "a package"
            # The URL is not shown: an https one may hold a token.
            detail = f"the git source of {name} is not a URL ({error})"
            raise UserError(
                "manifests::invalid", file=label, format="TOML", detail=detail
            ) from None
        query = parse_qs(url.query)
        ref = next((query[key][0] for key in REFS if key in query), None)
        subdirectory = query.get("subdirectory", [None])[0]
        collector.git(
            urlunsplit((url.scheme, url.netloc, url.path, "", "")),
            name=base.text_or_none(package.get("name")),
            ref=ref,
            commit=url.fragment or None,
            subdirectory=subdirectory,
            near=f'git = "{source}"',
        )
    return collector.found
