import hashlib
import io
import zlib

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from filesync import services
from filesync.blobstore import Digest, open_blob
from filesync.models import Blob, File, FileLibrary, MediaObject, Page, Snapshot
from filesync.selectors import get_file
from tests.conftest import stored_names
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db


class OneWayStream(io.RawIOBase):
    """A stream that can only be read forward, like a socket."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, buffer):
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_add_page_appends_in_order_and_bumps_revision(design):
    first = services.add_page(file=design, name="One", objects={"a": {"type": "rect"}})
    second = services.add_page(file=design, name="Two")
    design.refresh_from_db()
    assert (first.index, second.index) == (0, 1)
    assert design.revision == 3
    assert [p.name for p in get_file(design.id).pages()] == ["One", "Two"]


def test_add_page_refuses_malformed_objects_and_writes_nothing(design):
    before = store_state()
    with pytest.raises(ValidationError) as refused:
        services.add_page(
            file=design,
            name="Bad",
            objects={"a": {"type": "teapot"}, "b": {"type": "image", "image": "not-a-uuid"}},
        )
    messages = refused.value.message_dict["objects"]
    assert any("object a: type must be one of" in m for m in messages)
    assert any("object b: image must be a media UUID" in m for m in messages)
    assert store_state() == before


@pytest.mark.parametrize(
    "kwargs, field",
    [({"features": ["warp-drive"]}, "features"), ({"assets": {"fonts": {}}}, "assets")],
)
def test_create_file_refuses_unknown_features_and_assets(project, kwargs, field):
    before = store_state()
    with pytest.raises(ValidationError) as refused:
        services.create_file(project=project, name="x", **kwargs)
    assert field in refused.value.message_dict
    assert store_state() == before


def test_media_for_a_file_in_the_trash_is_refused_before_its_bytes_are_stored(design, png_bytes):
    services.soft_delete_file(file=design)
    before = store_state()
    with pytest.raises(File.DoesNotExist):
        services.add_media(
            file=design, name="late.png", stream=io.BytesIO(png_bytes), content_type="image/png"
        )
    assert store_state() == before


def test_store_blob_hashes_while_streaming_and_deduplicates():
    data = b"ferry" * 300_000
    blob = services.store_blob(stream=OneWayStream(data), content_type="text/plain")
    again = services.store_blob(stream=io.BytesIO(data), content_type="text/plain")
    assert blob.sha256 == hashlib.sha256(data).hexdigest() == again.sha256
    assert blob.size == len(data)
    assert Blob.objects.get().crc32 == zlib.crc32(data)
    assert stored_names("blobs") == [f"{blob.sha256[:2]}/{blob.sha256[2:4]}/{blob.sha256}"]
    with open_blob(blob.sha256) as stored:
        assert stored.read() == data


def test_a_blob_stored_before_crcs_were_recorded_gets_its_crc_when_stored_again():
    data = b"older" * 1000
    blob = services.store_blob(stream=io.BytesIO(data))
    Blob.objects.filter(pk=blob.pk).update(crc32=None)
    again = services.store_blob(stream=OneWayStream(data))
    assert again.crc32 == zlib.crc32(data) == Blob.objects.get().crc32


def test_a_digest_given_as_verified_must_carry_its_crc():
    """A caller that hashed the bytes itself hands over their CRC with the sha256; the
    store does not compute it again (the CRC given is the one recorded)."""
    data = b"verified"
    with pytest.raises(TypeError):
        Digest(hashlib.sha256(data).hexdigest(), len(data))
    digest = Digest(hashlib.sha256(data).hexdigest(), len(data), zlib.crc32(data))
    assert services.store_blob(stream=io.BytesIO(data), verified=digest).crc32 == digest.crc32


def test_add_media_keeps_the_bytes_and_revision(design, png_bytes):
    media = services.add_media(
        file=design,
        name="a.png",
        stream=io.BytesIO(png_bytes),
        content_type="image/png",
        width=10,
        height=20,
    )
    assert media.blob.sha256 == hashlib.sha256(png_bytes).hexdigest()
    assert Blob.objects.get(pk=media.blob.sha256).crc32 == zlib.crc32(png_bytes)
    design.refresh_from_db()
    assert design.revision == 2
    assert [m.id for m in get_file(design.id).media()] == [media.id]


def test_library_links_must_point_at_a_library_and_not_at_itself(design, library, project):
    other = services.create_file(project=project, name="Not a library")
    before = store_state()
    with pytest.raises(ValidationError, match="Only a file marked as a library"):
        services.link_library(file=design, library=other)
    with pytest.raises(ValidationError, match="cannot use itself"):
        services.link_library(file=library, library=library)
    assert store_state() == before
    services.link_library(file=design, library=library)
    services.link_library(file=design, library=library)
    assert get_file(design.id).library_ids() == [library.id]


def test_database_refuses_a_self_link_even_past_the_service(library):
    with pytest.raises(IntegrityError):
        FileLibrary.objects.create(file=library, library=library)


def test_database_refuses_purge_after_without_deletion(design):
    File.objects.filter(pk=design.pk).update(deleted_at=None)
    with pytest.raises(IntegrityError):
        File.objects.filter(pk=design.pk).update(purge_after="2030-01-01T00:00:00Z")


def test_media_blob_cannot_be_deleted_while_referenced(media):
    from django.db.models import ProtectedError

    before = store_state()
    with pytest.raises(ProtectedError):
        media.blob.delete()
    assert store_state() == before


def test_soft_delete_hides_the_file_until_restored(design, settings):
    settings.FILE_PURGE_GRACE_SECONDS = 3600
    services.soft_delete_file(file=design)
    assert design.deleted_at is not None
    assert (design.purge_after - design.deleted_at).total_seconds() == 3600
    with pytest.raises(File.DoesNotExist):
        get_file(design.id)
    assert get_file(design.id, include_deleted=True).file == design
    services.restore_file(file=design)
    assert get_file(design.id).file.purge_after is None


def test_snapshot_restore_brings_back_content_as_a_new_revision(design, media, png_bytes):
    page = services.add_page(file=design, name="Home", objects={"o1": {"type": "rect"}})
    services.update_file(file=design, assets={"colors": {"c": {"color": "#000"}}})
    snapshot = services.create_snapshot(file=design, label="before redesign")
    captured_revision = snapshot.revision

    services.add_page(file=design, name="Later")
    services.update_file(file=design, name="Renamed", assets={})
    MediaObject.objects.filter(pk=media.pk).delete()
    Page.objects.filter(pk=page.pk).update(object_map={})

    restored = services.restore_snapshot(snapshot=snapshot)
    state = get_file(design.id)
    assert restored.revision > captured_revision
    assert state.name == "Landing page"
    assert state.assets["colors"] == {"c": {"color": "#000"}}
    assert [(p.id, p.name, p.objects) for p in state.pages()] == [
        (page.page_id, "Home", {"o1": {"type": "rect"}})
    ]
    assert [(m.id, m.blob_id) for m in state.media()] == [(media.id, media.blob_id)]
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()
    frozen = get_file(design.id, snapshot=snapshot.id)
    assert frozen.revision == captured_revision


def test_get_file_refuses_a_snapshot_of_another_file(design, library):
    snapshot = services.create_snapshot(file=library)
    with pytest.raises(Snapshot.DoesNotExist):
        get_file(design.id, snapshot=snapshot.id)
    with pytest.raises(Snapshot.DoesNotExist):
        get_file(design.id, snapshot=snapshot)


def test_pages_stream_in_batches_in_index_order(design):
    for n in range(7):
        services.add_page(file=design, name=f"P{n}")
    assert [p.index for p in get_file(design.id).pages(batch=3)] == list(range(7))
