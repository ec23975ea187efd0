"""deploykey's real entry point run as a user who is not root, as a Dockerfile's `USER` runs it.

The tests run as root; `setpriv` drops to `nobody` (no supplementary groups) for one command. That
user reaches nothing under root's 0700 dirs (pytest's tmp dirs, ~/.cache, pyenv), so each test
works under a world-traversable directory in /tmp, and the kit runs with the system python3 (what
a build image has) and the wheels of its dependencies from a world-readable directory
(DEPLOYKEY_DEPS_DIR).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KIT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def public_dir(prefix: str) -> Path:
    """A directory in /tmp that every user can enter (pytest's are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def kit_deps(directory: Path) -> Path:
    """The wheels of the kit's own dependencies that deps.lock pins, for the system python3, in
    `directory` (DEPLOYKEY_DEPS_DIR: the kit checks each against the lock and imports them)."""
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    abi = "cp" + version.replace(".", "")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:"),
            *("--python-version", version, "--implementation", "cp", "--abi", abi),
            *("--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"),
            *("--platform", "any", "--no-deps", "--require-hashes", "-d", str(directory)),
            *("-r", str(KIT / "lib" / "deploykey" / "deps.lock")),
        ],
        check=True,
        capture_output=True,
    )
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@dataclass(frozen=True)
class NonRoot:
    """A world-traversable root for one test, and the command that runs the kit as nobody."""

    root: Path
    deps: Path
    wheels: Path

    @property
    def uid(self) -> int:
        return nobody().pw_uid

    @property
    def gid(self) -> int:
        return nobody().pw_gid

    def mkdir(self, name: str, owner: int | None = None, mode: int = 0o755) -> Path:
        """A directory under the root, owned by `owner` (default root)."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, owner if owner is not None else 0, 0)
        path.chmod(mode)
        return path

    def write(self, name: str, data: bytes, owner: int | None = None, mode: int = 0o644) -> Path:
        path = self.root / name
        path.write_bytes(data)
        os.chown(path, owner if owner is not None else 0, 0)
        path.chmod(mode)
        return path

    def environ(self, deps: bool = True, **extra: str) -> dict[str, str]:
        home = self.mkdir("home", owner=self.uid)
        env = {
            "PATH": PATH,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.wheels),
            "DEPLOYKEY_INSTALLER": "pip",
        }
        if deps:
            env["DEPLOYKEY_DEPS_DIR"] = str(self.deps)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        """`deploykey ARGS` as nobody: setpriv, as tests/support/lifecycle.py runs the CNB phases."""
        return [*self.drop, SYSTEM_PYTHON, "-I", str(KIT / "lib" / "deploykey"), *args]

    @property
    def drop(self) -> tuple[str, ...]:
        """What runs a command as nobody."""
        return ("setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups")

    def run_program(
        self, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        """`argv` (a program of the kit, as a platform runs it) as nobody."""
        return subprocess.run(
            [*self.drop, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )

    def run(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, secrets: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the kit as nobody. With `secrets`, in a mount namespace of its own whose
        /run/secrets holds a copy of each file there, root-owned, mode 0400, as BuildKit mounts
        a `--mount=type=secret` without `uid=`; the machine's /run is not touched."""
        argv = self.argv(*args)
        if secrets is not None:
            script = (
                "set -e; mount -t tmpfs -o mode=0755 tmpfs /run; mkdir /run/secrets; "
                'cp "$0"/* /run/secrets/; chown 0:0 /run/secrets/*; chmod 0400 /run/secrets/*; '
                'exec "$@"'
            )
            argv = [
                *("unshare", "--mount", "--propagation", "private"),
                *("sh", "-c", script, str(secrets), *argv),
            ]
        return subprocess.run(
            argv,
            cwd=cwd,
            env=env or self.environ(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
