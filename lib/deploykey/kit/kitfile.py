"""The kit as files to hand out: a zipapp (`deploykey.pyz`) and the scan buildpack around one.

App hooks and the CNB scan step run where the kit's repository is not: heroku-buildpack-python runs
an app's own bin/ hooks, and `pack` copies a buildpack's directory and nothing beside it. So the kit
travels as one zip file next to the scripts that run it; its three dependencies are installed at
build time (bootstrap.py), never shipped in the app.
"""

from __future__ import annotations

import tempfile
import zipapp
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from deploykey import __version__
from deploykey.core import output

if TYPE_CHECKING:
    from importlib.abc import Traversable

PYZ = "deploykey.pyz"
ZIP_MAIN = "from deploykey.__main__ import entry\n\nentry()\n"


def files() -> dict[str, bytes]:
    """The package's files (sources, pinned host keys, scripts), by path inside the zipapp."""
    found: dict[str, bytes] = {}

    def collect(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    collect(child, name + "/")
            elif not child.name.endswith(".pyc"):
                found[name] = child.read_bytes()

    collect(resources.files("deploykey"), "deploykey/")
    return found


def write_pyz(target: Path) -> None:
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging, "app")
        for name, data in files().items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (root / "__main__.py").write_text(ZIP_MAIN)
        zipapp.create_archive(root, target, interpreter="/usr/bin/env python3", compressed=True)


def write_scan_buildpack(directory: str) -> int:
    """`deploykey scan-buildpack DIR`: the deploykey/scan buildpack, for a post-group."""
    target = Path(directory)
    kit = files()
    (target / "bin").mkdir(parents=True, exist_ok=True)
    toml = kit["deploykey/scanbuildpack/buildpack.toml"].decode().replace("@VERSION@", __version__)
    (target / "buildpack.toml").write_text(toml)
    for name in ("detect", "build"):
        script = target / "bin" / name
        script.write_bytes(kit[f"deploykey/scanbuildpack/{name}"])
        script.chmod(0o755)
    write_pyz(target / PYZ)
    output.detail(f"wrote the deploykey/scan buildpack in {target}: buildpack.toml, bin/, {PYZ}")
    return 0
