"""Benchmark: a private dependency with a long history of large files, bytes counted at the server.

    python3 bench/bigrepo.py [--commits 30] [--size-mb 2]

A local OpenSSH server (tests/support/gitserver.py, served as GitHub serves: protocol v2, partial clone and
fetch by id allowed) holds acme/big: COMMITS commits that each replace a SIZE-MB random file, then
a release that removes it and holds a small package, tagged v1.0 (the tree at the tag is small,
the history is not). The server counts what its git-upload-pack sends. In one run, side by side:
  (a) pip 26 by itself: a hand-written ssh config and `pip install` in a fresh venv (pip clones
      with `git clone --filter=blob:none`, then checks out the tag);
  (b) uv by hand: `uv pip install` with the same ssh config and a fresh uv cache;
  (c) deploykey cold, DEPLOYKEY_INSTALLER=pip: bin/compile with an empty cache (a partial mirror);
  (d) deploykey after a new tag v1.1 (one small commit), the same cache;
  (e) deploykey warm: bin/compile again, nothing new;
  (f) deploykey cold with uv (DEPLOYKEY_INSTALLER=uv): a partial mirror too, uv's fetch told to
      ask it for pip's filter (mirrors.Mirrors.promisors);
  (g) Poetry by hand: `poetry lock` then `poetry sync` with the same ssh config (its system git
      client: `git clone` of the whole history);
  (h) deploykey cold with Poetry: bin/compile of that poetry.lock app with an empty cache (a
      shallow mirror: the locked commit and the default branch's, with their trees).
For each: MB the server sent, seconds, the mirror's size in the cache after it, and the bytes'
ratio to (a) in the same run.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "tests"))

from build import offline_env, timed, wheelhouse  # noqa: E402 - bench/build.py

from support.gitserver import GIT_USER, GitServer, run_git, serve_as_github  # noqa: E402
from support.installers import install_tools, noindex_package, venv_with_pip  # noqa: E402

REPO = "acme/big"
REQUIREMENT = "big @ git+ssh://git@github.com/acme/big.git@{tag}\n"
POETRY_APP = """\
[project]
name = "app"
version = "0"
requires-python = ">=3.9"
dependencies = ["big @ git+ssh://git@github.com/acme/big.git@{tag}"]

[tool.poetry]
package-mode = false
"""
MB = 1024 * 1024


def big_repo(server: GitServer, commits: int, size: int) -> None:
    """acme/big on the server: `commits` commits each replacing a `size`-byte random file, then
    the package, without that file, tagged v1.0."""
    work = Path(tempfile.mkdtemp(prefix="work-", dir=server.root))
    run_git("init", "-q", "-b", "main", cwd=work)
    for n in range(commits):
        (work / "data.bin").write_bytes(os.urandom(size))
        run_git("add", "-A", cwd=work)
        run_git("commit", "-q", "-m", f"data {n}", cwd=work)
    (work / "data.bin").unlink()
    # A package that builds with no index (requires = []): Poetry's isolated build of it, like
    # pip's and uv's, needs nothing from PyPI (the bench runs offline).
    for relative, content in noindex_package("big").items():
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        (work / relative).write_text(content)
    run_git("add", "-A", cwd=work)
    run_git("commit", "-q", "-m", "release 1.0", cwd=work)
    run_git("tag", "v1.0", cwd=work)
    bare = server.root / "repos" / f"{REPO}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git("clone", "-q", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    serve_as_github(bare)
    user = pwd.getpwnam(GIT_USER)
    for path in [bare.parent, bare, *bare.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)


def amount(size: float) -> str:
    return f"{size / MB:.2f} MB" if size >= MB / 10 else f"{size / 1024:.1f} kB"


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Bench:
    def __init__(self, server: GitServer, work: Path) -> None:
        self.server, self.work = server, work
        self.tools = install_tools()
        self.wheels = wheelhouse(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploykey-bench"
        )
        self.key = work / "key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        server.grant("bench", Path(f"{self.key}.pub").read_text(), [REPO])
        self.tag = "v1.0"
        self.locked = work  # the app (g) locked, copied by (h)

    def fresh(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    def env(self, home: Path) -> dict[str, str]:
        return offline_env(home, self.wheels)

    def by_hand(self) -> dict[str, str]:
        """The seeds' recipe: an ssh config by hand (no host key check)."""
        home = self.fresh("home-")
        config = home / "ssh_config"
        config.write_text(
            f"Host github.com\n  HostName 127.0.0.1\n  Port {self.server.port}\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n"
        )
        return {**self.env(home), "GIT_SSH_COMMAND": f"ssh -F {config}"}

    def measured(self, what: str, step: Callable[[], Path | None]) -> dict[str, float]:
        before = self.server.sent(REPO)
        began = time.perf_counter()
        mirror = step()
        seconds = time.perf_counter() - began
        sent = self.server.sent(REPO) - before
        kept = size_of(mirror) if mirror is not None else 0.0
        print(f"{what}: {amount(sent)} sent, {seconds:.2f} s, {amount(kept)} kept", flush=True)
        return {"sent": sent, "seconds": seconds, "kept": kept}

    def pip(self) -> None:
        env, app = self.by_hand(), self.fresh("app-")
        venv = venv_with_pip(self.tools, app / ".venv")
        (app / "requirements.txt").write_text(REQUIREMENT.format(tag=self.tag))
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "-r", "requirements.txt"]
        timed(pip, env, cwd=app)

    def uv(self) -> None:
        env, app = self.by_hand(), self.fresh("app-")
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(app / ".venv")], check=True
        )
        (app / "requirements.txt").write_text(REQUIREMENT.format(tag=self.tag))
        env["UV_CACHE_DIR"] = str(self.fresh("uv-cache-"))
        argv = [str(self.tools.uv), "pip", "install", "--quiet", "--python", str(app / ".venv")]
        argv += ["--no-index", "--find-links", str(self.wheels), "-r", "requirements.txt"]
        timed(argv, env, cwd=app)

    def poetry_app(self) -> Path:
        app = self.fresh("app-")
        (app / "pyproject.toml").write_text(POETRY_APP.format(tag=self.tag))
        return app

    def poetry_env(self, env: dict[str, str]) -> dict[str, str]:
        # deploykey's installs set it too (mirrors.Mirrors.env): Poetry's system git client.
        env = {**env, "POETRY_SYSTEM_GIT_CLIENT": "true"}
        env["POETRY_CACHE_DIR"] = str(self.fresh("poetry-cache-"))
        env["PATH"] = f"{self.tools.poetry.parent}:{env['PATH']}"
        return env

    def poetry(self) -> None:
        env, app = self.poetry_env(self.by_hand()), self.poetry_app()
        env["POETRY_VIRTUALENVS_IN_PROJECT"] = "true"
        timed([str(self.tools.poetry), "lock"], env, cwd=app)
        timed([str(self.tools.poetry), "sync", "--only", "main"], env, cwd=app)
        self.locked = app

    def deploykey(self, cache: Path, installer: str, poetry: bool = False) -> Path:
        app, home = self.fresh("app-"), self.fresh("home-")
        if poetry:
            shutil.copy(self.locked / "pyproject.toml", app)
            shutil.copy(self.locked / "poetry.lock", app)
        else:
            (app / "requirements.txt").write_text(REQUIREMENT.format(tag=self.tag))
        (app / "deploykey.yml").write_text(self.server.deploykey_yml())
        env_dir = self.fresh("env-")
        (env_dir / "DEPLOY_KEY").write_text(self.key.read_text())
        env = {**self.env(home), "DEPLOYKEY_APP_PATH": str(app)}
        if poetry:
            env = self.poetry_env(env)
        else:
            env["DEPLOYKEY_INSTALLER"] = installer
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not shutil.which("uv", path=p))
        timed([str(KIT / "bin" / "compile"), str(app), str(cache), str(env_dir)], env)
        [mirror] = cache.glob("**/acme/big.git")
        return mirror


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=30)
    parser.add_argument("--size-mb", type=float, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-big-"))
    server = GitServer.create()
    try:
        server.start()
        big_repo(server, args.commits, int(args.size_mb * MB))
        bench = Bench(server, work)
        cache = bench.fresh("cache-")
        rows = {
            "(a) pip 26 by itself": bench.measured("a", bench.pip),
            "(b) uv by hand": bench.measured("b", bench.uv),
            "(c) deploykey cold (pip)": bench.measured("c", lambda: bench.deploykey(cache, "pip")),
        }
        server.add_commit(REPO, {"big/extra.py": "NEW = 1\n"}, "v1.1")
        bench.tag = "v1.1"
        rows["(d) deploykey, new tag v1.1"] = bench.measured(
            "d", lambda: bench.deploykey(cache, "pip")
        )
        rows["(e) deploykey warm"] = bench.measured("e", lambda: bench.deploykey(cache, "pip"))
        bench.tag = "v1.0"
        uv_cache = bench.fresh("cache-")
        rows["(f) deploykey cold (uv)"] = bench.measured(
            "f", lambda: bench.deploykey(uv_cache, "uv")
        )
        rows["(g) Poetry by hand (lock, sync)"] = bench.measured("g", bench.poetry)
        poetry_cache = bench.fresh("cache-")
        rows["(h) deploykey cold (Poetry)"] = bench.measured(
            "h", lambda: bench.deploykey(poetry_cache, "poetry", poetry=True)
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    pip_sent = rows["(a) pip 26 by itself"]["sent"]
    print()
    print(
        f"acme/big: {args.commits} commits x {args.size_mb:g} MB random file, a small tree at "
        "v1.0; bytes sent by the server's git-upload-pack"
    )
    print("| | sent by the server | vs (a) | seconds | mirror kept in the cache |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        ratio = f"{row['sent'] / pip_sent:.2f}x" if pip_sent else "-"
        kept = amount(row["kept"]) if row["kept"] else "-"
        print(f"| {name} | {amount(row['sent'])} | {ratio} | {row['seconds']:.2f} s | {kept} |")
    print(f"\none run; {os.cpu_count()} CPUs; git {run_git('--version').split()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
