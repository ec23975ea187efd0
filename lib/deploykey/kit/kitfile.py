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
    from collections.abc import Mapping
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


# Where a script written out of the kit (the app hooks, the scan buildpack's bin/build) sources
# lib/deploykey/python3.sh when run from the kit: a copy holds the file itself instead.
SOURCE_PYTHON3 = (
    b"# shellcheck source=/dev/null\n"
    b'. "$here/../lib/deploykey/python3.sh"  # in a copy written out of the kit: the file itself\n'
)


def script(kit: Mapping[str, bytes], name: str) -> bytes:
    """A shell script of the kit (`files()`) as written out of it: with python3.sh in it."""
    text = kit[name]
    if SOURCE_PYTHON3 not in text:
        raise AssertionError(f"{name} does not source python3.sh")
    return text.replace(SOURCE_PYTHON3, kit["deploykey/python3.sh"])


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
        path = target / "bin" / name
        name_in_kit = f"deploykey/scanbuildpack/{name}"
        path.write_bytes(script(kit, name_in_kit) if name == "build" else kit[name_in_kit])
        path.chmod(0o755)
    write_pyz(target / PYZ)
    output.detail(f"wrote the deploykey/scan buildpack in {target}: buildpack.toml, bin/, {PYZ}")
    return 0
