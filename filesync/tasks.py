"""django-q2 entry points for the document store. Thin: they call services."""

from .purge import purge as purge_now
from .singleton import NotHeld
from .sync.uploads import reap_expired


def purge() -> dict:
    """Scheduled: expired uploads, then permanent deletion (one node at a time)."""
    expired = reap_expired()
    try:
        done = purge_now()
    except NotHeld:
        return {"uploads_expired": expired, "skipped": "another node is purging"}
    return {"uploads_expired": expired, "files": len(done.files), "blobs": len(done.blobs)}
