"""The revisions exports pinned, kept for them when an edit races them (filesync.preserving).

The keeper points every active job's pin of the file's current revision at one preserved
snapshot, so two exports pinning the same revision share it. A preserved snapshot goes
when no active job reads it: swept in the transaction that ends a job, and by the
scheduled maintenance for one an edit preserved while that job was ending.
"""

from exports.models import ACTIVE_STATES, PinnedFile
from filesync.models import File, Snapshot


def keep_pinned_revision(file: File, freeze) -> None:
    """filesync's pin keeper: active pins of the file's current revision, read live until
    now, read from the snapshot `freeze()` takes from here on."""
    pins = PinnedFile.objects.filter(
        file=file, revision=file.revision, snapshot__isnull=True, job__state__in=ACTIVE_STATES
    )
    if pins.exists():
        pins.update(snapshot=freeze())


def release_preserved() -> int:
    """Delete the preserved snapshots no active export reads; how many went. Pins of ended
    jobs go back to naming the revision alone (a retry then pins the file anew)."""
    preserved = Snapshot.all_kinds.filter(kind=Snapshot.Kind.PRESERVED)
    PinnedFile.objects.filter(snapshot__in=preserved).exclude(job__state__in=ACTIVE_STATES).update(
        snapshot=None
    )
    needed = PinnedFile.objects.filter(job__state__in=ACTIVE_STATES, snapshot__isnull=False)
    _, deleted = preserved.exclude(pk__in=needed.values("snapshot_id")).delete()
    return deleted.get(Snapshot._meta.label, 0)
