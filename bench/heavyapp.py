"""Benchmark: a realistic heavy app, deploykey against plain pip, and where a warm build's time goes.

    python3 bench/heavyapp.py [--runs 3] [--cache DIR]

The app of issue 23: one private package (served by tests/support/gitserver.py, a real sshd) plus numpy,
pandas, scipy, Django, boto3 and requests (HEAVY), installed from a local wheelhouse (downloaded
from PyPI once into --cache). Each run times, in order, as bench/build.py does (its Scenario):
  (a) plain pip: the seeds' recipe, a hand-written ssh config and `pip install -r` into a fresh
      venv;
  (b) deploykey cold: bin/compile with an empty CACHE_DIR;
  (c) deploykey warm: bin/compile again, a fresh checkout, the same CACHE_DIR.
Medians over the runs, each one's ratio to (a) in the same run; then the warm builds' phases (the
time from each step header of bin/compile's output to the next, medians) and the leak check's own
line (files read, files verified unchanged).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import build
from build import Scenario, download_wheels

from support.gitserver import GitServer

# requests is in build.PUBLIC already; boto3's and pandas's own dependencies come with them.
HEAVY = ("numpy==2.2.1", "pandas==2.2.3", "scipy==1.15.0", "django==5.1.4", "boto3==1.35.90")


def wheelhouse(cache: Path) -> Path:
    directory = cache / "heavy-wheels"
    if not all(
        any(directory.glob(f"{pin.split('=')[0]}-*.whl")) for pin in HEAVY + build.WHEELS[:1]
    ):
        directory.mkdir(parents=True, exist_ok=True)
        download_wheels(directory, *build.WHEELS, *HEAVY)
    return directory


class HeavyApp(Scenario):
    """bench/build.py's scenario with one private package, and the heavy public ones beside it."""

    def requirements(self) -> str:
        return super().requirements() + "".join(f"{pin}\n" for pin in HEAVY)


STEP = "-----> "


def phases(argv: list[str], env: dict[str, str]) -> tuple[float, list[tuple[str, float]], str]:
    """The build's time, the time from its start to its first step header and from each header
    to the next (or the end), and its leak check's "scanned ..." lines."""
    began = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    marks, lines, scanned = [("start-up", began)], [], []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(STEP):
            marks.append(
                (re.split(r" \(|:| into ", line[len(STEP) :])[0].strip(), time.perf_counter())
            )
        elif line.strip().startswith(("scanned ", "and ")) and "files" in line:
            scanned.append(line.strip())
    status = process.wait()
    ended = time.perf_counter()
    if status != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{''.join(lines[-60:])}")
    ends = [at for _name, at in marks[1:]] + [ended]
    return (
        ended - began,
        [(name, end - at) for (name, at), end in zip(marks, ends, strict=True)],
        " ".join(scanned),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    build.cache_option(parser)
    args = parser.parse_args()
    wheels = wheelhouse(args.cache)
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-heavy-"))
    server = GitServer.create()
    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    steps: dict[str, list[float]] = {}
    scanned = ""
    try:
        server.start()
        app = HeavyApp(server, 1, work, wheels)
        for _ in range(args.runs):
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
            times["a"].append(app.plain())
            times["b"].append(app.deploykey(cache))
            seconds, warm, scanned = phases(*app.compile(cache))
            times["c"].append(seconds)
            for name, spent in warm:
                steps.setdefault(name, []).append(spent)
            print(", ".join(f"{k}={v[-1]:.2f}s" for k, v in times.items()), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    m = {name: statistics.median(values) for name, values in times.items()}
    print()
    print("| heavy app | (a) plain pip | (b) deploykey cold | (c) deploykey warm |")
    print("|---|---|---|---|")
    cells = [f"{m['a']:.2f} s"] + [f"{m[k]:.2f} s ({m['a'] / m[k]:.1f}x)" for k in "bc"]
    print("| 1 private + " + ", ".join(HEAVY) + ", requests | " + " | ".join(cells) + " |")
    for k in "bc":
        each = ", ".join(f"{a / x:.1f}x" for a, x in zip(times["a"], times[k], strict=True))
        print(f"({k}) each run's ratio: {each}")
    print()
    print("(c) deploykey warm, by step (medians):")
    for name, values in steps.items():
        print(f"  {statistics.median(values):6.2f} s  {name}")
    print(f"  last leak check: {scanned}")
    print(
        f"\n{args.runs} runs, medians; ratios: (a)'s time / the cell's; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
