"""Benchmark: `deploykey scan` against `grep -rF` with the same needles, on a slug-sized tree.

    python3 bench/scan.py [--size-mb 500] [--runs 5] [--fallback-runs 3] [--cache DIR]

The tree is a real virtual environment of popular packages (bench/requirements-scan.txt, from
PyPI) plus generated files (source-like text, JSON, binary) up to --size-mb, cached between runs.
Planted in it: the key as text, as wrapped base64, inside a wheel (deflated) and inside a tar.gz.
Both tools run on the same tree in the same run, alternating, and the medians are reported with
their ratio; `grep -rF` gets exactly the needle list deploykey searches for (Searcher.patterns: the
needles and the mark of a private key), so it finds what a flat search can find and no more.
`deploykey scan` is also timed as it runs where ahocorasick-rs has no wheel (Python alone),
--fallback-runs times (0: not at all).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "lib"))

from deploykey.leak import scan  # noqa: E402
from deploykey.secrets import keys  # noqa: E402

WORDS = [
    "def",
    "return",
    "import",
    "self",
    "class",
    "value",
    "name",
    "data",
    "path",
    "key",
    "config",
]


def build_tree(cache: Path, size_mb: int) -> Path:
    tree = cache / f"tree-{size_mb}"
    if (tree / ".complete").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    venv = tree / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(KIT / "bench" / "requirements-scan.txt"),
        ],
        check=True,
    )
    rng = random.Random(42)
    generated = tree / "app"
    index = 0
    while _size(tree) < size_mb * 1_000_000:
        folder = generated / f"module{index // 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = index % 10
        if kind < 6:
            lines = (
                " ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(rng.randint(50, 2000))
            )
            (folder / f"file{index}.py").write_text("\n".join(lines))
        elif kind < 8:
            records = [
                {"id": i, "name": rng.choice(WORDS), "value": rng.random()}
                for i in range(rng.randint(100, 5000))
            ]
            (folder / f"data{index}.json").write_text(json.dumps(records))
        else:
            (folder / f"blob{index}.bin").write_bytes(rng.randbytes(rng.randint(10_000, 2_000_000)))
        index += 1
    (tree / ".complete").touch()
    return tree


def _size(tree: Path) -> int:
    return sum(os.path.getsize(path) for path, _name in scan.walk([tree], []))


def plant(tree: Path, key_text: str) -> dict[str, str]:
    """Copies of the key; which ones a flat search can see."""
    leaks = tree / "app" / "leaks"
    shutil.rmtree(leaks, ignore_errors=True)
    leaks.mkdir()
    (leaks / "copy.txt").write_text(key_text)
    (leaks / "copy.b64").write_bytes(base64.encodebytes(key_text.encode()))
    with zipfile.ZipFile(leaks / "helper-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("helper/__init__.py", "")
        wheel.writestr("helper/id_deploy", key_text)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        data = key_text.encode()
        info = tarfile.TarInfo("backup/key")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    (leaks / "backup.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    return {
        "copy.txt": "text",
        "copy.b64": "base64",
        "helper-1.0-py3-none-any.whl": "in a wheel",
        "backup.tar.gz": "in a tar.gz",
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - began, result.stdout + result.stderr


def options(description: str, runs: int) -> argparse.ArgumentParser:
    """The options of the scan benchmarks (this one and bench/scan_incremental.py)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploykey-bench",
    )
    return parser


def new_key(key_file: Path) -> keys.Key:
    """A new ed25519 key at `key_file` (the one there before removed), loaded as the kit loads it."""
    for old in (key_file, key_file.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key_file)],
        check=True,
    )
    return keys.load(key_file.read_bytes(), "DEPLOY_KEY", "bench")


def main() -> int:
    parser = options(__doc__, runs=5)
    parser.add_argument("--fallback-runs", type=int, default=3)
    args = parser.parse_args()
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key_file = work / "bench_key"
    while True:  # a key none of whose needles holds a line break: grep -f reads one per line
        key = new_key(key_file)
        patterns = scan.Searcher.of([key]).patterns
        if not any(b"\n" in pattern for pattern in patterns):
            break
    tree = build_tree(args.cache, args.size_mb)
    planted = plant(tree, key_file.read_text())
    files = scan.walk([tree], [])
    size = sum(os.path.getsize(path) for path, _name in files)
    needles = work / "needles.txt"
    needles.write_bytes(b"".join(pattern + b"\n" for pattern in patterns))
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(work)}
    ours = [str(KIT / "bin" / "deploykey"), "scan", str(tree), "--key-file", str(key_file)]
    # As on a platform with no ahocorasick-rs wheel: its import fails.
    without = [
        sys.executable,
        "-I",
        "-c",
        "import runpy, sys; sys.modules['ahocorasick_rs'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')",
        str(KIT / "lib" / "deploykey"),
        *ours[1:],
    ]
    grep = ["grep", "-rlF", "-a", "-D", "skip", "-f", str(needles), str(tree)]
    timed(grep, env)  # warm the page cache for all
    tools = {
        "deploykey scan": (ours, args.runs),
        "grep -rF": (grep, args.runs),
        "deploykey scan, Python alone": (without, args.fallback_runs),
    }
    times: dict[str, list[float]] = {name: [] for name, (_, runs) in tools.items() if runs}
    outputs = {}
    for run in range(max(args.runs, args.fallback_runs)):
        order = list(tools.items())[:: 1 if run % 2 == 0 else -1]
        for name, (argv, runs) in order:
            if run < runs:
                seconds, out = timed(argv, env)
                times[name].append(seconds)
                outputs[name] = out
    found = {
        name: sorted(label for file, label in planted.items() if file in outputs[name])
        for name in times
    }
    median = {name: statistics.median(values) for name, values in times.items()}
    searched = re.search(r"\((\d+ process(?:es)?, [\w-]+)\)", outputs["deploykey scan"])
    print(
        f"tree: {len(files)} files, {size / 1e6:.0f} MB ({tree}); {len(patterns)} needles; "
        f"runs alternating; {os.cpu_count()} CPUs; deploykey scan used "
        f"{searched.group(1) if searched else '?'}"
    )
    print()
    print("| tool | runs | median s | MB/s | planted copies found |")
    print("|---|---|---|---|---|")
    for name in times:
        print(
            f"| {name} | {len(times[name])} | {median[name]:.2f} | {size / 1e6 / median[name]:.0f} "
            f"| {len(found[name])} of {len(planted)}: {', '.join(found[name])} |"
        )
    print()
    print(
        f"ratio grep / deploykey: {median['grep -rF'] / median['deploykey scan']:.2f} (above 1: deploykey is faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
