"""Permanent deletion: files past their grace period, then blobs nothing needs.

A file goes only when no guard holds it: an active export that pinned it (registered by
the exports app), a live retention lock on one of its blobs, or an active replica that
has not yet acknowledged its deletion in the change feed (a replica unseen for
REPLICA_STALE_SECONDS stops counting). Runs on one node at a time (filesync.singleton).
"""

from collections.abc import Callable
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Min, QuerySet
from django.utils import timezone

from .feed import record_change
from .models import Blob, Change, ChangeKind, ContentLock, File, Replica
from .singleton import exclusive
from .sync.services import Refused, remove_blob

PurgeGuard = Callable[[QuerySet], QuerySet]
_guards: list[PurgeGuard] = []


def register_purge_guard(guard: PurgeGuard) -> None:
    if guard not in _guards:
        _guards.append(guard)


def _locked(files: QuerySet) -> QuerySet:
    live = ContentLock.objects.filter(expires_at__gt=timezone.now()).values("blob_id")
    return files.filter(media__blob_id__in=live).values("pk")


def _unacknowledged(files: QuerySet) -> QuerySet:
    stale = timezone.now() - timedelta(seconds=settings.REPLICA_STALE_SECONDS)
    floor = Replica.objects.filter(last_seen__gte=stale).aggregate(m=Min("acked_seq"))["m"]
    if floor is None:
        return files.none().values("pk")
    deleted_since = Change.objects.filter(kind=ChangeKind.FILE_DELETED, seq__gt=floor)
    return files.filter(pk__in=deleted_since.values("file_id")).values("pk")


register_purge_guard(_locked)
register_purge_guard(_unacknowledged)


def purgeable_files(now=None) -> QuerySet[File]:
    files = File.objects.filter(deleted_at__isnull=False, purge_after__lte=now or timezone.now())
    for guard in _guards:
        files = files.exclude(pk__in=guard(files))
    return files.order_by("purge_after", "id")


def unused_blobs(now=None) -> QuerySet[Blob]:
    """Blobs no media, snapshot or live lock needs, untouched for the grace period."""
    now = now or timezone.now()
    return (
        Blob.objects.filter(
            media__isnull=True,
            snapshot_media__isnull=True,
            touched_at__lt=now - timedelta(seconds=settings.FILE_PURGE_GRACE_SECONDS),
        )
        .exclude(locks__expires_at__gt=now)
        .order_by("sha256")
    )


class Purged(NamedTuple):
    files: list[File]
    blobs: list[str]


def purge(*, dry_run: bool = False) -> Purged:
    """Delete for good what may go; with dry_run, only say what would."""
    with exclusive("purge") as still_held:
        now = timezone.now()
        if dry_run:
            return Purged(
                list(purgeable_files(now)), list(unused_blobs(now).values_list("pk", flat=True))
            )
        files = []
        for file in purgeable_files(now):
            still_held()
            with transaction.atomic():
                locked = File.objects.select_for_update().filter(pk=file.pk)
                if purgeable_files(now).filter(pk__in=locked.values("pk")).exists():
                    record_change(kind=ChangeKind.FILE_PURGED, file=file)
                    File.objects.filter(pk=file.pk).delete()
                    files.append(file)
        blobs = []
        for blob in unused_blobs(now):
            still_held()
            try:
                remove_blob(blob=blob, before=now + timedelta(minutes=1))
            except Refused:
                continue
            blobs.append(blob.sha256)
        return Purged(files, blobs)
