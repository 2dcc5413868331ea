"""The follower's writes: applying the leader's feed to the download rows, and claiming
and ending downloads. The mirror (mirror.py) writes the files themselves.

Claims are safe with any number of workers on any number of machines: on PostgreSQL a
worker picks the first claimable row with `SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite
(one writer at a time) the first one. Either way it takes the row with a `common.leases`
Lease, whose holder token is unique to the claim; the worker's every later write about
the row (renewal, finish, give back, retry, cancel) is fenced by that token.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.leases import Lease, LeaseLost, new_holder
from filesync.feed import lock_feed, record_change
from filesync.models import ChangeKind, File
from filesync.services import soft_delete_file

from .models import OPEN_STATES, Download, DownloadState, Leader

#: Feed kinds that say nothing about content to fetch.
DELETIONS = {ChangeKind.FILE_DELETED, ChangeKind.FILE_PURGED}


#: What the end of a claim returns when the claim was no longer the worker's.
LOST = "lost"


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


@dataclass(frozen=True)
class Claim:
    """A download and the worker's lease on it. Every write the worker makes about the row
    goes through `lease`, fenced by a holder token unique to this claim: a worker that lost
    the row (cancelled by the feed, or taken over after its lease ran out, even by a worker
    of the same name) writes nothing more and gets `LeaseLost`."""

    download: Download
    lease: Lease


def claim(leader: Leader, worker: str) -> Claim | None:
    """The next file to fetch, claimed by `worker` under a lease; None when none is due.
    A row whose worker died (its lease ran out) is claimable again. SKIP LOCKED picks a
    row nobody else is claiming at the moment; the lease's conditional take is what wins
    it (on SQLite, which locks no rows, another worker may have taken the pick first)."""
    now = timezone.now()
    due = Q(state=DownloadState.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    abandoned = Q(state=DownloadState.DOWNLOADING, lease_expires_at__lt=now)
    queue = Download.objects.filter(due | abandoned, leader=leader).order_by("since_seq", "id")
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
    skip_locked = connection.features.has_select_for_update_skip_locked
    holder = new_holder(worker)
    for _ in range(20):
        with transaction.atomic():
            row = (queue.select_for_update(skip_locked=True) if skip_locked else queue).first()
            if row is None:
                return None
            lease = Lease.take(
                queue,
                row.pk,
                holder=holder,
                seconds=settings.FOLLOWER_LEASE_SECONDS,
                state=DownloadState.DOWNLOADING,
                attempts=F("attempts") + 1,
                bytes_done=0,
            )
        if lease is not None:
            return Claim(Download.objects.get(pk=row.pk), lease)
    return None  # another worker won every row tried; the next call looks again


def finish(lease: Lease, fetched_revision: int) -> None:
    """Inside the mirror's transaction: done, or pending again when the feed announced a
    newer revision meanwhile. LeaseLost (rolling the mirror's writes back) if the claim is
    no longer this one's."""
    row = lease.lock()
    newer = row.revision > fetched_revision
    lease.release(
        state=DownloadState.PENDING if newer else DownloadState.DONE,
        fetched_revision=fetched_revision,
        last_error="",
        finished_at=None if newer else timezone.now(),
    )


def cancel_gone(lease: Lease) -> str:
    """The leader no longer has the file (purged, or no longer visible): nothing to fetch.
    Returns the new state, or "lost" if the claim was no longer this one's."""
    gone = lease.release(
        state=DownloadState.CANCELLED,
        last_error="Gone from the leader.",
        finished_at=timezone.now(),
    )
    return DownloadState.CANCELLED if gone else LOST


def give_back(lease: Lease) -> str:
    """A download its worker stopped (the command was asked to stop): pending again and due
    at once, the attempt not counted, so the next run resumes it (and its partial blob)
    without waiting for the lease to run out. Only while this claim still holds it."""
    given = lease.release(state=DownloadState.PENDING, not_before=None, attempts=F("attempts") - 1)
    return DownloadState.PENDING if given else LOST


def retry_later(lease: Lease, error: str, *, permanent: bool = False) -> str:
    """A failed attempt: pending again after a backoff, or failed for good once the
    attempts are spent (or at once for a permanent error). Returns the new state, or
    "lost" if the claim was no longer this one's."""
    with transaction.atomic():
        try:
            row = lease.lock()  # its attempts, read under the lease they are written under
        except LeaseLost:
            return LOST
        give_up = permanent or row.attempts >= settings.FOLLOWER_MAX_ATTEMPTS
        delay = settings.FOLLOWER_RETRY_SECONDS * 2 ** max(0, row.attempts - 1)
        state = DownloadState.FAILED if give_up else DownloadState.PENDING
        lease.release(
            state=state,
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
