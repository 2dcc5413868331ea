"""Appending to the change feed, inside the writing transaction, in commit order."""

from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .models import Change, FeedCursor, File

GROUP = "sync-changes"


def lock_feed() -> FeedCursor:
    """Lock the feed's cursor row until the caller's transaction ends. Writers that lock
    other rows too and may meet each other (the follower's feed applier and its workers)
    take this lock first, so they all lock in one order and cannot deadlock."""
    cursor = FeedCursor.objects.select_for_update().filter(pk=1).first()
    if cursor is None:  # made by a migration; gone only after a test's table flush
        cursor = FeedCursor.objects.get_or_create(pk=1)[0]
    return cursor


def record_change(*, kind: str, file: File, payload: dict | None = None) -> Change:
    """Take the next seq (locking the cursor until commit) and append the change."""
    return record_changes([(kind, file, payload)])[0]


def record_changes(changes: Iterable[tuple[str, File, dict | None]]) -> list[Change]:
    """`record_change` for (kind, file, payload) in order: consecutive seqs from one lock,
    one insert and one wake-up however many there are (an import of thousands of files)."""
    changes = list(changes)
    if not changes:
        return []
    with transaction.atomic():
        cursor = lock_feed()
        first = cursor.last_seq + 1
        FeedCursor.objects.filter(pk=1).update(last_seq=cursor.last_seq + len(changes))
        rows = Change.objects.bulk_create(
            Change(
                seq=first + offset,
                kind=kind,
                file_id=file.pk,
                team_id=file.project.team_id,
                revision=file.revision,
                payload=payload or {},
            )
            for offset, (kind, file, payload) in enumerate(changes)
        )
        transaction.on_commit(_wake_listeners)
    return rows


def _wake_listeners() -> None:
    layer = get_channel_layer()
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "feed.changed"})
    except Exception:  # a hint only: long polls also re-read on their own
        pass
