"""Writes of the sync protocol: replicas, retention locks, and removing a blob safely."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import blobstore
from ..models import Blob, BlobHolder, ContentLock, Replica
from .selectors import blob_references, feed_position


class Refused(Exception):
    """The request conflicts with the state of things (HTTP 409); `reason` says which."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def register_replica(*, owner, name: str) -> Replica:
    return Replica.objects.create(owner=owner, name=name, last_seen=timezone.now())


def heartbeat(*, replica: Replica) -> Replica:
    replica.last_seen = timezone.now()
    replica.save(update_fields=["last_seen"])
    return replica


def acknowledge(*, replica: Replica, seq: int) -> Replica:
    """The replica holds everything up to `seq`. Acks never go backwards or past the feed."""
    if seq > feed_position():
        raise Refused("ahead_of_feed", f"The feed has not reached {seq} yet.")
    Replica.objects.filter(pk=replica.pk, acked_seq__lt=seq).update(acked_seq=seq)
    return heartbeat(replica=Replica.objects.get(pk=replica.pk))


def take_lock(*, blob: Blob, holder, seconds: int | None = None) -> ContentLock:
    lease = seconds or settings.SYNC_LOCK_SECONDS
    return ContentLock.objects.create(
        blob=blob, holder=holder, expires_at=timezone.now() + timedelta(seconds=lease)
    )


def keep_lock(*, lock: ContentLock, seconds: int | None = None) -> ContentLock:
    now = timezone.now()
    if lock.expires_at <= now:
        raise Refused("lock_expired", "The lock's lease ran out; take a new lock.")
    lock.expires_at = now + timedelta(seconds=seconds or settings.SYNC_LOCK_SECONDS)
    lock.save(update_fields=["expires_at"])
    return lock


def release_lock(*, lock: ContentLock) -> None:
    lock.delete()


def remove_blob(*, blob: Blob, before: datetime, holder=None) -> None:
    """Remove a blob nobody needs, before the caller's deadline, or refuse with the reason.

    With a `holder` (a user removing bytes they sent) only their holding goes when
    someone else also sent these bytes: one user's delete never takes bytes another
    user uploaded. Checks and removal happen under the blob's row lock, and the bytes go
    before the row is released: an upload of the same content waits for that lock, finds
    no row, and writes the bytes again, so a row never outlives its bytes.
    """
    with transaction.atomic():
        locked = Blob.objects.select_for_update().filter(pk=blob.pk).first()
        now = timezone.now()
        if locked is None:
            return
        if now > before:
            raise Refused("too_late", "The request's timestamp has passed; ask again.")
        if ContentLock.objects.filter(blob_id=blob.pk, expires_at__gt=now).exists():
            raise Refused("locked", "A retention lock holds this blob.")
        if blob_references(blob.pk):
            raise Refused("referenced", "A media object or a snapshot still uses this blob.")
        if holder is not None:
            BlobHolder.objects.filter(blob=blob, user=holder).delete()
            if BlobHolder.objects.filter(blob=blob).exists():
                return
        ContentLock.objects.filter(blob_id=blob.pk).delete()
        locked.delete()
        blobstore.delete_blob(blob.pk)
