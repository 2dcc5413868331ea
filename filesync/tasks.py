"""django-q2 entry points for the document store. Thin: they call services."""

from .purge import purge as purge_now
from .singleton import NotHeld


def purge() -> dict:
    """Scheduled: permanent deletion (one node at a time; a busy lock skips this round)."""
    try:
        done = purge_now()
    except NotHeld:
        return {"skipped": "another node is purging"}
    return {"files": len(done.files), "blobs": len(done.blobs)}
