"""Benchmark: the leak check with and without the sealed record of the last scan, same tree.

    python3 bench/scan_incremental.py [--size-mb 500] [--runs 7] [--cache DIR]

The tree is bench/scan.py's (a real virtual environment of popular packages: Django, pandas,
numpy, boto3, ... plus generated files up to --size-mb, cached between runs), with the same four
key copies planted afresh each run. Timed in this process, alternating, on the same tree: a full
scan (no record: every file read, as before the record existed, and as on Heroku, whose cache is
unpacked afresh every build) and an incremental one (the record of the previous scan verified:
only what changed is read; the record is read, checked and written again each time, and that is
timed too). Both must find the four planted copies: they are new in each run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "lib"))
sys.path.insert(0, str(KIT / "bench"))

from scan import build_tree, new_key, options, plant  # noqa: E402

from deploykey import build  # noqa: E402
from deploykey.leak import scan  # noqa: E402


def main() -> int:
    args = options(__doc__, runs=7).parse_args()
    work = args.cache / "work-incremental"
    work.mkdir(parents=True, exist_ok=True)
    key_file = work / "bench_key"
    key = new_key(key_file)
    tree = build_tree(args.cache, args.size_mb)
    record = build.scan_record([key.material], tree)  # in the scanned tree, as in a build cache
    assert record is not None
    record.path.unlink(missing_ok=True)
    scan.scan([tree], [key], record=record)  # warms the page cache; writes the first record
    times: dict[str, list[float]] = {"full": [], "incremental": []}
    reports: dict[str, scan.Report] = {}
    for run in range(args.runs):
        planted = plant(tree, key_file.read_text())  # new files: each scan must read them
        order = ["full", "incremental"] if run % 2 == 0 else ["incremental", "full"]
        for name in order:
            began = time.perf_counter()
            report = scan.scan([tree], [key], record=record if name == "incremental" else None)
            times[name].append(time.perf_counter() - began)
            reports[name] = report
            found = {hit.path.split("!")[0].rsplit("/", 1)[1] for hit in report.hits}
            assert set(planted) <= found, (name, sorted(found))
    median = {name: statistics.median(values) for name, values in times.items()}
    total = reports["full"].files
    print(
        f"tree: {total} files, {reports['full'].size / 1e6:.0f} MB ({tree}); runs alternating; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
        f"record {record.path.stat().st_size / 1e6:.1f} MB"
    )
    print()
    print("| leak check | runs | median s | files read | MB read | files verified unchanged |")
    print("|---|---|---|---|---|---|")
    for name in times:
        report = reports[name]
        print(
            f"| {name} | {len(times[name])} | {median[name]:.3f} | {report.files} "
            f"| {report.size / 1e6:.1f} | {report.skipped} |"
        )
    print()
    print(f"ratio full / incremental: {median['full'] / median['incremental']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
