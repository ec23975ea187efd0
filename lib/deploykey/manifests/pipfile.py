"""Pipfile (TOML) and Pipfile.lock (JSON), Pipenv's manifest and lockfile.

- Pipfile: `[packages]` and `[dev-packages]` entries `x = {git = URL, ref = REF, editable = true,
  subdirectory = DIR}`.
- Pipfile.lock: the `default` and `develop` sections hold the same keys, with `ref` the commit
  Pipenv resolved; the requested ref is not kept there.

Dev packages count: heroku-buildpack-python installs them on Heroku CI (`pipenv install --deploy
--dev` when INSTALL_TEST is set, lib/pipenv.sh at v351). `editable` entries are reported in
`editable_vcs`, like `-e git+...` lines, since pip installs them as checkouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

NAMES = ("Pipfile", "Pipfile.lock")


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str) -> Requirements:
    if label.endswith(".lock"):
        data = base.load_json(label, text)
        return _entries(label, text, data, ("default", "develop"), locked=True)
    data = base.load_toml(label, text)
    return _entries(label, text, data, ("packages", "dev-packages"), locked=False)


def _entries(
    label: str, text: str, data: dict[str, Any], sections: tuple[str, ...], *, locked: bool
) -> Requirements:
    collector = base.Collector(label, text)
    for section in sections:
        for name, entry in base.table(data.get(section)).items():
            spec = base.table(entry)
            url = base.text_or_none(spec.get("git"))
            if url is None:
                continue
            ref = base.text_or_none(spec.get("ref"))
            collector.git(
                url,
                name=name,
                ref=None if locked else ref,
                commit=ref if locked else None,
                subdirectory=base.text_or_none(spec.get("subdirectory")),
                editable=spec.get("editable") is True,
                near=f'"git": "{url}"' if locked else "",
            )
    return collector.found
