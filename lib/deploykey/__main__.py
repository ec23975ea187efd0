"""Entry point for `python -m deploykey`, `python3 -I lib/deploykey` (bin/*) and the zipapp.

Kept to syntax old Pythons can read, so that a too-old python3 gets a clear error, not a traceback.
"""

import os
import sys


def entry() -> None:
    from deploykey import bootstrap

    bootstrap.check_python()
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in bootstrap.WITHOUT_DEPENDENCIES:
        bootstrap.ensure()
    from deploykey.cli import main

    code = main()
    # What is left is the interpreter's teardown, whose garbage collections of every module's
    # objects took 15-25 ms of a warm build (bench/heavyapp.py) and free nothing an ending process
    # must free: frozen objects are left out of them (gc.freeze). Exit handlers still run.
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    if not __package__:
        # Run as `python3 -I lib/deploykey`: sys.path[0] is this directory, whose module names
        # must not shadow others; import the package from its parent instead.
        sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entry()
