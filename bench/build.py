"""Benchmark: builds with private git dependencies, deploykey against the plain way.

    python3 bench/build.py [--n 1 5 20] [--runs 3]

A local OpenSSH server (tests/support/gitserver.py) serves N private packages, next to public ones (requests
and what it needs) from a local wheelhouse; the app needs all of them. Each run times, in order:
  (a) plain: the seeds' recipe, a hand-written ssh config and `pip install -r` in a fresh venv and a
      fresh HOME, as every Heroku build starts;
  (b) deploykey cold: bin/compile with an empty CACHE_DIR (uv is installed into it from the
      wheelhouse; the kit's own dependencies are present);
  (c) deploykey warm: bin/compile again, a fresh build dir, the same CACHE_DIR;
  (d) deploykey after one dependency's new tag: that dependency's tag and requirement changed.
Medians over the runs, and each one's ratio to (a) in the same run. Also the kit's start-up: the
time from starting bin/compile to its "ssh ready" line, with its dependencies present (the python3
on PATH has them), kept (the system python3, which lacks them; an earlier build with the same key
kept their wheels, and the bytecode compiled from them, sealed, in the cache) and missing (the
system python3, an empty cache: they are installed first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "tests"))

from conftest import KIT_PINS, download_wheels, flit_package  # noqa: E402
from support.gitserver import GitServer  # noqa: E402

PUBLIC = ("requests==2.32.3",)
WHEELS = ("flit_core==3.9.0", "uv", *KIT_PINS, *PUBLIC)


def wheelhouse(cache: Path) -> Path:
    directory = cache / "wheels"
    if not any(directory.glob("requests-*.whl")) or not any(directory.glob("ahocorasick_rs-*")):
        directory.mkdir(parents=True, exist_ok=True)
        download_wheels(directory, *WHEELS)
    return directory


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"failed: {' '.join(argv)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return time.perf_counter() - began


def until_ssh_ready(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from the start to the "ssh ready" line, and the CPU time the process had used by
    then (user and system, its own and its reaped children's: /proc/PID/stat, proc(5); bin/compile
    execs python3 in the same process). The CPU time tells a busy machine from a slower kit."""
    began = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    seconds, cpu = -1.0, -1.0
    for line in process.stdout:
        if "ssh ready:" in line and seconds < 0:
            seconds = time.perf_counter() - began
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")  # utime .. cstime
    process.wait()
    if seconds < 0:
        raise SystemExit("no 'ssh ready' line")
    return seconds, cpu


class Scenario:
    def __init__(self, server: GitServer, n: int, work: Path, wheels: Path) -> None:
        self.server, self.n, self.work, self.wheels = server, n, work, wheels
        # One key for the N repositories (a machine user's), as in the seeds' recipe.
        self.key = work / f"key{n}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        self.refs = {f"pkg{n}x{i}": "v1.0" for i in range(n)}
        for name in self.refs:
            server.add_repo(f"acme/{name}", flit_package(name, "1.0"))
        public = Path(f"{self.key}.pub").read_text()
        server.grant(f"bench{n}", public, [f"acme/{name}" for name in self.refs])

    def requirements(self) -> str:
        lines = [
            f"{name} @ git+ssh://git@github.com/acme/{name}.git@{ref}"
            for name, ref in self.refs.items()
        ]
        return "\n".join([*lines, *PUBLIC]) + "\n"

    def app(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="app-", dir=self.work))
        (directory / "requirements.txt").write_text(self.requirements())
        (directory / "deploykey.yml").write_text(self.server.deploykey_yml())
        return directory

    def env(self, home: Path) -> dict[str, str]:
        return offline_env(home, self.wheels)

    def plain(self) -> float:
        """The seeds' recipe: an ssh config by hand (no host key check), then pip."""
        app, home = self.app(), Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        config = home / "ssh_config"
        config.write_text(
            f"Host github.com\n  HostName 127.0.0.1\n  Port {self.server.port}\n  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        )
        env = {**self.env(home), "GIT_SSH_COMMAND": f"ssh -F {config}"}
        began = time.perf_counter()
        timed([sys.executable, "-m", "venv", str(app / ".venv")], env)
        timed(
            [str(app / ".venv" / "bin" / "pip"), "install", "--quiet", "-r", "requirements.txt"],
            env,
            cwd=app,
        )
        return time.perf_counter() - began

    def deploykey(self, cache: Path, installer: str = "auto") -> float:
        return timed(*self.compile(cache, installer))

    def compile(self, cache: Path, installer: str = "auto") -> tuple[list[str], dict[str, str]]:
        """bin/compile of a fresh checkout with `cache` as CACHE_DIR: its argv and environment."""
        app, home = self.app(), Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        env_dir = Path(tempfile.mkdtemp(prefix="env-", dir=self.work))
        (env_dir / "DEPLOY_KEY").write_text(self.key.read_text())
        env = {**self.env(home), "DEPLOYKEY_APP_PATH": str(app), "DEPLOYKEY_INSTALLER": installer}
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not shutil.which("uv", path=p))
        return [str(KIT / "bin" / "compile"), str(app), str(cache), str(env_dir)], env

    def new_tag(self, index: int, tag: str) -> None:
        name = list(self.refs)[index % self.n]
        files = flit_package(name, tag.lstrip("v"))
        self.server.add_commit(f"acme/{name}", files, tag)
        self.refs[name] = tag


def startup(
    scenario: Scenario, deps_present: bool, cache: Path | None = None, dry_run: bool = True
) -> tuple[float, float]:
    app = scenario.app()
    cache = cache or Path(tempfile.mkdtemp(prefix="cache-", dir=scenario.work))
    env_dir = Path(tempfile.mkdtemp(prefix="env-", dir=scenario.work))
    (env_dir / "DEPLOY_KEY").write_text(scenario.key.read_text())
    env = {**scenario.env(app), "DEPLOYKEY_APP_PATH": str(app)}
    if not deps_present:
        env["PATH"] = "/usr/bin:/bin"  # the system python3: none of the kit's dependencies
    argv = [str(KIT / "bin" / "compile"), str(app), str(cache), str(env_dir)]
    return until_ssh_ready(argv + (["--dry-run"] if dry_run else []), env)


def offline_env(home: Path, wheels: Path) -> dict[str, str]:
    """A build's environment: pip finds packages in the wheelhouse alone."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PYENV_ROOT": os.environ.get("PYENV_ROOT", ""),
    }


def cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploykey-bench",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--runs", type=int, default=3)
    cache_option(parser)
    args = parser.parse_args()
    wheels = wheelhouse(args.cache)
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-"))
    server = GitServer.create()
    try:
        server.start()
        rows = []
        for n in args.n:
            scenario = Scenario(server, n, work, wheels)
            times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
            for run in range(args.runs):
                cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
                times["a"].append(scenario.plain())
                times["b"].append(scenario.deploykey(cache))
                times["c"].append(scenario.deploykey(cache))
                scenario.new_tag(run, f"v1.{run + 1}")
                times["d"].append(scenario.deploykey(cache))
            medians = {name: statistics.median(values) for name, values in times.items()}
            rows.append((n, medians))
            print(
                f"N={n}: "
                + ", ".join(f"{k}={statistics.median(v):.2f}s" for k, v in times.items()),
                flush=True,
            )
        present = [startup(scenario, True) for _ in range(5)]
        kept = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
        startup(scenario, False, kept, dry_run=False)  # a build that keeps them in the cache
        kept_runs = [startup(scenario, False, kept) for _ in range(5)]
        ready_missing, _ = startup(scenario, False)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| private deps | (a) plain pip | (b) deploykey cold | (c) deploykey warm | (d) warm, one new tag |"
    )
    print("|---|---|---|---|---|")
    for n, m in rows:
        cells = [f"{m['a']:.2f} s"] + [f"{m[k]:.2f} s ({m['a'] / m[k]:.1f}x)" for k in "bcd"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()
    wall, cpu = (statistics.median(values) for values in zip(*present, strict=True))
    kept_wall, kept_cpu = (statistics.median(values) for values in zip(*kept_runs, strict=True))
    print(
        f"start-up to ssh ready: {wall:.2f} s ({cpu:.2f} s CPU) with the kit's dependencies present "
        f"(the python3 on PATH has them; medians of 5); {kept_wall:.2f} s ({kept_cpu:.2f} s CPU) "
        "with them kept in the cache by an earlier build (the system python3; medians of 5); "
        f"{ready_missing:.2f} s on a first build without them (installed into the cache)"
    )
    print(
        f"{args.runs} runs per cell, medians; ratios: (a)'s time / the cell's; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
