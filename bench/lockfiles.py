"""Benchmark: uv and Poetry apps with private git dependencies, deploykey against the tool by hand.

    python3 bench/lockfiles.py [--n 1 5] [--runs 3] [--tools uv poetry]

A local OpenSSH server (tests/support/gitserver.py) serves N private packages that build with no index
(tests/support/installers.py); the app is a pyproject.toml naming them, locked by the tool itself (uv.lock,
poetry.lock) through a hand-written ssh config, as a developer does. Each run times, in order:
  (a) by hand: the tool's locked install (`uv sync --locked`, `poetry sync --only main`) into a
      fresh project venv with a hand-written ssh config and an empty tool cache, as a fresh build;
  (b) deploykey cold: bin/compile (DEPLOYKEY_INSTALL=venv) with an empty CACHE_DIR;
  (c) deploykey warm: bin/compile again, a fresh checkout, the same CACHE_DIR;
  (d) (a) with the repositories read from the server's copies on local disk, no network: the
      tool's own work, below which no install from a mirror can go (issue 23's uv cold floor).
The tools are the pinned ones of tests/support/installers.py (uv 0.13.9, Poetry 2.5.1). Medians over the
runs, and each one's ratio to (a) in the same run; then, for each cell, where deploykey's cold and
warm builds spend their time (bench/heavyapp.py's `phases`: from each step header of bin/compile's
output to the next, medians).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "tests"))

from heavyapp import phases  # noqa: E402

from support.gitserver import GitServer  # noqa: E402
from support.installers import Tools, install_tools, noindex_package  # noqa: E402

MANAGERS = {
    "uv": ("uv.lock", "uv lock", "uv sync --locked --no-default-groups --no-progress"),
    "poetry": ("poetry.lock", "poetry lock", "poetry sync --only main --no-interaction"),
}


# bin/compile's step headers (their first word) as the breakdown names them.
SHORT = {
    "deploykey": "keys",
    "Fetching": "fetch",
    "Removing": "scrub",
    "Installing": "install",
    "Restoring": "install",
    "Checking": "leak check",
    "Done": "exit",
}


def package(index: int) -> dict[str, str]:
    """The no-index test package under its own name."""
    return {
        path.replace("noindex_lib", f"nx{index}_lib"): text.replace(
            "noindex_lib", f"nx{index}_lib"
        ).replace("noindex-lib", f"nx{index}-lib")
        for path, text in noindex_package().items()
    }


class Scenario:
    def __init__(self, server: GitServer, n: int, manager: str, work: Path, tools: Tools) -> None:
        self.server, self.n, self.manager, self.work, self.tools = server, n, manager, work, tools
        self.key = work / f"key-{manager}-{n}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        names = [f"acme/{manager}{n}x{i}" for i in range(n)]
        for i, name in enumerate(names):
            server.add_repo(name, package(i))
        server.grant(f"{manager}{n}", Path(f"{self.key}.pub").read_text(), names)
        deps = [
            f"nx{i}-lib @ git+ssh://git@github.com/{name}.git@v1.0" for i, name in enumerate(names)
        ]
        project = textwrap.dedent(
            """\
            [project]
            name = "app"
            version = "0.1.0"
            requires-python = ">=3.10"
            """
        ) + f"dependencies = {deps!r}\n".replace("'", '"')
        if manager == "poetry":
            project += "\n[tool.poetry]\npackage-mode = false\n"
        self.source = work / f"app-{manager}-{n}"
        self.source.mkdir()
        (self.source / "pyproject.toml").write_text(project)
        (self.source / "deploykey.yml").write_text(server.deploykey_yml())
        lockfile, lock, _sync = MANAGERS[manager]
        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        run(lock, self.source, self.by_hand_env(home))
        assert (self.source / lockfile).is_file()

    def by_hand_env(self, home: Path) -> dict[str, str]:
        """The seeds' recipe for the tool: an ssh config by hand (no host key check)."""
        config = home / "ssh_config"
        config.write_text(
            f"Host github.com\n  HostName 127.0.0.1\n  Port {self.server.port}\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n"
        )
        return {
            **self.base_env(home),
            "GIT_SSH_COMMAND": f"ssh -F {config}",
            "POETRY_SYSTEM_GIT_CLIENT": "true",  # dulwich reads no GIT_SSH_COMMAND
            "UV_CACHE_DIR": str(home / "uv-cache"),
            "POETRY_CACHE_DIR": str(home / "poetry-cache"),
            "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        }

    def base_env(self, home: Path) -> dict[str, str]:
        links = self.work / "bin"  # the tools alone, not their venvs' pythons
        links.mkdir(exist_ok=True)
        for tool in (self.tools.uv, self.tools.poetry):
            if not (links / tool.name).exists():
                (links / tool.name).symlink_to(tool)
        path = f"{Path(self.tools.python).parent}:{links}:/usr/bin:/bin"
        return {
            "PATH": path,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "UV_PYTHON": self.tools.python,
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_NO_INDEX": "1",
        }

    def app(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="app-", dir=self.work))
        for name in ("pyproject.toml", "deploykey.yml", MANAGERS[self.manager][0]):
            shutil.copy(self.source / name, directory / name)
        return directory

    def by_hand(self) -> float:
        app, home = self.app(), Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        return run(MANAGERS[self.manager][2], app, self.by_hand_env(home))

    def local(self) -> float:
        """(d) as (a), the repositories read from the server's own copies on this disk (git's
        insteadOf to file://): the tool's time without the network, which deploykey's install
        from its mirrors cannot beat. (a) - (d) is what the network costs the tool."""
        app, home = self.app(), Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        copies = self.work / f"copies-{self.manager}-{self.n}"  # this user's: else git refuses them
        if not copies.exists():
            shutil.copytree(self.server.root / "repos", copies)
        env = {
            **self.by_hand_env(home),
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.file://{copies}/.insteadOf",
            "GIT_CONFIG_VALUE_0": "ssh://git@github.com/",
        }
        return run(MANAGERS[self.manager][2], app, env)

    def deploykey(self, cache: Path) -> tuple[float, list[tuple[str, float]]]:
        """bin/compile's time, and its steps' (see heavyapp.phases)."""
        app, home = self.app(), Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        env_dir = Path(tempfile.mkdtemp(prefix="env-", dir=self.work))
        (env_dir / "DEPLOY_KEY").write_text(self.key.read_text())
        env = {**self.base_env(home), "DEPLOYKEY_INSTALL": "venv", "DEPLOYKEY_APP_PATH": str(app)}
        seconds, steps, _scanned = phases(
            [str(KIT / "bin" / "compile"), str(app), str(cache), str(env_dir)], env
        )
        return seconds, steps


def run(command: str, cwd: Path, env: dict[str, str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"failed: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", nargs="+", choices=sorted(MANAGERS), default=list(MANAGERS))
    args = parser.parse_args()
    tools = install_tools()
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-locks-"))
    server = GitServer.create()
    rows = []
    # (tool, N, cold or warm) -> step -> seconds, one per run
    steps: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    try:
        server.start()
        for manager in args.tools:
            for n in args.n:
                scenario = Scenario(server, n, manager, work, tools)
                times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
                for _ in range(args.runs):
                    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
                    times["a"].append(scenario.by_hand())
                    times["d"].append(scenario.local())
                    for build in "bc":
                        seconds, spent = scenario.deploykey(cache)
                        times[build].append(seconds)
                        cell = steps.setdefault((manager, n, build), {})
                        for name, each in spent:  # the header's first word: no paths
                            step = SHORT.get(name.split()[0], name.split()[0])
                            cell.setdefault(step, []).append(each)
                medians = {name: statistics.median(values) for name, values in times.items()}
                rows.append((manager, n, medians))
                print(f"{manager} N={n}: " + ", ".join(f"{k}={v:.2f}s" for k, v in medians.items()))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| tool | private deps | (a) the tool by hand | (b) deploykey cold | (c) deploykey warm "
        "| (d) the tool from a local copy |"
    )
    print("|---|---|---|---|---|---|")
    for manager, n, m in rows:
        cells = [f"{m['a']:.2f} s"] + [f"{m[k]:.2f} s ({m['a'] / m[k]:.1f}x)" for k in "bcd"]
        print(f"| {manager} | {n} | " + " | ".join(cells) + " |")
    print(
        f"\n{args.runs} runs per cell, medians; ratios: (a)'s time / the cell's; {os.cpu_count()} CPUs"
    )
    print("\nBy step (medians, seconds; start-up: to the first step header):")
    for (manager, n, build), cell in steps.items():
        shown = ", ".join(
            f"{name} {statistics.median(values):.2f}" for name, values in cell.items()
        )
        print(f"  {manager} N={n} {'cold' if build == 'b' else 'warm'}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
