import io
import os
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from filesync import services
from filesync.models import Blob, ContentLock, File, Replica
from filesync.purge import purge
from filesync.singleton import NotHeld, exclusive
from filesync.sync import services as sync_services
from filesync.sync.selectors import feed_position
from tests.conftest import stored_names

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_grace(settings):
    settings.FILE_PURGE_GRACE_SECONDS = 0
    settings.REPLICA_STALE_SECONDS = 3600


def gone(file) -> bool:
    return not File.objects.filter(pk=file.pk).exists()


def test_a_replica_that_has_not_acknowledged_the_deletion_holds_the_file(design, editor):
    replica = sync_services.register_replica(owner=editor, name="laptop")
    services.soft_delete_file(file=design)
    assert purge().files == [] and not gone(design)
    sync_services.acknowledge(replica=replica, seq=feed_position())
    assert [f.pk for f in purge().files] == [design.pk] and gone(design)


def test_a_stale_replica_stops_blocking(design, editor):
    replica = sync_services.register_replica(owner=editor, name="old laptop")
    Replica.objects.filter(pk=replica.pk).update(last_seen=timezone.now() - timedelta(days=2))
    services.soft_delete_file(file=design)
    purge()
    assert gone(design)


def test_a_live_lock_on_a_files_blob_holds_the_file_and_the_blob(design, media, editor):
    lock = sync_services.take_lock(blob=media.blob, holder=editor)
    services.soft_delete_file(file=design)
    assert purge() == ([], []) and not gone(design)
    ContentLock.objects.filter(pk=lock.pk).update(expires_at=timezone.now())
    done = purge()
    assert gone(design) and done.blobs == [media.blob_id]
    assert not Blob.objects.exists() and stored_names("blobs") == []


def test_unused_blobs_go_after_the_grace_period_and_used_ones_stay(media, settings):
    lonely = services.store_blob(stream=io.BytesIO(os.urandom(100)))
    settings.FILE_PURGE_GRACE_SECONDS = 3600
    assert purge().blobs == []
    settings.FILE_PURGE_GRACE_SECONDS = 0
    assert purge().blobs == [lonely.sha256]
    assert list(Blob.objects.values_list("pk", flat=True)) == [media.blob_id]


def test_dry_run_lists_and_deletes_nothing(design):
    services.soft_delete_file(file=design)
    out = io.StringIO()
    call_command("purge", "--dry-run", stdout=out)
    assert f"would purge file {design.id}" in out.getvalue()
    assert not gone(design)


def test_purge_refuses_to_run_while_another_node_purges(design, live_env):
    services.soft_delete_file(file=design)
    with other_node_holding("purge", live_env):
        with pytest.raises(CommandError, match="another"):
            call_command("purge", stdout=io.StringIO())
    assert not gone(design)
    call_command("purge", stdout=io.StringIO())
    assert gone(design)


class other_node_holding:
    """The purge lock held by another process: a separate connection (PostgreSQL) or a
    separate open file (SQLite), as a second node would hold it."""

    def __init__(self, name, env):
        self.name = name
        self.env = env

    def __enter__(self):
        from django.db import connection

        self.postgres = connection.vendor == "postgresql"
        if self.postgres:
            import psycopg

            from filesync.singleton import _key

            params = connection.get_connection_params()
            self.conn = psycopg.connect(
                **{k: v for k, v in params.items() if k in ("host", "port", "user", "dbname")},
                autocommit=True,
            )
            self.conn.execute("SELECT pg_advisory_lock(%s)", [_key(self.name)])
        else:
            import fcntl

            from django.conf import settings

            self.conn = open(settings.VAR_DIR / f"{self.name}.lock", "w")
            fcntl.flock(self.conn, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.postgres:  # a closed connection's backend lets go of its locks only as it exits
            from filesync.singleton import _key

            self.conn.execute("SELECT pg_advisory_unlock(%s)", [_key(self.name)])
        self.conn.close()


def test_the_singleton_notices_a_lost_lock(live_env):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a file lock cannot be lost while its file is open")
    with exclusive("probe") as still_held:
        still_held()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
        with pytest.raises(NotHeld):
            still_held()


operations = st.lists(
    st.tuples(
        st.sampled_from(["delete", "restore", "lock", "unlock", "ack", "pin", "unpin", "purge"]),
        st.integers(min_value=0, max_value=2),
    ),
    min_size=1,
    max_size=20,
)


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schedule=operations)
def test_purge_never_removes_what_is_locked_pinned_or_unacknowledged(schedule, project, editor):
    """Random schedules of deletes, restores, locks, acks, export pins and purges."""
    from exports import services as export_services
    from exports.models import ExportJob, JobState

    files, blobs = [], []
    for n in range(3):
        file = services.create_file(project=project, name=f"f{n}")
        media = services.add_media(
            file=file,
            name="m",
            stream=io.BytesIO(os.urandom(64)),
            content_type="application/octet-stream",
        )
        files.append(file)
        blobs.append(media.blob_id)
    replica = sync_services.register_replica(owner=editor, name="r")
    locks, jobs = {}, {}
    try:
        for action, n in schedule:
            file = files[n]
            if File.objects.filter(pk=file.pk).exists() is False:
                continue
            if action == "delete":
                services.soft_delete_file(file=file)
            elif action == "restore":
                services.restore_file(file=file)
            elif action == "lock" and n not in locks:
                locks[n] = sync_services.take_lock(
                    blob=Blob.objects.get(pk=blobs[n]), holder=editor
                )
            elif action == "unlock" and n in locks:
                locks.pop(n).delete()
            elif action == "ack":
                sync_services.acknowledge(replica=replica, seq=feed_position())
            elif action == "pin" and n not in jobs and not file.is_deleted:
                file.refresh_from_db()
                if file.deleted_at is None:
                    jobs[n] = export_services.create_export_job(file_ids=[file.pk], enqueue=False)
            elif action == "unpin" and n in jobs:
                ExportJob.objects.filter(pk=jobs.pop(n).pk).update(state=JobState.CANCELLED)
            elif action == "purge":
                acked = Replica.objects.get(pk=replica.pk).acked_seq
                from filesync.models import Change, ChangeKind

                for purged in purge().files:
                    index = files.index(next(f for f in files if f.pk == purged.pk))
                    assert index not in locks, "purged a file whose blob is locked"
                    assert index not in jobs, "purged a file pinned by an active export"
                    last_delete = (
                        Change.objects.filter(file_id=purged.pk, kind=ChangeKind.FILE_DELETED)
                        .latest("seq")
                        .seq
                    )
                    assert last_delete <= acked, "purged a file the replica had not acknowledged"
                for sha in blobs:
                    if any(blobs[i] == sha for i in locks):
                        assert Blob.objects.filter(pk=sha).exists(), "removed a locked blob"
    finally:
        ExportJob.objects.all().delete()
        File.objects.filter(project=project).delete()
        ContentLock.objects.all().delete()
        Replica.objects.all().delete()
        Blob.objects.all().delete()
