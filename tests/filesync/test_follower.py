"""The follower's state machine, through its services, without any network: feed pages as
the leader's `GET /api/sync/changes` gives them, files as `GET /api/sync/files/<id>` does,
blobs as its blob routes do, and the admin over the download rows."""

import hashlib
import io
import os
import threading
import uuid
import zlib
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone

from common.leases import LeaseLost
from filesync import blobstore
from filesync.client import SyncClient
from filesync.follower import mirror, services
from filesync.follower.models import Download, DownloadState, Leader, PendingLink
from filesync.follower.selectors import ack_position, is_idle, progress
from filesync.models import (
    Blob,
    Change,
    ChangeKind,
    File,
    FileLibrary,
    MediaObject,
    Project,
    Team,
)
from filesync.services import store_blob
from tests.conftest import stored_names

pytestmark = pytest.mark.django_db

DOWNLOADS = "/admin/follower/download/"
LEADERS = "/admin/follower/leader/"


@pytest.fixture
def leader():
    return services.leader_for("http://leader.test/")


def change(seq: int, kind: str, file, revision: int | None = 1, **payload) -> dict:
    return {"seq": seq, "kind": kind, "file": str(file), "revision": revision, "payload": payload}


def row(file) -> Download:
    return Download.objects.get(file_id=file)


def claimed(leader: Leader, file, worker: str = "w1") -> services.Claim:
    claim = services.claim(leader, worker)
    assert claim is not None and str(claim.download.file_id) == str(file), claim
    return claim


TEAM, PROJECT = str(uuid.uuid4()), str(uuid.uuid4())


def fetched(
    file,
    revision: int = 1,
    *,
    name: str = "Landing page",
    libraries=(),
    is_library: bool = False,
    pages=None,
    media=None,
) -> mirror.Fetched:
    """What mirror.fetch makes of `GET /api/sync/files/<id>` (see sync.selectors.file_content)."""
    now = timezone.now().isoformat()
    return mirror.Fetched(
        file={
            "id": str(file),
            "name": name,
            "is_library": is_library,
            "revision": revision,
            "data_version": 2,
            "features": [],
            "assets": {"components": {}, "colors": {}, "typographies": {}},
            "created_at": now,
            "modified_at": now,
            "deleted_at": None,
            "purge_after": None,
            "libraries": [str(library) for library in libraries],
            "project": {"id": PROJECT, "name": "Website"},
            "team": {"id": TEAM, "name": "Studio"},
        },
        pages=[{"id": str(uuid.uuid4()), "index": 0, "name": "Page 1", "objects": {}}]
        if pages is None
        else pages,
        media=[] if media is None else media,
    )


def pending_media(name: str = "hero.png") -> dict:
    """A media object whose bytes the leader does not have yet: no blob to fetch."""
    return {
        "id": str(uuid.uuid4()),
        "sha256": "ab" * 32,
        "ready": False,
        "name": name,
        "mtype": "image/png",
        "width": 10,
        "height": 20,
    }


def mirrored(leader: Leader, file, revision: int = 1, worker: str = "w1", **kwargs) -> File:
    """Claim the file's download and write it, as a worker would."""
    return mirror.write(fetched(file, revision, **kwargs), claimed(leader, file, worker).lease)


# --- applying the feed ----------------------------------------------------------------------


def test_apply_changes_makes_one_row_per_file(leader):
    a, b = uuid.uuid4(), uuid.uuid4()
    page = [
        change(1, ChangeKind.FILE_CREATED, a),
        change(2, ChangeKind.PAGE_ADDED, a, revision=2),
        change(3, ChangeKind.FILE_CREATED, b),
        change(4, ChangeKind.MEDIA_ADDED, a, revision=3),
    ]

    assert services.apply_changes(leader, page, 4) is True

    assert leader.feed_seq == 4 and leader.last_seen is not None
    assert Download.objects.count() == 2
    assert (row(a).state, row(a).revision, row(a).since_seq) == ("pending", 3, 1)
    assert (row(b).state, row(b).revision, row(b).since_seq) == ("pending", 1, 3)


def test_a_page_already_applied_is_not_applied_again(leader):
    file = uuid.uuid4()
    page = [change(1, ChangeKind.FILE_CREATED, file), change(2, ChangeKind.PAGE_ADDED, file, 2)]
    services.apply_changes(leader, page, 2)
    mirror.write(fetched(file, 2), claimed(leader, file).lease)

    assert services.apply_changes(leader, page, 2) is False

    assert row(file).state == DownloadState.DONE  # not reopened by the replayed page
    assert Download.objects.count() == 1 and leader.feed_seq == 2


def test_another_process_applied_the_page_first(leader):
    """A second follower process with the same leader: the page it read was applied by the
    first; it does nothing, and reads on from where the first got to."""
    file = uuid.uuid4()
    stale = Leader.objects.get(pk=leader.pk)
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)

    assert services.apply_changes(stale, [change(1, ChangeKind.FILE_CREATED, file)], 1) is False

    assert stale.feed_seq == 1  # else it would ask for the same page for ever
    assert Download.objects.count() == 1


def test_an_empty_page_moves_the_feed_position_only_forwards(leader):
    services.apply_changes(leader, [], 7)
    assert leader.feed_seq == 7
    services.apply_changes(leader, [], 3)
    assert leader.feed_seq == 7


def test_a_newer_change_reopens_a_done_download(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    mirrored(leader, file)
    done = row(file)
    assert (done.state, done.fetched_revision, done.attempts) == ("done", 1, 1)

    services.apply_changes(leader, [change(2, ChangeKind.PAGE_ADDED, file, revision=2)], 2)

    reopened = row(file)
    assert reopened.state == DownloadState.PENDING
    assert (reopened.revision, reopened.fetched_revision) == (2, 1)
    assert reopened.since_seq == 2  # acknowledged up to 1, not past 2
    assert reopened.attempts == 0
    assert ack_position(leader) == 1


def test_a_change_during_a_download_bumps_the_revision_and_keeps_the_claim(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)

    services.apply_changes(leader, [change(2, ChangeKind.PAGE_ADDED, file, revision=2)], 2)

    after = row(file)
    assert after.state == DownloadState.DOWNLOADING
    assert after.worker == claim.lease.holder
    assert after.lease_expires_at == claim.download.lease_expires_at
    assert (after.revision, after.since_seq) == (2, 1)
    assert services.claim(leader, "w2") is None
    claim.lease.renew()  # still this claim's


def test_finishing_an_older_revision_than_announced_goes_back_to_pending(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)
    services.apply_changes(leader, [change(2, ChangeKind.PAGE_ADDED, file, revision=2)], 2)

    mirror.write(fetched(file, 1), claim.lease)

    again = row(file)
    assert (again.state, again.revision, again.fetched_revision) == ("pending", 2, 1)
    assert again.worker == "" and again.lease_expires_at is None and again.finished_at is None
    assert ack_position(leader) == 0
    assert File.objects.get(pk=file).revision == 1  # what was fetched is kept meanwhile

    mirrored(leader, file, revision=2, worker="w2")
    assert (row(file).state, row(file).fetched_revision) == ("done", 2)
    assert ack_position(leader) == 2 and is_idle(leader)


# --- claims ---------------------------------------------------------------------------------


def test_claims_follow_the_feed_order_and_skip_rows_not_due(leader):
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    services.apply_changes(
        leader,
        [
            change(1, ChangeKind.FILE_CREATED, a),
            change(2, ChangeKind.FILE_CREATED, b),
            change(3, ChangeKind.FILE_CREATED, c),
        ],
        3,
    )
    Download.objects.filter(file_id=a).update(not_before=timezone.now() + timedelta(minutes=1))

    first = claimed(leader, b, "w1")
    assert (first.download.state, first.download.attempts) == ("downloading", 1)
    assert first.download.worker == first.lease.holder and first.lease.holder.startswith("w1/")
    assert first.download.lease_expires_at > timezone.now()
    second = claimed(leader, c, "w1")
    assert second.lease.holder.startswith("w1/") and second.lease.holder != first.lease.holder
    assert services.claim(leader, "w3") is None
    assert services.claim(services.leader_for("http://other.test"), "w3") is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_claim_distinct_rows(leader):
    """Workers in threads, each with its own connection, all claiming at once: every row
    goes to exactly one of them (SKIP LOCKED on PostgreSQL, the conditional UPDATE under
    SQLite's single writer)."""
    files = [uuid.uuid4() for _ in range(24)]
    services.apply_changes(
        leader,
        [change(n + 1, ChangeKind.FILE_CREATED, file) for n, file in enumerate(files)],
        len(files),
    )
    workers = 6
    start = threading.Barrier(workers)
    taken: dict[str, list[str]] = {}
    errors = []

    def work(name: str) -> None:
        mine = taken.setdefault(name, [])
        try:
            start.wait(timeout=10)
            while (claim := services.claim(leader, name)) is not None:
                mine.append(str(claim.download.file_id))
        except Exception as error:  # reported below, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    claims = [file for files_taken in taken.values() for file in files_taken]
    assert sorted(claims) == sorted(str(file) for file in files)  # each once, none lost
    for name, files_taken in taken.items():
        held = Download.objects.filter(worker__startswith=f"{name}/")
        assert set(held.values_list("file_id", flat=True)) == {
            uuid.UUID(file) for file in files_taken
        }
    assert not Download.objects.exclude(state=DownloadState.DOWNLOADING).exists()


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_a_row_another_worker_holds_locked(leader):
    """While one worker's claim holds the first row locked, others take the next rows at
    once instead of waiting for it; the row is claimable when its lock goes without a
    claim. Only PostgreSQL locks rows (SQLite has one writer at a time)."""
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("row locks and SKIP LOCKED are PostgreSQL's")
    files = [uuid.uuid4() for _ in range(3)]
    services.apply_changes(
        leader,
        [change(n + 1, ChangeKind.FILE_CREATED, file) for n, file in enumerate(files)],
        3,
    )
    got = []

    def other(name: str) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '5s'")
            got.append(services.claim(leader, name))
        finally:
            connection.close()

    with transaction.atomic():
        Download.objects.select_for_update().get(file_id=files[0])
        for name in ("w1", "w2"):
            thread = threading.Thread(target=other, args=(name,))
            thread.start()
            thread.join(timeout=10)
        assert sorted(str(c.download.file_id) for c in got) == sorted(str(f) for f in files[1:])

    assert str(services.claim(leader, "w3").download.file_id) == str(files[0])


@pytest.mark.parametrize("taker", ["w2", "w1"], ids=["another-worker", "same-worker-name"])
def test_a_stale_holder_writes_nothing_once_its_claim_was_taken_over(leader, taker, monkeypatch):
    """A worker that stalled past its lease, its row taken over by another worker or by one
    of the same name (the claims' holder tokens differ), can neither renew, finish, give
    back, retry nor cancel: each raises LeaseLost or answers "lost", and the row, the local
    files and the new claim's partial blob are as the new claim left them."""
    from filesync.follower import worker

    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    old = claimed(leader, file, "w1")
    assert services.claim(leader, taker) is None  # the lease still runs
    Download.objects.filter(file_id=file).update(lease_expires_at=timezone.now() - timedelta(1))
    new = claimed(leader, file, taker)
    assert new.lease.holder != old.lease.holder and new.download.attempts == 2
    new.lease.renew(bytes_done=10)
    partial = mirror.staging(new.download) / ("cd" * 32 + ".part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"the new claim's first piece")
    before = Download.objects.values().get(file_id=file)
    feed_before = Change.objects.count()

    with pytest.raises(LeaseLost):
        old.lease.renew(bytes_done=99)
    with pytest.raises(LeaseLost), transaction.atomic():
        services.finish(old.lease, 1)
    with pytest.raises(LeaseLost):
        mirror.write(fetched(file, media=[pending_media()]), old.lease)
    assert services.give_back(old.lease) == "lost"
    assert services.retry_later(old.lease, "too late") == "lost"
    assert services.retry_later(old.lease, "refused", permanent=True) == "lost"
    assert services.cancel_gone(old.lease) == "lost"
    monkeypatch.setattr(mirror, "fetch", lambda client, file_id: fetched(file))
    assert worker.run_download(None, old) == "lost"

    assert Download.objects.values().get(file_id=file) == before
    assert (before["worker"], before["bytes_done"]) == (new.lease.holder, 10)
    assert not File.objects.filter(pk=file).exists()
    assert not Team.objects.filter(pk=TEAM).exists()
    assert not MediaObject.objects.exists()
    assert Change.objects.count() == feed_before
    assert partial.read_bytes() == b"the new claim's first piece"

    mirror.write(fetched(file), new.lease)
    assert (row(file).state, row(file).worker) == ("done", "")


def test_a_row_is_held_exactly_while_it_is_downloading(leader):
    """The database refuses a holder on a row that is not downloading, and a downloading
    row without one: the holder alone fences a claim's writes."""
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    rows = Download.objects.filter(file_id=file)
    for fields in (
        {"worker": "w1/0123456789"},
        {"state": DownloadState.DOWNLOADING, "lease_expires_at": timezone.now()},
        {"state": DownloadState.DOWNLOADING, "worker": "w1/0123456789"},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            rows.update(**fields)
    assert (row(file).state, row(file).worker, row(file).lease_expires_at) == ("pending", "", None)


def test_a_stopped_worker_gives_its_claim_back_due_at_once_and_uncounted(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file, "w1")

    assert services.give_back(claim.lease) == DownloadState.PENDING

    given = row(file)
    assert (given.state, given.worker, given.lease_expires_at) == ("pending", "", None)
    assert (given.attempts, given.not_before) == (0, None)
    assert claimed(leader, file, "w2").download.attempts == 1  # at once, by anyone
    assert services.give_back(claim.lease) == "lost"  # once


# --- deletions ------------------------------------------------------------------------------


def test_a_deletion_during_the_download_cancels_it_and_nothing_is_written(leader, monkeypatch):
    from filesync.follower import worker

    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)
    partial = mirror.staging(claim.download) / ("cd" * 32 + ".part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"a first piece")
    feed_before = Change.objects.count()

    services.apply_changes(leader, [change(2, ChangeKind.FILE_DELETED, file)], 2)
    cancelled = row(file)
    assert (cancelled.state, cancelled.worker, cancelled.lease_expires_at) == (
        "cancelled",
        "",
        None,
    )

    with pytest.raises(LeaseLost):
        claim.lease.renew()
    with pytest.raises(LeaseLost):
        mirror.write(fetched(file, media=[pending_media()]), claim.lease)
    monkeypatch.setattr(mirror, "fetch", lambda client, file_id: fetched(file))
    assert worker.run_download(None, claim) == "lost"
    assert not partial.parent.exists()  # nobody holds the row: its partial blobs go

    assert not File.objects.filter(pk=file).exists()
    assert not Team.objects.filter(pk=TEAM).exists()
    assert not Project.objects.filter(pk=PROJECT).exists()
    assert not MediaObject.objects.exists()
    assert Change.objects.count() == feed_before
    assert row(file).state == DownloadState.CANCELLED
    assert ack_position(leader) == 2 and is_idle(leader)


def test_a_deletion_after_the_download_moves_the_local_file_to_the_trash(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    mirrored(leader, file)
    assert File.objects.get(pk=file).deleted_at is None

    services.apply_changes(leader, [change(2, ChangeKind.FILE_DELETED, file)], 2)

    local = File.objects.get(pk=file)
    assert local.deleted_at is not None and local.purge_after is not None
    assert (row(file).state, row(file).since_seq) == ("cancelled", 2)
    assert ack_position(leader) == 2

    services.apply_changes(leader, [change(3, ChangeKind.FILE_RESTORED, file, revision=1)], 3)
    assert (row(file).state, row(file).since_seq) == ("pending", 3)
    mirrored(leader, file)  # the leader's copy says it is not deleted
    assert File.objects.get(pk=file).deleted_at is None


def test_a_purge_deletes_the_local_file(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    mirrored(leader, file, media=[pending_media()])

    services.apply_changes(
        leader,
        [
            change(2, ChangeKind.FILE_DELETED, file),
            change(3, ChangeKind.FILE_PURGED, file, revision=None),
        ],
        3,
    )

    assert not File.objects.filter(pk=file).exists()
    assert not MediaObject.objects.exists()
    assert (row(file).state, row(file).since_seq) == ("cancelled", 3)
    passed_on = Change.objects.filter(file_id=file).order_by("seq").last()
    assert passed_on.kind == ChangeKind.FILE_PURGED  # for this Ferry's own followers


def test_a_deletion_of_a_file_never_fetched_is_harmless(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_DELETED, file)], 1)
    assert not Download.objects.exists()
    assert ack_position(leader) == 1


def test_a_file_gone_from_the_leader_is_cancelled(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)

    assert services.cancel_gone(claim.lease) == DownloadState.CANCELLED

    gone = row(file)
    assert (gone.state, gone.worker, gone.last_error) == ("cancelled", "", "Gone from the leader.")
    assert ack_position(leader) == 1


# --- failures -------------------------------------------------------------------------------


def test_a_row_whose_workers_keep_dying_fails(leader, settings):
    """A claim that expired at every attempt is not retried forever."""
    settings.FOLLOWER_MAX_ATTEMPTS = 2
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    for worker in ("w1", "w2"):
        claimed(leader, file, worker)
        Download.objects.filter(file_id=file).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )

    assert services.claim(leader, "w3") is None

    dead = row(file)
    assert (dead.state, dead.attempts, dead.worker) == ("failed", 2, "")
    assert "at every attempt" in dead.last_error


def test_an_unexpected_error_is_recorded_and_the_worker_lives_on(leader, monkeypatch):
    from filesync.follower import worker

    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)

    def broken(client, file_id):
        raise KeyError("page")

    monkeypatch.setattr(mirror, "fetch", broken)

    assert worker.run_download(None, claimed(leader, file)) == "pending"
    assert row(file).last_error == "KeyError: 'page'"


def test_retry_later_backs_off_doubling_then_fails(leader, settings):
    settings.FOLLOWER_RETRY_SECONDS = 10
    settings.FOLLOWER_MAX_ATTEMPTS = 3
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)

    for attempt, delay in ((1, 10), (2, 20)):
        claim = claimed(leader, file)
        before = timezone.now()
        assert services.retry_later(claim.lease, f"Retry: try {attempt}") == "pending"
        waiting = row(file)
        assert (waiting.attempts, waiting.worker, waiting.lease_expires_at) == (attempt, "", None)
        assert waiting.last_error == f"Retry: try {attempt}"
        assert before + timedelta(seconds=delay - 1) < waiting.not_before
        assert waiting.not_before <= timezone.now() + timedelta(seconds=delay)
        assert services.claim(leader, "w1") is None  # not due yet
        Download.objects.filter(file_id=file).update(not_before=timezone.now())

    assert services.retry_later(claimed(leader, file).lease, "Retry: try 3") == "failed"

    failed = row(file)
    assert (failed.state, failed.attempts, failed.not_before) == ("failed", 3, None)
    assert failed.finished_at is not None and failed.last_error == "Retry: try 3"
    assert services.claim(leader, "w1") is None
    assert is_idle(leader) and ack_position(leader) == 0  # failed rows hold the ack back


def test_a_permanent_failure_fails_at_once(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)

    assert services.retry_later(claim.lease, "x" * 3000, permanent=True) == "failed"

    failed = row(file)
    assert (failed.state, failed.attempts, len(failed.last_error)) == ("failed", 1, 2000)


def test_retry_failed_reopens_failed_rows_only(leader):
    a, b = uuid.uuid4(), uuid.uuid4()
    services.apply_changes(
        leader,
        [change(1, ChangeKind.FILE_CREATED, a), change(2, ChangeKind.FILE_CREATED, b)],
        2,
    )
    services.retry_later(claimed(leader, a).lease, "Refused: 403", permanent=True)
    mirrored(leader, b)

    assert services.retry_failed(Download.objects.all()) == 1

    again = row(a)
    assert (again.state, again.attempts, again.finished_at) == ("pending", 0, None)
    assert row(b).state == DownloadState.DONE
    assert claimed(leader, a).download.attempts == 1


def test_a_new_change_reopens_a_failed_download(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    services.retry_later(claimed(leader, file).lease, "Refused: 403", permanent=True)

    services.apply_changes(leader, [change(2, ChangeKind.FILE_UPDATED, file, revision=2)], 2)

    again = row(file)
    assert (again.state, again.attempts, again.last_error, again.since_seq) == (
        "pending",
        0,
        "",
        2,
    )


# --- acknowledgement and progress -----------------------------------------------------------


def test_ack_position_holds_before_the_first_open_or_failed_download(leader):
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    services.apply_changes(
        leader,
        [
            change(1, ChangeKind.FILE_CREATED, a),
            change(2, ChangeKind.FILE_CREATED, b),
            change(3, ChangeKind.PAGE_ADDED, a, revision=2),
            change(4, ChangeKind.FILE_CREATED, c),
        ],
        5,
    )
    assert ack_position(leader) == 0

    mirrored(leader, a, revision=2)
    assert ack_position(leader) == 1  # b, opened by change 2, is still open
    claim = claimed(leader, b)
    assert ack_position(leader) == 1  # downloading holds too
    services.retry_later(claim.lease, "Refused", permanent=True)
    assert ack_position(leader) == 1  # and failed
    services.retry_failed(Download.objects.filter(file_id=b))
    mirrored(leader, b)
    assert ack_position(leader) == 3
    mirrored(leader, c)
    assert ack_position(leader) == 5  # the whole feed read

    services.record_ack(leader, 5)
    services.record_ack(leader, 3)  # never backwards
    assert leader.acked_seq == 5


def test_progress_counts_rows_by_state_and_bytes(leader):
    a, b = uuid.uuid4(), uuid.uuid4()
    services.apply_changes(
        leader,
        [change(1, ChangeKind.FILE_CREATED, a), change(2, ChangeKind.FILE_CREATED, b)],
        2,
    )
    claimed(leader, a).lease.renew(bytes_done=1234)

    assert progress(leader) == {
        "pending": 1,
        "downloading": 1,
        "done": 0,
        "cancelled": 0,
        "failed": 0,
        "bytes": 1234,
    }
    assert not is_idle(leader)


# --- the mirror's blobs ---------------------------------------------------------------------


def leader_serving(blobs: dict[str, bytes]) -> SyncClient:
    """A real client whose transport answers as the leader's blob routes do (HEAD, ranged
    GET), in process."""

    def answer(request: httpx.Request) -> httpx.Response:
        data = blobs[request.url.path.rsplit("/", 1)[1]]
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        first, last = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        return httpx.Response(206, content=data[first : last + 1])

    client = SyncClient("http://leader.test", "token", chunk_size=100_000)
    client.http = httpx.Client(base_url="http://leader.test", transport=httpx.MockTransport(answer))
    return client


def ready_media(data: bytes) -> dict:
    return {**pending_media(), "sha256": hashlib.sha256(data).hexdigest(), "ready": True}


def test_fetched_blobs_are_stored_verified_with_their_crc(leader):
    file, data = uuid.uuid4(), os.urandom(250_000)
    media = ready_media(data)
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)

    leader_has = leader_serving({media["sha256"]: data})
    got = mirror.fetch_blobs(leader_has, fetched(file, media=[media]), claim)

    blob = Blob.objects.get()
    assert (got, blob.sha256, blob.size, blob.crc32) == (
        len(data),
        media["sha256"],
        len(data),
        zlib.crc32(data),
    )
    assert b"".join(blobstore.iter_blob(blob.sha256)) == data
    assert not [p for p in mirror.staging(claim.download).rglob("*") if p.is_file()]


def test_a_fetched_blob_that_does_not_hash_to_its_name_is_refused(leader):
    file, data = uuid.uuid4(), os.urandom(1000)
    media = ready_media(data)
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    claim = claimed(leader, file)
    damaged = {media["sha256"]: b"x" + data[1:]}

    with pytest.raises(mirror.Retry, match="do not hash"):
        mirror.fetch_blobs(leader_serving(damaged), fetched(file, media=[media]), claim)

    assert not Blob.objects.exists() and stored_names("blobs") == []
    assert not [p for p in mirror.staging(claim.download).rglob("*") if p.is_file()]


# --- the mirror's write ---------------------------------------------------------------------


def test_write_makes_the_file_as_the_leader_has_it(leader, png_bytes):
    file = uuid.uuid4()
    blob = store_blob(stream=io.BytesIO(png_bytes), content_type="image/png")
    ready = {**pending_media("photo.png"), "sha256": blob.sha256, "ready": True}
    waiting = pending_media()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file, revision=4)], 1)

    local = mirrored(leader, file, revision=4, media=[ready, waiting])

    assert (str(local.pk), local.revision, local.name) == (str(file), 4, "Landing page")
    assert (str(local.project_id), str(local.project.team_id)) == (PROJECT, TEAM)
    assert local.pages.count() == 1
    by_id = {str(m.pk): m for m in MediaObject.objects.filter(file=local)}
    assert by_id[ready["id"]].blob_id == blob.sha256
    assert by_id[waiting["id"]].blob_id is None and by_id[waiting["id"]].width == 10
    assert Change.objects.filter(file_id=file, kind=ChangeKind.FILE_CREATED).exists()


def test_a_library_link_waits_for_its_library(leader):
    design, library = uuid.uuid4(), uuid.uuid4()
    services.apply_changes(
        leader,
        [
            change(1, ChangeKind.FILE_CREATED, design),
            change(2, ChangeKind.LIBRARY_LINKED, design, library=str(library)),
            change(3, ChangeKind.FILE_CREATED, library),
        ],
        3,
    )

    mirrored(leader, design, libraries=[library])

    assert not FileLibrary.objects.exists()
    assert PendingLink.objects.filter(file_id=design, library_id=library).exists()

    mirrored(leader, library, name="Brand library", is_library=True)

    assert FileLibrary.objects.filter(file_id=design, library_id=library).exists()
    assert not PendingLink.objects.exists()


def test_an_unlinked_library_drops_its_pending_link(leader):
    design, library = uuid.uuid4(), uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, design)], 1)
    mirrored(leader, design, libraries=[library])
    services.apply_changes(
        leader, [change(2, ChangeKind.LIBRARY_UNLINKED, design, library=str(library))], 2
    )

    mirrored(leader, design)

    assert not PendingLink.objects.exists()


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def failed(leader):
    file = uuid.uuid4()
    services.apply_changes(leader, [change(1, ChangeKind.FILE_CREATED, file)], 1)
    error = "Refused: 403 Forbidden " + "you may not read this file " * 10
    services.retry_later(claimed(leader, file).lease, error, permanent=True)
    return row(file)


def action_names(response) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices}


def retry(client, *downloads):
    return client.post(
        DOWNLOADS,
        {"action": "retry", "_selected_action": [str(d.pk) for d in downloads]},
        follow=True,
    )


def test_download_list_shows_a_failed_row_and_its_error(admin_client, failed):
    response = admin_client.get(DOWNLOADS)

    assert response.status_code == 200
    html = response.content.decode()
    assert str(failed.file_id) in html
    assert "Refused: 403 Forbidden" in html
    assert ">failed</span>" in html
    assert list(response.context["cl"].result_list) == [failed]
    assert action_names(response) == {"", "retry"}

    filtered = admin_client.get(DOWNLOADS, {"state__exact": "done"})
    assert list(filtered.context["cl"].result_list) == []
    found = admin_client.get(DOWNLOADS, {"q": str(failed.file_id)})
    assert list(found.context["cl"].result_list) == [failed]


def test_download_rows_are_read_only(admin_client, failed):
    page = admin_client.get(f"{DOWNLOADS}{failed.pk}/change/")
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert (
        admin_client.post(f"{DOWNLOADS}{failed.pk}/change/", {"state": "done"}).status_code == 403
    )
    assert admin_client.get(f"{DOWNLOADS}add/").status_code == 403
    assert admin_client.post(f"{DOWNLOADS}{failed.pk}/delete/", {"post": "yes"}).status_code == 403
    assert row(failed.file_id).state == DownloadState.FAILED


def test_retry_action_reopens_a_failed_download(admin_client, failed, leader):
    other = uuid.uuid4()
    services.apply_changes(leader, [change(2, ChangeKind.FILE_CREATED, other)], 2)

    response = retry(admin_client, failed, row(other))

    assert "1 failed download will be retried." in [
        str(m) for m in get_messages(response.wsgi_request)
    ]
    again = row(failed.file_id)
    assert (again.state, again.attempts, again.finished_at) == ("pending", 0, None)
    assert row(other).state == DownloadState.PENDING


def test_leader_page_shows_positions_and_counts(admin_client, failed, leader):
    services.record_ack(leader, 1)

    response = admin_client.get(LEADERS)

    assert response.status_code == 200
    html = response.content.decode()
    assert "http://leader.test" in html
    assert f"leader__id__exact={leader.pk}&amp;state__exact=failed" in html
    assert ">failed 1</a>" in html
    detail = admin_client.get(f"{LEADERS}{leader.pk}/change/")
    assert detail.status_code == 200 and "failed 1" in detail.content.decode()


def test_non_staff_are_sent_to_the_login(make_user, failed):
    client = Client()
    client.force_login(make_user("nobody"))

    for url in (DOWNLOADS, LEADERS):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    retry(client, failed)
    assert row(failed.file_id).state == DownloadState.FAILED


def test_staff_need_the_permissions(make_user, failed):
    user = make_user("stella", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(DOWNLOADS).status_code == 403

    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="follower", codename="view_download")
    )
    page = client.get(DOWNLOADS)
    assert page.status_code == 200
    assert "retry" not in action_names(page)
    retry(client, failed)
    assert row(failed.file_id).state == DownloadState.FAILED

    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="follower", codename="change_download")
    )
    retry(client, failed)
    assert row(failed.file_id).state == DownloadState.PENDING


def test_sync_follow_refuses_no_workers_before_touching_anything():
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--workers must be at least 1"):
        call_command("sync_follow", leader="http://leader.test", token="t", workers=0)
    assert not Leader.objects.exists()
