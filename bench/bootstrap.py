"""Benchmark: what the kit's own dependencies cost each run, with a python3 that lacks them.

    python3 bench/bootstrap.py [--runs 20] [--kit PATH ...]

With the system python3 (/usr/bin/python3, none of sh, python-dotenv, pyyaml, ahocorasick-rs),
a fresh process runs the bootstrap as bin/compile does (its deps kept in the build cache) and as
`deploykey scan` does (kept in the temp dir), then imports the four; the first run of each
installs them, the timed runs find them there. Printed: the median time from the start of the
process's code to the four imported, split into the bootstrap (for this kit: reading and hashing
the kept wheels; before, unpacking them too) and the imports (from the hashed wheels in memory:
compiled from source in the temp dir, where the run has no key; in the cache, the bytecode an
earlier run kept there, sealed with the key in its ENV_DIR), and the median wall time of the whole
process. Several --kit paths (other checkouts:
`git worktree add /tmp/old main`) are timed in turn, run by run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"
CHILD = """
import sys, time
began = time.perf_counter()
sys.path.insert(0, sys.argv[1])
sys.argv = sys.argv[1:]
from deploykey.kit import bootstrap
bootstrap.check_python()
bootstrap.ensure()
ensured = time.perf_counter()
import sh, dotenv, yaml, ahocorasick_rs
print(ensured - began, time.perf_counter() - ensured)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kit", type=Path, nargs="+", default=[KIT])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-bootstrap-"))
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "k")])
        commands = {}
        for index, kit in enumerate(args.kit):
            root = work / str(index)
            app, cache, env_dir, temp = (root / name for name in ("app", "cache", "env", "tmp"))
            for directory in (app, cache, env_dir, temp):
                directory.mkdir(parents=True)
            (env_dir / "DEPLOY_KEY").write_text((work / "k").read_text())
            env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "TMPDIR": str(temp)}
            lib = str(kit.resolve() / "lib")
            for where, argv in {
                "cache (compile)": ["compile", str(app), str(cache), str(env_dir)],
                "temp dir (scan)": ["scan", str(app)],
            }.items():
                command = [PYTHON, "-I", "-c", CHILD, lib, *argv]
                first = subprocess.run(command, env=env, capture_output=True, text=True)
                assert first.returncode == 0, first.stdout + first.stderr
                commands[(str(kit), where)] = (command, env)
        times: dict[tuple[str, str], list[tuple[float, float, float]]] = {k: [] for k in commands}
        for _ in range(args.runs):
            for key, (command, env) in commands.items():
                began = time.perf_counter()
                run = subprocess.run(command, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - began
                assert run.returncode == 0 and "Installing" not in run.stdout, run.stdout
                ensure, imports = map(float, run.stdout.split()[-2:])
                times[key].append((ensure, imports, wall))
        for (kit, where), values in times.items():
            ensure, imports, wall = (statistics.median(v) * 1000 for v in zip(*values, strict=True))
            print(
                f"{kit}, deps in the {where}: bootstrap {ensure:.1f} ms + imports {imports:.1f} ms"
                f" = {ensure + imports:.1f} ms; process {wall:.1f} ms (medians of {args.runs})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
