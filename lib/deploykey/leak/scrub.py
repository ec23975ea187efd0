"""Scrubbing: undo everything the kit wrote, always, also when the install fails or a signal arrives.

Each step that writes something registers how to undo it with a `Cleanup`; `guarded()` turns
SIGTERM, SIGINT and SIGHUP into an exception so that the `finally` which runs the cleanup is reached
however the build ends (SIGKILL cannot be caught: the key dir then sits in a temp dir outside the
app until the machine is discarded).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from deploykey.core.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Cleanup:
    """Undo actions, run last-registered first; `run()` never raises and reports what failed."""

    actions: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def add(self, what: str, action: Callable[[], object]) -> None:
        self.actions.append((what, action))

    def describe(self) -> list[str]:
        return [what for what, _ in reversed(self.actions)]

    def run(self) -> list[str]:
        failures = []
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
                self.done.append(what)
            except Exception as exc:  # noqa: BLE001 - every other step must still run
                failures.append(f"{what}: {exc}")
        return failures


def _raise(signum: int, _frame: FrameType | None) -> None:
    from deploykey.core import run

    run.stop_all()  # children other threads wait for (parallel checks) stop now, not at their end
    raise Interrupted(signum, signal.Signals(signum).name)


@contextmanager
def signals_raise() -> Iterator[None]:
    """While inside, SIGTERM/SIGINT/SIGHUP raise Interrupted in the main thread."""
    previous = {signum: signal.signal(signum, _raise) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def guarded(cleanup: Cleanup) -> Iterator[Cleanup]:
    """Run `cleanup` when the block ends, however it ends; a second signal during it is ignored."""
    with signals_raise():
        try:
            yield cleanup
        finally:
            ignored = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
            try:
                failures = cleanup.run()
            finally:
                for signum, handler in ignored.items():
                    signal.signal(signum, handler)
            if failures:
                raise RuntimeError("could not remove: " + "; ".join(failures))
