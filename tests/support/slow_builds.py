"""Builds held in the middle (a fetch or compile that waits) to be signalled or killed, and
the processes they leave to clean up.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import BIN, Build, GeneratedKey
from support.gitserver import GitServer

SLOW = "slow-lib @ git+ssh://git@github.com/acme/slow-lib.git@v1.0\n"


def start_compile(build: Build, *args: str) -> subprocess.Popen[str]:
    argv = [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir), *args]
    return subprocess.Popen(
        argv, env=build.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError("the build ended early:\n" + "".join(process.communicate()))
        assert time.monotonic() < deadline, "the slow build never started"
        time.sleep(0.05)


def start_slow_fetch(
    build: Build, key: GeneratedKey, git_server: GitServer
) -> subprocess.Popen[str]:
    """bin/compile of an app whose one private repository the server holds open (acme/slow-fetch,
    served after a minute): returned once git is fetching it, with the key."""
    if not (git_server.root / "repos" / "acme" / "slow-fetch.git").exists():
        git_server.add_repo("acme/slow-fetch", {"README": "served after a minute\n"})
    git_server.grant(key.label, key.public, ["acme/slow-fetch"])
    started = git_server.root / "repos" / "slow-fetch-started"
    started.unlink(missing_ok=True)
    build.set_key(key.text)
    (build.app / "requirements.txt").write_text(
        "slow-fetch @ git+ssh://git@github.com/acme/slow-fetch.git@v1.0\n"
    )
    process = start_compile(build)
    try:
        wait_for(started, process)
    except BaseException:
        kill_leftovers(build)
        raise
    return process


def kill_leftovers(build: Build) -> None:
    subprocess.run(["pkill", "-KILL", "-f", str(build.root)], check=False)
