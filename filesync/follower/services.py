"""The follower's writes: applying the leader's feed to the download rows, and claiming,
renewing and ending downloads. The mirror (mirror.py) writes the files themselves.

Claims are safe with any number of workers on any number of machines: on PostgreSQL a
worker takes the first claimable row with `SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite
(one writer at a time) with a conditional UPDATE that only one worker can win.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from filesync.feed import lock_feed, record_change
from filesync.models import ChangeKind, File
from filesync.services import soft_delete_file

from .models import OPEN_STATES, Download, DownloadState, Leader

#: Feed kinds that say nothing about content to fetch.
DELETIONS = {ChangeKind.FILE_DELETED, ChangeKind.FILE_PURGED}


class ClaimLost(Exception):
    """The download was cancelled, superseded or taken over: drop what was fetched."""


def leader_for(url: str) -> Leader:
    return Leader.objects.get_or_create(url=url.rstrip("/"))[0]


def apply_changes(leader: Leader, changes: list[dict], next_seq: int) -> bool:
    """Apply one page of the leader's feed, in order, once: another follower process that
    applied it first wins and this call does nothing (returns False). Either way `leader`
    is read again, so the caller asks the feed for what follows what was applied."""
    with transaction.atomic():
        lock_feed()  # first, as mirror.write does (see lock_feed)
        locked = Leader.objects.select_for_update().get(pk=leader.pk)
        applied = not changes or changes[0]["seq"] > locked.feed_seq
        if applied:
            for change in changes:
                _apply(locked, change)
            Leader.objects.filter(pk=leader.pk).update(
                feed_seq=max(next_seq, locked.feed_seq), last_seen=timezone.now()
            )
    leader.refresh_from_db()
    return applied


def _apply(leader: Leader, change: dict) -> None:
    file_id, kind, seq = change["file"], change["kind"], change["seq"]
    if kind in DELETIONS:
        _cancel(leader, file_id, seq, kind)
        return
    row, created = Download.objects.get_or_create(
        leader=leader,
        file_id=file_id,
        defaults={"revision": change["revision"], "since_seq": seq},
    )
    if created:
        return
    reopen = (
        {} if row.state in OPEN_STATES else {"since_seq": seq, "attempts": 0, "finished_at": None}
    )
    downloading = row.state == DownloadState.DOWNLOADING
    state = DownloadState.DOWNLOADING if downloading else DownloadState.PENDING
    Download.objects.filter(pk=row.pk).update(
        state=state,
        revision=max(row.revision, change["revision"]),
        last_error="",
        not_before=None,
        **reopen,
    )


def _cancel(leader: Leader, file_id: str, seq: int, kind: str) -> None:
    """A file deleted on the leader: its download stops counting, and the local copy goes
    to the trash (or, once purged there, for good). A download already underway finds
    its claim gone when it tries to finish, and drops what it fetched."""
    Download.objects.filter(leader=leader, file_id=file_id).update(
        state=DownloadState.CANCELLED,
        worker="",
        lease_expires_at=None,
        finished_at=timezone.now(),
        since_seq=seq,
    )
    local = File.objects.filter(pk=file_id).select_related("project").first()
    if local is None:
        return
    if kind == ChangeKind.FILE_PURGED:
        record_change(kind=ChangeKind.FILE_PURGED, file=local)  # for this Ferry's own followers
        local.delete()
    else:
        soft_delete_file(file=local)


def claim(leader: Leader, worker: str) -> Download | None:
    """The next file to fetch, claimed by `worker` under a lease; None when none is due.
    A row whose worker died (its lease ran out) is claimable again."""
    now = timezone.now()
    due = Q(state=DownloadState.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    abandoned = Q(state=DownloadState.DOWNLOADING, lease_expires_at__lt=now)
    queue = Download.objects.filter(due | abandoned, leader=leader).order_by("since_seq", "id")
    take = {
        "state": DownloadState.DOWNLOADING,
        "worker": worker,
        "lease_expires_at": now + timedelta(seconds=settings.FOLLOWER_LEASE_SECONDS),
        "attempts": F("attempts") + 1,
        "bytes_done": 0,
    }
    # A row whose workers keep dying (its lease ran out at every attempt) stops here.
    Download.objects.filter(
        abandoned, leader=leader, attempts__gte=settings.FOLLOWER_MAX_ATTEMPTS
    ).update(
        state=DownloadState.FAILED,
        worker="",
        lease_expires_at=None,
        last_error="Its worker stopped (died or was killed) at every attempt.",
        finished_at=now,
    )
    for _ in range(20):
        with transaction.atomic():
            if connection.features.has_select_for_update_skip_locked:
                row = queue.select_for_update(skip_locked=True).first()
                if row is None:
                    return None
                Download.objects.filter(pk=row.pk).update(**take)
            else:
                row = queue.first()
                if row is None:
                    return None
                if not queue.filter(pk=row.pk).update(**take):
                    continue  # another worker won this one; try the next
        return Download.objects.get(pk=row.pk)
    return None


def renew(download: Download, worker: str, *, bytes_done: int | None = None) -> None:
    """Keep the claim alive while fetching; ClaimLost if it was cancelled or taken over."""
    fields = {
        "lease_expires_at": timezone.now() + timedelta(seconds=settings.FOLLOWER_LEASE_SECONDS)
    }
    if bytes_done is not None:
        fields["bytes_done"] = bytes_done
    if not Download.objects.filter(
        pk=download.pk, worker=worker, state=DownloadState.DOWNLOADING
    ).update(**fields):
        raise ClaimLost


def finish(download: Download, worker: str, fetched_revision: int) -> None:
    """Inside the mirror's transaction: done, or pending again when the feed announced a
    newer revision meanwhile. ClaimLost (rolling the mirror's writes back) if the claim is
    no longer this worker's."""
    row = (
        Download.objects.select_for_update()
        .filter(pk=download.pk, worker=worker, state=DownloadState.DOWNLOADING)
        .first()
    )
    if row is None:
        raise ClaimLost
    newer = row.revision > fetched_revision
    Download.objects.filter(pk=row.pk).update(
        state=DownloadState.PENDING if newer else DownloadState.DONE,
        fetched_revision=fetched_revision,
        worker="",
        lease_expires_at=None,
        last_error="",
        finished_at=None if newer else timezone.now(),
    )


def cancel_gone(download: Download, worker: str) -> None:
    """The leader no longer has the file (purged, or no longer visible): nothing to fetch."""
    Download.objects.filter(pk=download.pk, worker=worker).update(
        state=DownloadState.CANCELLED,
        worker="",
        lease_expires_at=None,
        last_error="Gone from the leader.",
        finished_at=timezone.now(),
    )


def give_back(download: Download, worker: str) -> str:
    """A download its worker stopped (the command was asked to stop): pending again and due
    at once, the attempt not counted, so the next run resumes it (and its partial blob)
    without waiting for the lease to run out. Only while this worker still holds it."""
    given = Download.objects.filter(
        pk=download.pk, worker=worker, state=DownloadState.DOWNLOADING
    ).update(
        state=DownloadState.PENDING,
        worker="",
        lease_expires_at=None,
        not_before=None,
        attempts=F("attempts") - 1,
    )
    return DownloadState.PENDING if given else "lost"


def retry_later(download: Download, worker: str, error: str, *, permanent: bool = False) -> str:
    """A failed attempt: pending again after a backoff, or failed for good once the
    attempts are spent (or at once for a permanent error). Returns the new state."""
    row = Download.objects.filter(pk=download.pk, worker=worker).first()
    if row is None:
        return "lost"
    give_up = permanent or row.attempts >= settings.FOLLOWER_MAX_ATTEMPTS
    delay = settings.FOLLOWER_RETRY_SECONDS * 2 ** max(0, row.attempts - 1)
    state = DownloadState.FAILED if give_up else DownloadState.PENDING
    Download.objects.filter(pk=row.pk, worker=worker).update(
        state=state,
        worker="",
        lease_expires_at=None,
        last_error=error[:2000],
        not_before=None if give_up else timezone.now() + timedelta(seconds=delay),
        finished_at=timezone.now() if give_up else None,
    )
    return state


def retry_failed(downloads) -> int:
    """An operator's retry of failed downloads (the admin action)."""
    return downloads.filter(state=DownloadState.FAILED).update(
        state=DownloadState.PENDING, attempts=0, not_before=None, finished_at=None, last_error=""
    )


def record_ack(leader: Leader, seq: int) -> None:
    Leader.objects.filter(pk=leader.pk, acked_seq__lt=seq).update(acked_seq=seq)
    leader.refresh_from_db(fields=["acked_seq"])
