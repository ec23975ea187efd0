"""A build image's system python3 without the kit's dependencies: they are installed outside the app."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import KIT, snapshot

SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_dependencies_bootstrapped_into_a_private_temp_dir(tmp_path: Path) -> None:
    missing = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import sh, dotenv"], capture_output=True
    )
    if missing.returncode == 0:
        pytest.fail(
            "/usr/bin/python3 already has sh and dotenv: this test needs a Python without them"
        )
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("flask\n")
    env_file = tmp_path / "local.env"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    env_file.write_text("DEPLOY_KEY='" + (tmp_path / "k").read_text() + "'\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    state = snapshot(app)
    result = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-I",
            str(KIT / "lib" / "deploykey"),
            "compile",
            str(app),
            str(tmp_path / "cache"),
            str(env_file),
            "--dry-run",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Installing deploykey's dependencies" in result.stdout
    installed = next(temp.glob("deploykey-deps-*/py3*"))
    assert (installed / "sh.py").exists() or (installed / "sh").exists()
    assert oct(installed.parent.stat().st_mode & 0o777) == "0o700"
    assert snapshot(app) == state
