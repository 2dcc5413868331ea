"""Writes and the rules around them. Every interface (API, admin, commands, tasks) calls these."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import BinaryIO
from uuid import UUID, uuid4

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, QuerySet
from django.utils import timezone

from . import blobstore
from .content import validate_assets, validate_features, validate_objects
from .copying import (
    FileCopy,
    ReadableFiles,
    Relink,
    finish_copies,
    replace_pages,
    write_copy,
)
from .feed import record_change
from .models import (
    Blob,
    BlobHolder,
    ChangeKind,
    File,
    FileLibrary,
    MediaObject,
    Membership,
    Page,
    Project,
    Role,
    Snapshot,
    Team,
    empty_assets,
    sha256_validator,
)
from .preserving import capture, preserve_pinned
from .selectors import FileState, files_for, get_file, readable_blobs

FILE_NAME_LENGTH = File._meta.get_field("name").max_length
SNAPSHOT_LABEL_LENGTH = Snapshot._meta.get_field("label").max_length


def create_team(*, name: str, owner) -> Team:
    with transaction.atomic():
        team = Team.objects.create(name=name)
        Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def set_membership(*, team: Team, user, role: Role) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    return membership


def create_project(*, team: Team, name: str) -> Project:
    return Project.objects.create(team=team, name=name)


def create_file(
    *,
    project: Project,
    name: str,
    is_library: bool = False,
    features: list[str] | None = None,
    assets: dict | None = None,
) -> File:
    features = features or []
    assets = {**empty_assets(), **(assets or {})}
    validate_features(features)
    validate_assets(assets)
    with transaction.atomic():
        file = File.objects.create(
            project=project, name=name, is_library=is_library, features=features, assets=assets
        )
        record_change(kind=ChangeKind.FILE_CREATED, file=file)
    return file


def _bump_revision(file: File) -> None:
    """Record that the content changed: a new revision, a new modified_at. The write's
    first step is `preserve_pinned`, before it changes anything."""
    File.objects.filter(pk=file.pk).update(revision=F("revision") + 1, modified_at=timezone.now())
    file.refresh_from_db(fields=["revision", "modified_at"])


def update_file(*, file: File, name: str | None = None, assets: dict | None = None) -> File:
    with transaction.atomic():
        file = get_file(file.pk, for_update=True).file
        preserve_pinned(file)
        if name is not None:
            file.name = name
        if assets is not None:
            validate_assets(assets)
            file.assets = {**empty_assets(), **assets}
        file.save(update_fields=["name", "assets"])
        _bump_revision(file)
        record_change(kind=ChangeKind.FILE_UPDATED, file=file)
    return file


def soft_delete_file(*, file: File, now: datetime | None = None) -> File:
    """Hide a file; it goes for good only after FILE_PURGE_GRACE_SECONDS, by the purge."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.FILE_PURGE_GRACE_SECONDS)
    with transaction.atomic():
        if File.objects.filter(pk=file.pk, deleted_at__isnull=True).update(
            deleted_at=now, purge_after=now + grace
        ):
            record_change(kind=ChangeKind.FILE_DELETED, file=file)
    file.refresh_from_db(fields=["deleted_at", "purge_after"])
    return file


def restore_file(*, file: File) -> File:
    with transaction.atomic():
        if File.objects.filter(pk=file.pk, deleted_at__isnull=False).update(
            deleted_at=None, purge_after=None
        ):
            record_change(kind=ChangeKind.FILE_RESTORED, file=file)
    file.refresh_from_db(fields=["deleted_at", "purge_after"])
    return file


def add_page(*, file: File, name: str, objects: dict | None = None) -> Page:
    objects = objects or {}
    validate_objects(objects)
    with transaction.atomic():
        file = get_file(file.pk, for_update=True).file
        preserve_pinned(file)
        last = file.pages.aggregate(last=Max("index"))["last"]
        page = Page.objects.create(
            file=file, index=0 if last is None else last + 1, name=name, object_map=objects
        )
        _bump_revision(file)
        record_change(kind=ChangeKind.PAGE_ADDED, file=file, payload={"page": str(page.page_id)})
    return page


def store_blob(
    *,
    stream: BinaryIO,
    content_type: str = "application/octet-stream",
    user=None,
    verified: blobstore.Digest | None = None,
) -> Blob:
    """Put bytes in the blob store, hashed while they stream; memory stays one chunk.

    `verified` is a digest the caller computed from these very bytes (while receiving
    them, CRC-32 included), which spares hashing them again. The Blob row is written only
    after the bytes are stored, so a row always means the bytes are there. Bytes already
    stored are not written again. `user` is who sent them: they become one of the blob's
    holders, and media waiting for these bytes in files they can see become ready. A
    store by Ferry itself (a follower copying its leader) passes no user and readies
    nothing.
    """
    stream = blobstore.seekable_copy(stream)
    stream.seek(0)
    digest = verified or blobstore.digest_stream(stream)

    def write() -> None:
        stream.seek(0)
        blobstore.write_blob(digest.sha256, stream)

    return register_blob(digest, write=write, content_type=content_type, user=user)


def register_blob(
    digest: blobstore.Digest,
    *,
    write: Callable[[], None],
    content_type: str = "application/octet-stream",
    user=None,
) -> Blob:
    """`store_blob` for bytes already verified against `digest` that the caller puts in
    place itself (`write`, called only if the blob is not stored yet): a tus upload
    completes its staged bytes onto the blob's key without copying them.

    The blob records the digest's CRC-32; one stored before CRCs were recorded gets it now.
    """
    if not Blob.objects.filter(pk=digest.sha256).update(touched_at=timezone.now()):
        write()
    with transaction.atomic():
        blob, _ = Blob.objects.get_or_create(
            sha256=digest.sha256,
            defaults={"size": digest.size, "content_type": content_type, "crc32": digest.crc32},
        )
        if blob.crc32 is None and digest.crc32 is not None:
            Blob.objects.filter(pk=blob.pk, crc32__isnull=True).update(crc32=digest.crc32)
            blob.crc32 = digest.crc32
        if user is not None:
            BlobHolder.objects.get_or_create(blob=blob, user=user)
            _attach_pending_media(blob, files_for(user, include_deleted=True))
    return blob


def _attach_pending_media(blob: Blob, files: QuerySet[File]) -> None:
    """Media of these files that were waiting for these bytes become ready."""
    pending = MediaObject.objects.filter(sha256=blob.sha256, blob__isnull=True, file__in=files)
    for media in pending.select_related("file__project"):
        MediaObject.objects.filter(pk=media.pk).update(blob=blob)
        record_change(
            kind=ChangeKind.MEDIA_READY, file=media.file, payload={"media": str(media.pk)}
        )


def add_media(
    *,
    file: File,
    name: str,
    stream: BinaryIO,
    content_type: str,
    user=None,
    width: int | None = None,
    height: int | None = None,
    media_id: UUID | None = None,
) -> MediaObject:
    """Store the bytes `user` sent and attach them to the file. `media_id` keeps a known id.

    A file in the trash or gone is refused (File.DoesNotExist) before the bytes are
    stored, so a refusal leaves no blob behind; a file deleted between that check and
    the attaching write leaves an unused blob, which the purge removes after its grace.
    """
    get_file(file.pk)
    blob = store_blob(stream=stream, content_type=content_type, user=user)
    return _create_media(
        file=file,
        blob=blob,
        sha256=blob.sha256,
        name=name,
        content_type=content_type,
        width=width,
        height=height,
        media_id=media_id,
    )


def add_pending_media(
    *,
    file: File,
    name: str,
    sha256: str,
    content_type: str,
    user,
    width: int | None = None,
    height: int | None = None,
    media_id: UUID | None = None,
) -> MediaObject:
    """A media object whose bytes come later (a client or a replica uploads them).

    It is ready at once only when `user` may already read those bytes
    (selectors.readable_blobs); otherwise it stays pending, whether or not someone else
    stored them, until bytes that hash to it are received from a user who can see the
    file (store_blob). Naming a sha256 never reveals, or grants, bytes held elsewhere.
    """
    sha256_validator(sha256)
    return _create_media(
        file=file,
        blob=readable_blobs(user).filter(pk=sha256).first(),
        sha256=sha256,
        name=name,
        content_type=content_type,
        width=width,
        height=height,
        media_id=media_id,
    )


def _create_media(
    *,
    file: File,
    blob: Blob | None,
    sha256: str,
    name: str,
    content_type: str,
    width: int | None,
    height: int | None,
    media_id: UUID | None,
) -> MediaObject:
    with transaction.atomic():
        file = get_file(file.pk, for_update=True).file
        preserve_pinned(file)
        media = MediaObject.objects.create(
            id=media_id or uuid4(),
            file=file,
            blob=blob,
            sha256=sha256,
            name=name,
            mtype=content_type,
            width=width,
            height=height,
        )
        _bump_revision(file)
        record_change(kind=ChangeKind.MEDIA_ADDED, file=file, payload={"media": str(media.id)})
    return media


def link_library(*, file: File, library: File) -> FileLibrary:
    """Link a library. Links are not content: the file's revision stays as it is."""
    link = FileLibrary(file=file, library=library)
    link.full_clean(validate_unique=False, validate_constraints=False)
    with transaction.atomic():
        link, created = FileLibrary.objects.get_or_create(file=file, library=library)
        if created:
            record_change(
                kind=ChangeKind.LIBRARY_LINKED, file=file, payload={"library": str(library.pk)}
            )
    return link


def unlink_library(*, file: File, library: File) -> None:
    with transaction.atomic():
        if FileLibrary.objects.filter(file=file, library=library).delete()[0]:
            record_change(
                kind=ChangeKind.LIBRARY_UNLINKED, file=file, payload={"library": str(library.pk)}
            )


def create_snapshot(*, file: File, label: str = "", user=None) -> Snapshot:
    """Capture the file's pages, assets and media, page by page."""
    with transaction.atomic():
        state = get_file(file.pk, include_deleted=True, for_update=True)
        if state.file.media.filter(blob__isnull=True).exists():
            raise ValidationError(
                {"media": "Some media are still uploading; snapshot it once they are ready."}
            )
        snapshot = capture(state, label=label, created_by=user)
    return snapshot


def _refuse_preserved(snapshot: Snapshot) -> None:
    """Ferry's own snapshots are no one's to restore (lists never show them; this is for a
    caller holding one anyway)."""
    if snapshot.kind != Snapshot.Kind.USER:
        raise ValidationError({"snapshot": "No such snapshot."})


def restore_snapshot(*, snapshot: Snapshot, user=None) -> File:
    """Make the snapshot's content the file's current content, as a new revision.

    The current content is captured first, in a snapshot labelled "Before restoring …",
    so a restore loses nothing; the restored snapshot itself stays too, so a restore can
    be undone by restoring the one taken before it.
    """
    _refuse_preserved(snapshot)
    with transaction.atomic():
        file = get_file(snapshot.file_id, include_deleted=True, for_update=True).file
        preserve_pinned(file)
        create_snapshot(
            file=file,
            label=f"Before restoring {snapshot.label or snapshot.pk}"[:SNAPSHOT_LABEL_LENGTH],
            user=user,
        )
        frozen = get_file(file.pk, snapshot=snapshot, include_deleted=True)
        file.name = frozen.name
        file.features = frozen.features
        file.assets = frozen.assets
        file.data_version = frozen.data_version
        file.save(update_fields=["name", "features", "assets", "data_version"])
        replace_pages(file, frozen.pages())
        media = list(frozen.media())
        file.media.exclude(pk__in=[m.id for m in media]).delete()
        for m in media:
            MediaObject.objects.update_or_create(
                pk=m.id,
                defaults={
                    "file": file,
                    "blob_id": m.blob_id,
                    "sha256": m.blob_id,
                    "name": m.name,
                    "mtype": m.mtype,
                    "width": m.width,
                    "height": m.height,
                },
            )
        _bump_revision(file)
        record_change(
            kind=ChangeKind.FILE_UPDATED, file=file, payload={"snapshot": str(snapshot.pk)}
        )
    return file


# --- copies: duplicate a file or a project, restore a snapshot into a new file -------------


def _copy_of(state: FileState, *, name: str) -> FileCopy:
    return FileCopy(
        source_id=str(state.file.pk),
        name=name[:FILE_NAME_LENGTH],
        is_library=state.file.is_library,
        features=state.features,
        assets=state.assets,
        pages=state.pages(),
        media=state.media(),
    )


def duplicate_files(
    *, files: list[File], project: Project, user=None, name_suffix: str = " (copy)"
) -> list[File]:
    """Copy files into `project` under new ids, in one transaction; the copies, in order.

    Pages keep their (file-local) ids; files and media get new ones, media pointing at
    the same blobs. References between the files copied together, a file's references
    to itself included, and their library links, point at the copies. References to
    other files stay when `user` can read them and are dropped (detached) otherwise.
    Refused (ValidationError), with nothing written, while any media is still pending.
    """
    with transaction.atomic():
        order = list(dict.fromkeys(file.pk for file in files))
        # Locked in id order, so two copies of overlapping files cannot deadlock.
        locked = {pk: get_file(pk, include_deleted=True, for_update=True) for pk in sorted(order)}
        states = [locked[pk] for pk in order]
        ids = [state.file.pk for state in states]
        if deleted := [state.name for state in states if state.file.is_deleted]:
            raise ValidationError(
                {"file": f"{', '.join(deleted)}: in the trash; restore it before copying."}
            )
        media = MediaObject.objects.filter(file_id__in=ids)
        if media.filter(blob__isnull=True).exists():
            raise ValidationError(
                {"media": "Some media are still uploading; duplicate once they are ready."}
            )
        relink = Relink.fresh(
            ids, media.order_by("id").values_list("id", flat=True), kept=ReadableFiles(user)
        )
        copies = [
            write_copy(
                project=project,
                copy=_copy_of(state, name=f"{state.name}{name_suffix}"),
                relink=relink,
            )
            for state in states
        ]
        finish_copies(
            copies,
            FileLibrary.objects.filter(file_id__in=ids).values_list("file_id", "library_id"),
            relink,
        )
    return copies


def duplicate_file(*, file: File, project: Project | None = None, user=None) -> File:
    """A copy named "<name> (copy)", in `project` (by default the file's own)."""
    return duplicate_files(files=[file], project=project or file.project, user=user)[0]


def duplicate_project(*, project: Project, user=None, name: str | None = None) -> Project:
    """A new project in the same team, "<name> (copy)" unless named, with copies of all the
    project's live files, made together: references between them point at the copies.
    Files keep their names (they no longer clash, being in another project)."""
    with transaction.atomic():
        copy = create_project(team=project.team, name=name or f"{project.name} (copy)")
        files = list(project.files.filter(deleted_at__isnull=True).order_by("created_at", "id"))
        duplicate_files(files=files, project=copy, user=user, name_suffix="")
    return copy


def restore_snapshot_as_new_file(*, snapshot: Snapshot, user=None) -> File:
    """The snapshot's content as a new file next to its own, under the same relink rules as
    a duplicate; the file and the snapshot stay as they are."""
    _refuse_preserved(snapshot)
    with transaction.atomic():
        state = get_file(snapshot.file_id, snapshot=snapshot, include_deleted=True)
        media_ids = snapshot.media.order_by("media_id").values_list("media_id", flat=True)
        relink = Relink.fresh([state.file.pk], media_ids, kept=ReadableFiles(user))
        copy = write_copy(
            project=state.file.project,
            copy=_copy_of(
                state, name=f"{state.name} ({snapshot.label or f'r{snapshot.revision}'})"
            ),
            relink=relink,
        )
        finish_copies(
            [copy],
            FileLibrary.objects.filter(file=state.file).values_list("file_id", "library_id"),
            relink,
        )
    return copy
