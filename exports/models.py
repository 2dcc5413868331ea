"""Export jobs, their pinned plan, their checkpoint tables, and their event trail."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)


class LibrariesMode(models.TextChoices):
    ALL = "all", "Include linked libraries"
    MERGE = "merge", "Merge used library assets into each file"
    DETACH = "detach", "Drop references to libraries"


class Job(models.Model):
    """What export and import jobs share: state, progress, the lease, the event counter."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    cancel_requested = models.BooleanField(default=False)

    items_done = models.PositiveIntegerField(default=0)
    items_total = models.PositiveIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)

    # Lease: the worker that holds the job, until when; renewed while it works.
    worker = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    ticks = models.PositiveIntegerField(default=0)
    requeued_at = models.DateTimeField(null=True, blank=True)

    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)

    event_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class ExportJob(Job):
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="export_jobs",
    )
    project = models.ForeignKey(
        "filesync.Project",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="export_jobs",
    )
    libraries = models.CharField(
        max_length=10, choices=LibrariesMode.choices, default=LibrariesMode.ALL
    )
    callback_url = models.URLField(blank=True)
    callback_state = models.CharField(max_length=10, blank=True)
    callback_attempts = models.PositiveSmallIntegerField(default=0)
    #: When the scheduled retry of the callback runs; empty when none is scheduled.
    callback_next_attempt_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # Progress: items are archive entries; bytes are archive bytes (total is an estimate
    # until the end, when it becomes the artifact's size).
    parts_done = models.PositiveIntegerField(default=0)

    # Checkpoint: bytes durably written, the hash of exactly those bytes, the part size
    # and the sink's own state (S3 upload id). Entries and parts live in their own tables.
    part_size = models.PositiveIntegerField(default=0)
    bytes_flushed = models.BigIntegerField(default=0)
    hash_state = models.BinaryField(null=True, blank=True)
    sink_state = models.JSONField(default=dict, blank=True)
    #: Which deflate wrote the checkpoint's bytes (zipstream.compressor_identity); a worker
    #: with another one resumes from a point that needs no re-compression (resume.py).
    #: Empty for a job checkpointed before this was recorded: any worker counts as another.
    compressor = models.CharField(max_length=200, blank=True)

    # What a resume cost: part writes in all (a rewritten part counts again) and bytes
    # regenerated only to be dropped because they were already written.
    part_writes = models.PositiveIntegerField(default=0)
    bytes_replayed = models.BigIntegerField(default=0)
    #: Parts a dead worker had written past its last checkpoint, found and redone on resume.
    parts_rewritten = models.PositiveIntegerField(default=0)

    artifact_name = models.CharField(max_length=300, blank=True)
    artifact_size = models.BigIntegerField(null=True, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["state", "lease_expires_at"], name="exportjob_lease")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(state="succeeded") | ~Q(artifact_sha256=""),
                name="exportjob_succeeded_has_sha256",
            ),
        ]

    def __str__(self) -> str:
        return f"Export {self.id} ({self.state})"


class ImportJob(Job):
    """A binfile coming back into a project: validated whole, then written in one
    transaction. Its input is an uploaded archive (kept in the exports storage until the
    job ends) or a blob a resumable upload completed."""

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="import_jobs",
    )
    project = models.ForeignKey(
        "filesync.Project",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="import_jobs",
    )
    source_name = models.CharField(max_length=300, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)
    source_size = models.BigIntegerField(default=0)
    #: {archive file id: new file id} once the import committed.
    files = models.JSONField(default=dict, blank=True)

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["state", "lease_expires_at"], name="importjob_lease")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(source_name="") | ~Q(source_blob=""), name="importjob_has_source"
            ),
        ]

    def __str__(self) -> str:
        return f"Import {self.id} ({self.state})"


class PinnedFile(models.Model):
    """A file the job exports, pinned at creation: its revision, or a snapshot of it.

    Library files read only to merge their assets are pinned too (`role=merge_source`).
    Purge waits while an active job pins a file.
    """

    class Role(models.TextChoices):
        FILE = "file"
        LIBRARY = "library"
        MERGE_SOURCE = "merge_source"

    job = models.ForeignKey(ExportJob, on_delete=models.CASCADE, related_name="pinned")
    position = models.PositiveIntegerField()
    file = models.ForeignKey("filesync.File", on_delete=models.CASCADE, related_name="export_pins")
    snapshot = models.ForeignKey(
        "filesync.Snapshot", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    revision = models.PositiveIntegerField()
    role = models.CharField(max_length=12, choices=Role.choices)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="pinnedfile_position"),
            models.UniqueConstraint(fields=["job", "file"], name="pinnedfile_once"),
        ]

    def __str__(self) -> str:
        return f"{self.file_id} r{self.revision}"


class PinnedRelation(models.Model):
    """A file-uses-library link as it stood when the job was planned (mode `all`)."""

    job = models.ForeignKey(ExportJob, on_delete=models.CASCADE, related_name="relations")
    file_id = models.UUIDField()
    library_id = models.UUIDField()

    class Meta:
        ordering = ["job", "file_id", "library_id"]

    def __str__(self) -> str:
        return f"{self.file_id} uses {self.library_id}"


class ExportEntry(models.Model):
    """The central-directory record of an entry whose bytes are all durably written."""

    job = models.ForeignKey(ExportJob, on_delete=models.CASCADE, related_name="entries")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=300)
    offset = models.BigIntegerField()
    method = models.PositiveSmallIntegerField()
    dos_time = models.PositiveIntegerField()
    dos_date = models.PositiveIntegerField()
    crc = models.BigIntegerField()
    compressed_size = models.BigIntegerField()
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    zip64 = models.BooleanField()

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="exportentry_index"),
        ]

    def __str__(self) -> str:
        return self.name


class ExportPart(models.Model):
    """A part durably written by the sink (for S3, with the ETag multipart completion needs)."""

    job = models.ForeignKey(ExportJob, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    etag = models.CharField(max_length=200, blank=True)
    #: The archive's hash state at the end of this part, for a resume that starts here.
    hash_state = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="exportpart_number")]

    def __str__(self) -> str:
        return f"part {self.number}"


class EventKind(models.TextChoices):
    QUEUED = "queued"
    PROGRESS = "progress"
    END = "end"
    ERROR = "error"
    CANCELLED = "cancelled"


class Event(models.Model):
    """A job's event trail: a row first, then a push. Listeners catch up from the rows."""

    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=EventKind.choices)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["job", "seq"]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.seq} {self.kind}"


class JobEvent(Event):
    job = models.ForeignKey(ExportJob, on_delete=models.CASCADE, related_name="events")

    class Meta(Event.Meta):
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="jobevent_seq")]


class ImportEvent(Event):
    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="events")

    class Meta(Event.Meta):
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="importevent_seq")]


class WebhookSecret(models.Model):
    """A user's key for signing the callbacks of their exports (Standard Webhooks, `whsec_`
    and base64). Symmetric, so the server keeps it to sign; it is shown once, when made,
    and never again. Rotating it replaces the row's value."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(secret__startswith="whsec_"), name="webhooksecret_prefixed"
            ),
        ]

    def __str__(self) -> str:
        return f"Webhook secret of {self.user}"
