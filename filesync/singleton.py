"""Work that must run on one node at a time (purge, reapers), whatever the deployment.

On PostgreSQL: a session advisory lock, and before each destructive step a check that
this very backend still holds it (a `pg_locks` row with `pid = pg_backend_pid()`): a
connection that was dropped and reopened has silently lost its lock. On SQLite (one
machine by nature): an exclusive file lock beside the database.
"""

import fcntl
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection


class NotHeld(Exception):
    """Another node holds the lock (or this one lost it): stop before destroying anything."""


def _key(name: str) -> int:
    return zlib.crc32(f"ferry:{name}".encode())


@contextmanager
def exclusive(name: str) -> Iterator[Callable[[], None]]:
    """Hold the named lock for the block; yields `check()`, which raises NotHeld if lost."""
    if connection.vendor == "postgresql":
        key = _key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                raise NotHeld(f"{name} is running on another node.")

        def check() -> None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                    "AND pid = pg_backend_pid() AND granted",
                    [key],
                )
                if cursor.fetchone() is None:
                    raise NotHeld(f"Lost the {name} lock; stopping.")

        try:
            yield check
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    with open(settings.VAR_DIR / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotHeld(f"{name} is running in another process.") from None
        yield lambda: None
