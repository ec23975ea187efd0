"""setup.cfg: the statically written `[options] install_requires` and `[options.extras_require]`.

Each line is a PEP 508 requirement (setuptools' declarative config). A `file:` directive points at a
requirements file, which the requirements reader finds by itself when it is in the app dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deploykey.core.errors import UserError
from deploykey.manifests import base
from deploykey.manifests.requirements import Requirements

if TYPE_CHECKING:
    import configparser

NAMES = ("setup.cfg",)


def read(app_dir: Path, path: Path) -> Requirements:
    return parse(base.label(app_dir, path), base.read_text(path))


def parse(label: str, text: str) -> Requirements:
    import configparser  # here: an app without setup.cfg never needs it (1% of a warm build)

    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read_string(text, source=label)
    except configparser.Error as error:
        raise UserError("manifests::invalid", file=label, format="INI", detail=str(error)) from None
    values = [config.get("options", "install_requires", fallback="")]
    if config.has_section("options.extras_require"):
        values += [config.get("options.extras_require", key) for key in _own_keys(config)]
    collector = base.Collector(label, text)
    for value in values:
        if value.strip().startswith("file:"):
            continue
        for line in value.splitlines():
            requirement = line.split(" #", 1)[0].strip()
            if requirement and not requirement.startswith("#"):
                collector.pep508(requirement)
    return collector.found


def _own_keys(config: configparser.ConfigParser) -> list[str]:
    """The extras' names, without the keys `[DEFAULT]` would add to every section."""
    defaults = set(config.defaults())
    return [key for key in config.options("options.extras_require") if key not in defaults]
