"""A follower's state: the leader it mirrors, how far it read the feed, and one download
row per file it has to fetch."""

from django.db import models
from django.db.models import Q


class Leader(models.Model):
    """The Ferry this one mirrors. `feed_seq`: changes applied up to here; `acked_seq`:
    what the leader was told this replica holds."""

    url = models.URLField(unique=True)
    replica_id = models.UUIDField(null=True, blank=True)
    feed_seq = models.BigIntegerField(default=0)
    acked_seq = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class DownloadState(models.TextChoices):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


OPEN_STATES = (DownloadState.PENDING, DownloadState.DOWNLOADING)


class Download(models.Model):
    """One file to fetch: pending → downloading → done, or cancelled (deleted on the leader
    meanwhile) or failed (after its attempts, with the last error).

    `revision` is the newest revision the feed announced; a download that fetched an older
    one goes back to pending. `since_seq` is the change that opened it: the follower does
    not acknowledge the feed past an open download.
    """

    leader = models.ForeignKey(Leader, on_delete=models.CASCADE, related_name="downloads")
    file_id = models.UUIDField()
    state = models.CharField(
        max_length=12, choices=DownloadState.choices, default=DownloadState.PENDING
    )
    revision = models.PositiveIntegerField(default=0)
    fetched_revision = models.PositiveIntegerField(default=0)
    since_seq = models.BigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["since_seq", "id"]
        constraints = [
            models.UniqueConstraint(fields=["leader", "file_id"], name="download_once_per_file"),
            # Held (a holder and a lease) exactly while downloading: a claim's writes are
            # fenced by the holder alone, since every other way out of `downloading` (the
            # feed's cancel, the sweep of dead workers) clears it.
            models.CheckConstraint(
                condition=(Q(state="downloading", lease_expires_at__isnull=False) & ~Q(worker=""))
                | (~Q(state="downloading") & Q(worker="", lease_expires_at__isnull=True)),
                name="download_held_while_downloading",
            ),
        ]
        indexes = [models.Index(fields=["leader", "state", "since_seq"], name="download_queue")]

    def __str__(self) -> str:
        return f"{self.file_id} ({self.state})"


class PendingLink(models.Model):
    """A library link whose library has not arrived yet; made when it does."""

    file_id = models.UUIDField()
    library_id = models.UUIDField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["file_id", "library_id"], name="pendinglink_once")
        ]

    def __str__(self) -> str:
        return f"{self.file_id} uses {self.library_id}"
