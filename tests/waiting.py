"""Waiting in tests: on events, never on fixed sleeps, with timeouts that stretch.

Every timeout a test gives (a process to start, a job to end, a child to exit) is a bound
for a hang, not a guess of how long the work takes: it is passed through `patience`, so
one knob, FERRY_TEST_PATIENCE (default 1; CI or a loaded machine may set 3), stretches all
of them, pytest-timeout's per-test limit included.
"""

import os
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

PATIENCE = float(os.environ.get("FERRY_TEST_PATIENCE", "1"))

T = TypeVar("T")


def patience(seconds: float) -> float:
    """`seconds` stretched by FERRY_TEST_PATIENCE."""
    return seconds * PATIENCE


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    every: float = 0.05,
    explain: Callable[[], str] = lambda: "",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail after
    `patience(timeout)` seconds, naming `what` and adding `explain()` (say, log tails)."""
    limit = patience(timeout)
    deadline = time.monotonic() + limit
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}\n{explain()}")
        time.sleep(every)


def wait_exit(process: subprocess.Popen, *, timeout: float, what: str) -> int:
    """The exit code of `process`, which must end within `patience(timeout)` seconds."""
    try:
        return process.wait(timeout=patience(timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} did not exit within {patience(timeout):.0f}s") from None


def stop_process(process: subprocess.Popen, *, grace: float = 10) -> None:
    """End `process` whatever state it is in, as a service manager would: SIGTERM to the
    process itself (a qcluster stops its own children, and hangs if they are signalled
    too), then after `patience(grace)` seconds SIGKILL to whatever is left of the group it
    leads (started with start_new_session=True). Safe on a process that already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=patience(grace))
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, 9)  # the group may outlive its leader
    except ProcessLookupError:  # no such group: not a group leader, or all of it is gone
        if process.poll() is None:
            process.kill()
    process.wait()
