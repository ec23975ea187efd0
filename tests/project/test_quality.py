"""The code's own checks, run as tests so the README's one test command covers them."""

from __future__ import annotations

import subprocess
import sys

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
