"""Write lib/deploykey/deps.lock: the kit's own dependencies pinned, with every wheel's sha256.

    python3 .ci/deps_lock.py [NAME==VERSION ...]   # the newest release in pyproject's range, or these
    python3 .ci/deps_lock.py --check               # exit 1 if the lock is not what PyPI has

For each of pyproject.toml's dependencies, one version (the newest release within its range that
has wheels, unless named) and the sha256 of every wheel PyPI has for it, from PyPI's JSON API
(https://pypi.org/pypi/NAME/json: its releases; the per-version URL is not served by every proxy). No sdists: the bootstrap installs wheels only. The lock
is in pip's --require-hashes format; lib/deploykey/kit/bootstrap.py reads it too.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

KIT = Path(__file__).resolve().parents[1]
LOCK = KIT / "lib" / "deploykey" / "deps.lock"
PYPI = "https://pypi.org/pypi"
HEADER = """\
# deploykey's own dependencies: one version of each (within pyproject.toml's ranges) and the
# sha256 of every wheel PyPI has for it. lib/deploykey/kit/bootstrap.py installs only these files
# (pip --require-hashes) and hashes them again before every import. Written by
# `python3 .ci/deps_lock.py` (see there to pin another version); do not edit by hand.
"""


def releases(name: str) -> dict[str, list[dict[str, Any]]]:
    """Each version's files (filename, packagetype, digests, yanked)."""
    with urllib.request.urlopen(f"{PYPI}/{name}/json", timeout=30) as response:  # noqa: S310
        found: dict[str, list[dict[str, Any]]] = json.load(response)["releases"]
        return found


def wheels(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in files if f["packagetype"] == "bdist_wheel" and not f.get("yanked")]


def newest(requirement: Requirement, found: dict[str, list[dict[str, Any]]]) -> str:
    candidates = [
        Version(version)
        for version, files in found.items()
        if wheels(files) and requirement.specifier.contains(version)
    ]
    if not candidates:
        raise SystemExit(f"PyPI has no release of {requirement} with wheels")
    return str(max(candidates))


def lock(pins: dict[str, str]) -> str:
    dependencies = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]["dependencies"]
    blocks = []
    for line in dependencies:
        requirement = Requirement(line)
        found = releases(requirement.name)
        version = pins.get(canonicalize_name(requirement.name)) or newest(requirement, found)
        if not requirement.specifier.contains(version) or not wheels(found.get(version, [])):
            raise SystemExit(
                f"{requirement.name}=={version}: no wheels on PyPI, or not {requirement}"
            )
        digests = sorted(f["digests"]["sha256"] for f in wheels(found.get(version, [])))
        hashes = " \\\n".join(f"    --hash=sha256:{digest}" for digest in digests)
        blocks.append(f"{canonicalize_name(requirement.name)}=={version} \\\n{hashes}\n")
    return HEADER + "".join(blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pins", nargs="*", metavar="NAME==VERSION")
    parser.add_argument("--check", action="store_true", help="compare the lock's pins with PyPI")
    args = parser.parse_args()
    if args.check:
        current = [line.split(" ")[0] for line in LOCK.read_text().splitlines() if "==" in line]
        expected = lock(dict(pin.split("==") for pin in current))
        if LOCK.read_text() != expected:
            print(f"{LOCK} is not what PyPI has for {', '.join(current)}", file=sys.stderr)
            return 1
        print(f"{LOCK}: {', '.join(current)}, every wheel's sha256 as PyPI has it")
        return 0
    pins = dict(pin.split("==") for pin in args.pins)
    LOCK.write_text(lock({canonicalize_name(name): version for name, version in pins.items()}))
    print(f"wrote {LOCK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
