"""Running Heroku app hooks (pre_compile, post_compile) as the Python buildpack does."""

from __future__ import annotations

import subprocess
import sys

from conftest import Build, GeneratedKey


def hook_env(build: Build, key: GeneratedKey | None, **exported: str) -> dict[str, str]:
    """sub_env: config vars exported with $(cat file) (DEPLOY_KEY, and `exported`), plus
    BUILD_DIR/CACHE_DIR/ENV_DIR."""
    env = build.environ()
    env.update(BUILD_DIR=str(build.app), CACHE_DIR=str(build.cache), ENV_DIR=str(build.env_dir))
    if key is not None:
        env["DEPLOY_KEY"] = key.text.rstrip("\n")
    env.update(exported)
    return env


def run_hook(build: Build, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.app / "bin" / name)], cwd=build.app, env=env, capture_output=True, text=True
    )


def python_buildpack_pip(build: Build) -> subprocess.CompletedProcess[str]:
    """pip as the Python buildpack runs it: a process with none of the hook's variables."""
    python = build.app / ".heroku" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python)], check=True)
    env = {
        "PATH": f"{python}/bin:/usr/bin:/bin",
        "HOME": str(build.home),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(build.wheelhouse),
    }
    return subprocess.run(
        [
            str(python / "bin" / "pip"),
            "install",
            "-r",
            "requirements.txt",
            "--no-cache-dir",
            "--no-input",
        ],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
    )
