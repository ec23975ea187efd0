"""Entry point for `python -m deploykey`, `python3 -I lib/deploykey` (bin/*) and the zipapp.

Kept to syntax old Pythons can read, so that a too-old python3 gets a clear error, not a traceback.
"""

import os
import sys


def entry() -> None:
    from deploykey.kit import bootstrap

    bootstrap.check_python()
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in bootstrap.WITHOUT_DEPENDENCIES:
        bootstrap.ensure()
    from deploykey.cli import main

    finish(main())


def finish(status: int) -> None:
    """Exit with `status` once what the run wrote is out and its exit handlers (the bootstrap's
    temp dirs) have run, without the interpreter's teardown: freeing every module and object
    changes nothing a build keeps, and took 10-17 ms of each build on the test machine
    (bench/lockfiles.py). os._exit skips Python's own exit steps: the atexit handlers run here
    first; of the threads, the pools' are joined by their `with`, and the others are daemons,
    which Python's exit does not wait for either."""
    import atexit

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    if not __package__:
        # Run as `python3 -I lib/deploykey`: sys.path[0] is this directory, whose module names
        # must not shadow others; import the package from its parent instead.
        sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entry()
