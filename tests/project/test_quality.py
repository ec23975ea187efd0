"""The code's own checks, run as tests so the README's one test command covers them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import KIT

SHELL_SCRIPTS = [
    "bin/detect",
    "bin/compile",
    "bin/release",
    "bin/deploykey",
    "bin/build",
    "lib/deploykey/scanbuildpack/detect",
    "lib/deploykey/scanbuildpack/build",
    "lib/deploykey/hooks/pre_compile",
    "lib/deploykey/hooks/post_compile",
    "lib/deploykey/python3.sh",
    "examples/demo",
    ".ci/setup",
    ".ci/run",
]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=KIT, capture_output=True, text=True)


def test_ruff() -> None:
    result = run(sys.executable, "-m", "ruff", "check", "lib", "tests", "examples", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(
        sys.executable, "-m", "ruff", "format", "--check", "lib", "tests", "examples", "bench"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck() -> None:
    result = run("shellcheck", *SHELL_SCRIPTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_private_key_is_committed() -> None:
    """Test keys are generated at run time; a tracked file holding one fails the build."""
    import re

    pem = re.compile(
        rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z-]+: .*\r?\n)*\r?\n?[A-Za-z0-9+/=]{60,}"
    )
    tracked = run("git", "ls-files", "-z").stdout.split("\0")
    holding = [
        name
        for name in tracked
        if name and (KIT / name).is_file() and pem.search((KIT / name).read_bytes())
    ]
    assert holding == []


# lib/deploykey/'s packages, each with what it may import (its __init__.py says the same): a floor
# imports only floors below it, so there is no cycle; "" is the package root (`__version__`).
LAYERS = {
    "core": {""},
    "kit": {"", "core"},
    "manifests": {"", "core"},
    "secrets": {"", "core", "manifests"},
    "fetch": {"", "core", "manifests", "secrets"},
    "leak": {"", "core", "secrets"},
    "installers": {"", "core", "kit", "manifests", "secrets", "fetch", "leak"},
    "build": {"", "core", "kit", "manifests", "secrets", "fetch", "leak", "installers"},
    "platforms": {
        "",
        "core",
        "kit",
        "manifests",
        "secrets",
        "fetch",
        "leak",
        "installers",
        "build",
    },
    "cli": {"", "core", "kit", "platforms"},
    "__main__": {"", "kit", "cli"},
    "__init__": set(),
}
# Heroku's app hooks share the Heroku build's cache and trust settings: the one platform pair.
PLATFORM_PAIRS = {("apphooks", "heroku")}


def imports_of(path: Path) -> set[str]:
    """The deploykey modules a file imports, as dotted names below `deploykey.`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deploykey"):
            base = node.module.removeprefix("deploykey").removeprefix(".")
            for alias in node.names:
                whole = f"{base}.{alias.name}".lstrip(".")
                package = KIT / "lib" / "deploykey" / whole.replace(".", "/")
                is_module = package.with_suffix(".py").is_file() or package.is_dir()
                names.add(whole if is_module else base)
        elif isinstance(node, ast.Import):
            names |= {
                a.name.removeprefix("deploykey.")
                for a in node.names
                if a.name.startswith("deploykey.")
            }
    return names


def test_packages_import_only_the_floors_below() -> None:
    root = KIT / "lib" / "deploykey"
    wrong = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        floor = parts[0]
        assert floor in LAYERS, f"{path}: a package or top-level module without a floor in LAYERS"
        for name in imports_of(path):
            target = name.split(".")[0]
            if target == floor and floor != "platforms":
                continue
            if floor == "platforms" and target == "platforms":
                if (parts[-1], name.split(".")[-1]) not in PLATFORM_PAIRS:
                    wrong.append(f"{path.relative_to(KIT)} imports deploykey.{name}")
                continue
            if target not in LAYERS[floor]:
                wrong.append(f"{path.relative_to(KIT)} imports deploykey.{name}")
    assert wrong == []
