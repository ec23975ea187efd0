"""requirements*.txt and pip-tools' .in files, read by `deploykey.manifests.requirements` as pip does."""

from __future__ import annotations

from pathlib import Path

from deploykey.manifests import base, requirements
from deploykey.manifests.requirements import Requirements

NAMES = requirements.DETECT_GLOBS


def read(app_dir: Path, path: Path) -> Requirements:
    """The file and everything it includes (`-r`, `-c`), relative to the app dir."""
    return requirements.read(app_dir, base.label(app_dir, path))


def parse(label: str, text: str) -> Requirements:
    """Text from elsewhere (a fetched repository): its includes are not followed."""
    return requirements.read_text(label, text)
