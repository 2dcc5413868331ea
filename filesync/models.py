"""The document store: teams, projects, files made of pages, media blobs, libraries, snapshots."""

import json
import uuid

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q

from .content import validate_assets, validate_features, validate_objects

#: The file data layout this server writes. Imports of older data are migrated up to it.
DATA_VERSION = 2

sha256_validator = RegexValidator(r"^[0-9a-f]{64}$", "A sha256 is 64 lowercase hex digits.")


class FastJSONDecoder(json.JSONDecoder):
    """Page objects are the bulk of what an export reads; orjson parses them ~4x faster."""

    def decode(self, s, *args):
        return orjson.loads(s)


def empty_assets() -> dict:
    return {"components": {}, "colors": {}, "typographies": {}}


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"

    @property
    def rank(self) -> int:
        return {"viewer": 1, "editor": 2, "owner": 3}[self.value]


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="membership_unique_user_team"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class File(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=250)
    is_library = models.BooleanField(default=False)
    revision = models.PositiveIntegerField(default=1)
    data_version = models.PositiveSmallIntegerField(default=DATA_VERSION)
    features = models.JSONField(default=list, blank=True)
    assets = models.JSONField(default=empty_assets, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    purge_after = models.DateTimeField(null=True, blank=True)
    libraries = models.ManyToManyField(
        "self", through="FileLibrary", symmetrical=False, related_name="used_by"
    )

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["project", "deleted_at"], name="file_project_deleted")]
        constraints = [
            models.CheckConstraint(
                condition=Q(deleted_at__isnull=True, purge_after__isnull=True)
                | Q(deleted_at__isnull=False, purge_after__isnull=False),
                name="file_deleted_has_purge_after",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules services.py checks on every write, for the admin's forms too."""
        validate_features(self.features)
        validate_assets(self.assets)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class Page(models.Model):
    """One page of a file. `page_id` is the page's id as clients and binfiles know it: local
    to its file, so an import or a duplicate keeps it while the row gets a new `id`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="pages")
    page_id = models.UUIDField(default=uuid.uuid4)
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=250)
    #: {object_id: {...}}; named so it leaves `objects` to the manager. The API and the
    #: binfile call it "objects".
    object_map = models.JSONField(default=dict, blank=True, decoder=FastJSONDecoder)

    class Meta:
        ordering = ["file", "index"]
        constraints = [
            models.UniqueConstraint(fields=["file", "index"], name="page_unique_file_index"),
            models.UniqueConstraint(fields=["file", "page_id"], name="page_unique_file_page_id"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules services.add_page checks, for the admin's form too."""
        try:
            validate_objects(self.object_map)
        except ValidationError as error:
            raise ValidationError({"object_map": error.messages}) from None


class FileLibrary(models.Model):
    """A file uses the components, colours and typographies of a shared library file."""

    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="library_links")
    library = models.ForeignKey(File, on_delete=models.CASCADE, related_name="linked_by")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "file libraries"
        constraints = [
            models.UniqueConstraint(fields=["file", "library"], name="filelibrary_unique"),
            models.CheckConstraint(condition=~Q(file=F("library")), name="filelibrary_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.file} uses {self.library}"

    def clean(self) -> None:
        if self.file_id == self.library_id:
            raise ValidationError({"library": "A file cannot use itself as a library."})
        if not File.objects.filter(pk=self.library_id, is_library=True).exists():
            raise ValidationError({"library": "Only a file marked as a library can be linked."})


class Blob(models.Model):
    """Content-addressed bytes in the `blobs` storage; a row exists only once they are stored."""

    sha256 = models.CharField(max_length=64, primary_key=True, validators=[sha256_validator])
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    #: CRC-32 of the bytes, so a binfile's local header can carry it without a read pass.
    #: Null for blobs stored before it was recorded; an export fills it in on first use.
    crc32 = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    touched_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(size__gte=0), name="blob_size_gte_0"),
            models.CheckConstraint(
                condition=Q(crc32__isnull=True) | Q(crc32__lte=0xFFFFFFFF),
                name="blob_crc32_is_32_bits",
            ),
        ]

    def __str__(self) -> str:
        return self.sha256

    @property
    def storage_name(self) -> str:
        return blob_storage_name(self.sha256)


class BlobHolder(models.Model):
    """Someone who proved they hold a blob's bytes by sending them (PUT, tus, a multipart
    upload, an import). Content addressing lets everyone's identical bytes share one
    stored copy; this row is what lets one user, and not another, read that copy without
    a file that references it. Knowing a sha256 proves nothing."""

    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="holders")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blob", "user"], name="blob_holder_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} holds {self.blob_id}"


def blob_storage_name(sha256: str) -> str:
    """Fan blobs out over two directory levels so no directory grows huge."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class MediaObject(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="media")
    #: The content's hash, known before the bytes arrive; `blob` is set once they have
    #: arrived and verified (until then the media object is pending).
    sha256 = models.CharField(max_length=64, validators=[sha256_validator], db_index=True)
    blob = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.PROTECT, related_name="media"
    )
    name = models.CharField(max_length=250)
    mtype = models.CharField(max_length=100)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["file", "id"]
        verbose_name = "media object"
        constraints = [
            models.CheckConstraint(
                condition=Q(blob__isnull=True) | Q(blob=F("sha256")),
                name="media_blob_is_its_sha256",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def state(self) -> str:
        return "pending" if self.blob_id is None else "ready"


class UserSnapshots(models.Manager):
    """The snapshots users took: the default, so lists, the API, the admin, restores and
    copies never see the ones Ferry keeps for itself (`Snapshot.all_kinds` does)."""

    def get_queryset(self):
        return super().get_queryset().filter(kind=Snapshot.Kind.USER)


class Snapshot(models.Model):
    """A file's pages, assets and media as they were; restoring it makes a new revision.

    Most are taken by users. A `preserved` one is Ferry's own: the revision an active
    export pinned, captured by the edit that moved the file past it (filesync.preserving)
    and deleted when no active export reads it any more.
    """

    class Kind(models.TextChoices):
        USER = "user"
        PRESERVED = "preserved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.USER)
    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="snapshots")
    label = models.CharField(max_length=250, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    revision = models.PositiveIntegerField()
    name = models.CharField(max_length=250)
    data_version = models.PositiveSmallIntegerField()
    features = models.JSONField(default=list)
    assets = models.JSONField(default=empty_assets)
    #: The file's modified_at at that revision, kept by preserved snapshots so that what
    #: is read from them is the revision exactly; empty for snapshots users take.
    file_modified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    all_kinds = models.Manager()
    objects = UserSnapshots()

    class Meta:
        default_manager_name = "objects"
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["kind"], condition=Q(kind="preserved"), name="snapshot_preserved"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["user", "preserved"]), name="snapshot_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.label or f"{self.file} @ r{self.revision}"


class SnapshotPage(models.Model):
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="pages")
    page_id = models.UUIDField()
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=250)
    object_map = models.JSONField(default=dict, decoder=FastJSONDecoder)

    class Meta:
        ordering = ["snapshot", "index"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "index"], name="snapshotpage_unique_index"),
        ]

    def __str__(self) -> str:
        return self.name


class SnapshotMedia(models.Model):
    """Media captured by a snapshot; it keeps its blob alive for as long as the snapshot."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="media")
    media_id = models.UUIDField()
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="snapshot_media")
    name = models.CharField(max_length=250)
    mtype = models.CharField(max_length=100)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["snapshot", "media_id"]
        verbose_name_plural = "snapshot media"
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "media_id"], name="snapshotmedia_unique_media"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ChangeKind(models.TextChoices):
    FILE_CREATED = "file.created"
    FILE_UPDATED = "file.updated"
    FILE_DELETED = "file.deleted"
    FILE_RESTORED = "file.restored"
    FILE_PURGED = "file.purged"
    PAGE_ADDED = "page.added"
    MEDIA_ADDED = "media.added"
    LIBRARY_LINKED = "library.linked"
    LIBRARY_UNLINKED = "library.unlinked"
    MEDIA_READY = "media.ready"


class Change(models.Model):
    """The append-only change feed. `seq` is gap-free and in commit order (see FeedCursor)."""

    seq = models.BigIntegerField(primary_key=True)
    kind = models.CharField(max_length=20, choices=ChangeKind.choices)
    file_id = models.UUIDField(db_index=True)
    team_id = models.UUIDField(db_index=True)
    revision = models.PositiveIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.file_id}"


class FeedCursor(models.Model):
    """One row holding the last seq handed out. Taking the next seq locks it until the
    writing transaction commits, so a reader never sees seq n + 1 before seq n."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"feed at {self.last_seq}"


class Replica(models.Model):
    """A client or follower that keeps a copy; purge waits until it has acknowledged."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="replicas"
    )
    acked_seq = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class ContentLock(models.Model):
    """A retention lock on a blob: while its lease runs, the blob is not removed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    blob = models.ForeignKey(
        Blob, on_delete=models.CASCADE, related_name="locks", db_constraint=False
    )
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="content_locks"
    )
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expires_at"]

    def __str__(self) -> str:
        return f"lock on {self.blob_id} until {self.expires_at}"


class Upload(models.Model):
    """A resumable (tus) upload in progress. Its bytes wait in the blobs storage (a staging
    file there, or an S3 multipart upload onto the blob's own key) until the last one
    arrives and the whole hashes to `sha256`; only then do they become a Blob. Everything
    a PATCH needs to go on is in this row, so any node may take the next one
    (filesync.sync.staging)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    length = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, validators=[sha256_validator])
    metadata = models.JSONField(default=dict, blank=True)
    #: The running SHA-256 of the bytes up to `offset` (filesync.resumable_hash), so the
    #: last chunk completes the check without reading everything again.
    hash_state = models.BinaryField(null=True, blank=True)
    #: The running CRC-32 of the same bytes, which the blob records (Blob.crc32); null
    #: before the first byte, and for an upload begun before it was kept.
    crc32 = models.PositiveBigIntegerField(null=True, blank=True)
    #: The PATCH writing now (common.leases): every write it makes is fenced by it.
    holder = models.CharField(max_length=100, blank=True, default="")
    locked_until = models.DateTimeField(null=True, blank=True)
    #: Filesystem: the staging file's name in the blobs storage.
    staged_name = models.CharField(max_length=200, blank=True, default="")
    #: S3: the multipart upload onto the blob's key, its parts as [number, etag, size],
    #: and the bytes after the last part (shorter than a part, kept here until more come).
    multipart_id = models.CharField(max_length=1024, blank=True, default="")
    parts = models.JSONField(default=list, blank=True)
    tail = models.BinaryField(default=b"", blank=True)
    #: The next part number to use, and the first one no PATCH that ever claimed this
    #: upload can have used: a PATCH taking over a stalled one starts there, so the
    #: stalled one's late parts never replace a part that counts.
    next_part = models.PositiveIntegerField(default=1)
    part_ceiling = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(offset__gte=0) & Q(offset__lte=F("length")),
                name="upload_offset_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"upload {self.id} ({self.offset}/{self.length})"
