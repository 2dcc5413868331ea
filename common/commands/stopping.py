"""Bounded shutdown for long-running commands: SIGINT and SIGTERM stop them within seconds.

Both signals are handled explicitly. SIGTERM's default ends the process without running
any cleanup, and a command started with SIGINT ignored (a shell's background job) would
otherwise never stop on SIGINT. The first signal sets the command's stop event and raises
`Stopped` in the main thread, wherever it waits (a long poll, a sleep, a lock, a join):
its transactions roll back on the way out and the command gives back what it holds. A
second signal while it does so is ignored: the cleanup itself is bounded.

A stop may land between the making and the awaiting of a coroutine (inside asgiref's
`async_to_sync`, as the feed notifies the channel layer): Python would then print a
"coroutine … was never awaited" warning on the way out, which tells an operator nothing,
so a stop silences that one warning.
"""

import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop asked by a signal. A KeyboardInterrupt, so that `except Exception` handlers on
    the way (a job recording an unexpected error as its failure) let it through, and
    database drivers cancel the query it interrupts."""

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")


@contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """For the block, SIGINT and SIGTERM set `stop` (a new event if none is given, yielded)
    and raise Stopped in the main thread once. The previous handlers come back after."""
    stop = stop or threading.Event()

    def handle(signum, frame) -> None:
        if stop.is_set():
            return
        stop.set()
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
