import base64
import hashlib
import os
import subprocess
import sys
import threading
import uuid
import zlib
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from filesync import blobstore
from filesync.models import Blob, Upload, blob_storage_name
from filesync.sync import staging, uploads
from tests.conftest import ROOT, stored_names
from tests.snapshot import store_state, unfinished_uploads
from tests.waiting import patience, stop_process, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
MiB = 2**20


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create(client, data: bytes, *, sha: str | None = None, body: bytes | None = None, **headers):
    meta = f"sha256 {b64(sha or hashlib.sha256(data).hexdigest())},filename {b64('a.bin')}"
    extra = {"HTTP_UPLOAD_LENGTH": str(len(data)), "HTTP_UPLOAD_METADATA": meta, **TUS, **headers}
    if body is None:
        return client.post("/api/sync/uploads/", **extra)
    return client.generic(
        "POST", "/api/sync/uploads/", body, content_type="application/offset+octet-stream", **extra
    )


def patch(client, location: str, offset: int, chunk: bytes, **headers):
    return client.generic(
        "PATCH",
        location,
        chunk,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
        **TUS,
        **headers,
    )


def test_options_advertise_the_protocol(api_for, editor):
    response = api_for(editor).options("/api/sync/uploads/")
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    }
    assert response["Tus-Checksum-Algorithm"] == "sha1,sha256"


def test_upload_in_chunks_with_checksums_becomes_a_blob(api_for, editor):
    client = api_for(editor)
    data = os.urandom(250_000)
    created = create(client, data)
    assert created.status_code == 201, created.content
    location = created["Location"]
    assert created["Upload-Offset"] == "0" and created["Upload-Expires"]
    offset = 0
    for start in range(0, len(data), 100_000):
        chunk = data[start : start + 100_000]
        digest = base64.b64encode(hashlib.sha1(chunk).digest()).decode()
        answer = patch(client, location, offset, chunk, HTTP_UPLOAD_CHECKSUM=f"sha1 {digest}")
        assert answer.status_code == 204, answer.content
        offset = int(answer["Upload-Offset"])
        assert not Blob.objects.exists() or offset == len(data)
    assert client.head(location, **TUS)["Upload-Offset"] == str(len(data))
    blob = Blob.objects.get()
    assert (blob.sha256, blob.crc32) == (hashlib.sha256(data).hexdigest(), zlib.crc32(data))


def test_creation_with_upload_and_dedup_answer_at_once(api_for, editor):
    client = api_for(editor)
    data = os.urandom(5000)
    created = create(client, data, body=data)
    assert created.status_code == 201 and created["Upload-Offset"] == str(len(data))
    again = create(client, data)
    assert again.status_code == 201 and again["Upload-Offset"] == str(len(data))
    assert Blob.objects.count() == 1


def test_wrong_offset_is_409_and_bad_chunk_checksum_460_discarded(api_for, editor):
    client = api_for(editor)
    data = os.urandom(1000)
    location = create(client, data)["Location"]
    before = store_state()
    assert patch(client, location, 10, data[:100]).status_code == 409
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    refused = patch(client, location, 0, data[:100], HTTP_UPLOAD_CHECKSUM=f"sha256 {wrong}")
    assert refused.status_code == 460
    assert store_state() == before
    assert client.head(location, **TUS)["Upload-Offset"] == "0"
    assert patch(client, location, 0, data[:100]).status_code == 204
    assert patch(client, location, 100, data[100:]).status_code == 204
    assert Blob.objects.get().crc32 == zlib.crc32(data)  # the refused chunk is not in it


def test_an_upload_begun_before_uploads_kept_a_crc_leaves_its_blob_without_one(api_for, editor):
    """Its running CRC is unknown: the blob gets none (an export fills it in), rather
    than the CRC of its last bytes only."""
    client = api_for(editor)
    data = os.urandom(1000)
    location = create(client, data)["Location"]
    assert patch(client, location, 0, data[:400]).status_code == 204
    Upload.objects.update(crc32=None)
    assert patch(client, location, 400, data[400:]).status_code == 204
    blob = Blob.objects.get()
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.crc32 is None


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"content_type": "application/octet-stream"}, 415),
        ({"HTTP_UPLOAD_OFFSET": ""}, 400),
        ({"HTTP_UPLOAD_OFFSET": "-1"}, 400),
        ({"HTTP_UPLOAD_OFFSET": "²"}, 400),  # str.isdigit() says yes, int() no
        ({"HTTP_TUS_RESUMABLE": "0.2.2"}, 412),
        ({"HTTP_UPLOAD_CHECKSUM": "md5 AAAA"}, 400),
        ({"HTTP_UPLOAD_CHECKSUM": "sha1 !!!"}, 400),
    ],
)
def test_bad_patches_are_refused_and_write_nothing(api_for, editor, headers, status):
    client = api_for(editor)
    data = os.urandom(100)
    location = create(client, data)["Location"]
    request = {
        "content_type": "application/offset+octet-stream",
        "HTTP_UPLOAD_OFFSET": "0",
        **TUS,
        **headers,
    }
    before = store_state()
    assert client.generic("PATCH", location, data, **request).status_code == status
    assert store_state() == before


def test_a_complete_upload_that_hashes_wrong_is_422_and_leaves_nothing(api_for, editor):
    client = api_for(editor)
    data = os.urandom(1000)
    before = store_state()
    location = create(client, data, sha=hashlib.sha256(b"promised").hexdigest())["Location"]
    assert patch(client, location, 0, data).status_code == 422
    assert store_state() == before


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"HTTP_TUS_RESUMABLE": "0.2.2"}, 412),
        ({"HTTP_UPLOAD_LENGTH": "abc"}, 400),
        ({"HTTP_UPLOAD_LENGTH": ""}, 400),
        ({"HTTP_UPLOAD_LENGTH": "²"}, 400),  # str.isdigit() says yes, int() no
        ({"HTTP_UPLOAD_METADATA": "filename " + base64.b64encode(b"x").decode()}, 400),
        ({"HTTP_UPLOAD_METADATA": "sha256 !!!notbase64"}, 400),
        ({"HTTP_UPLOAD_METADATA": f"sha256 {b64('A' * 64)}"}, 400),
    ],
)
def test_bad_creations_are_refused(api_for, editor, headers, status):
    client = api_for(editor)
    before = store_state()
    response = create(client, b"abc", **headers)
    assert response.status_code == status
    assert store_state() == before


def test_oversize_uploads_and_bodies_are_413(api_for, editor, settings):
    client = api_for(editor)
    settings.SYNC_MAX_BLOB_BYTES = 100
    before = store_state()
    assert create(client, b"x" * 101).status_code == 413
    assert store_state() == before
    settings.SYNC_MAX_BLOB_BYTES = 10_000
    location = create(client, b"y" * 50)["Location"]
    before = store_state()
    assert patch(client, location, 0, b"y" * 60).status_code == 413
    assert store_state() == before
    assert client.head(location, **TUS)["Upload-Offset"] == "0"


def test_uploads_are_their_owners_and_can_be_terminated_or_expire(api_for, editor, viewer):
    data = os.urandom(100)
    owner, other = api_for(editor), api_for(viewer)
    empty = store_state()
    location = create(owner, data)["Location"]
    before = store_state()
    assert other.head(location, **TUS).status_code == 404
    assert patch(other, location, 0, data).status_code == 404
    assert other.delete(location, **TUS).status_code == 404
    assert store_state() == before
    assert owner.delete(location, **TUS).status_code == 204
    assert store_state() == empty

    location = create(owner, data)["Location"]
    Upload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    before = store_state()
    assert patch(owner, location, 0, data).status_code == 410
    assert owner.head(location, **TUS).status_code == 410
    assert store_state() == before
    assert uploads.reap_expired() == 1
    assert store_state() == empty


def in_thread(work) -> threading.Thread:
    """Run `work` (a request) on a thread of its own, which closes its database connection
    when done, as a server's request thread would."""

    def run():
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


class PausedWrite:
    """Holds a PATCH inside its write, after it claimed the upload: the running hash's first
    update (made while the claim is held) signals `writing` and waits for `resume`."""

    def __init__(self, monkeypatch):
        self.writing, self.resume = threading.Event(), threading.Event()
        real = uploads.ResumableSha256
        pause = self

        class Pausing(real):
            def update(self, data: bytes) -> None:
                pause.writing.set()
                assert pause.resume.wait(patience(60)), "the test never resumed the write"
                super().update(data)

        monkeypatch.setattr(uploads, "ResumableSha256", Pausing)


def test_a_patch_while_another_is_writing_the_upload_is_423(api_for, editor, monkeypatch):
    """tus 1.0 (concurrency): one PATCH at a time per upload; the other gets 423 Locked and
    changes nothing, and the first one ends as if alone."""
    client = api_for(editor)
    data = os.urandom(3000)
    location = create(client, data)["Location"]
    paused = PausedWrite(monkeypatch)
    answers, writer = {}, api_for(editor)
    first = in_thread(lambda: answers.update(first=patch(writer, location, 0, data[:1000])))
    try:
        wait_for(paused.writing.is_set, timeout=60, what="the first PATCH to start writing")
        before = store_state()
        for offset in (0, 1000):
            locked = patch(client, location, offset, data[offset : offset + 1000])
            assert locked.status_code == 423, locked.content
        assert store_state() == before
    finally:
        paused.resume.set()
        first.join(patience(60))
    assert not first.is_alive()
    assert answers["first"].status_code == 204
    assert answers["first"]["Upload-Offset"] == "1000"
    monkeypatch.undo()
    assert patch(client, location, 1000, data[1000:]).status_code == 204
    assert Blob.objects.get().sha256 == hashlib.sha256(data).hexdigest()


class Nodes:
    """Stands the test in for one node after another: each has a var dir of its own
    (settings.VAR_DIR, FILE_UPLOAD_TEMP_DIR) and shares only the database and storages."""

    def __init__(self, settings, root):
        self.settings, self.root, self.dirs = settings, root, []

    def next(self) -> None:
        var = self.root / f"node-{len(self.dirs)}"
        os.makedirs(var / "tmp")
        self.settings.VAR_DIR, self.settings.FILE_UPLOAD_TEMP_DIR = var, str(var / "tmp")
        self.dirs.append(var)

    def local_files(self) -> list:
        return [path for var in self.dirs for path in var.rglob("*") if path.is_file()]


def blob_bytes(sha256: str) -> bytes:
    return b"".join(blobstore.iter_blob(sha256))


def test_small_patches_on_alternating_nodes_make_the_blob(api_for, editor, settings, tmp_path):
    """PATCHes of 1 MiB and odd sizes, each on another node, together past an S3 part: the
    row carries all a node needs (HEAD answers the offset everywhere), parts go out once a
    part's worth is in, and the last PATCH completes the staged bytes as the blob."""
    client, nodes = api_for(editor), Nodes(settings, tmp_path)
    sizes = [MiB, MiB, 777_777, 3 * MiB + 5, MiB, 2 * MiB + 11, MiB + 1234, 123]
    data = os.urandom(sum(sizes))
    digest = hashlib.sha256(data).hexdigest()
    nodes.next()
    location = create(client, data, sha=digest)["Location"]
    offset = 0
    for size in sizes:
        nodes.next()
        assert client.head(location, **TUS)["Upload-Offset"] == str(offset)
        answer = patch(client, location, offset, data[offset : offset + size])
        assert answer.status_code == 204, answer.content
        offset += size
        assert answer["Upload-Offset"] == str(offset)
        if offset < len(data):
            upload = Upload.objects.get()
            assert upload.crc32 == zlib.crc32(data[:offset])  # the running CRC, in the row
            assert not Blob.objects.exists()
            if staging.uses_s3():  # whole parts sent, the rest in the row
                whole = offset // staging.part_size(len(data)) * staging.part_size(len(data))
                assert sum(size for _, _, size in upload.parts) == whole
                assert len(upload.tail) == offset - whole
                assert unfinished_uploads("blobs") == [staging._key(digest)]
            else:
                assert stored_names("blobs") == [upload.staged_name]
    assert Upload.objects.get().completed_at
    assert blob_bytes(digest) == data
    assert Blob.objects.get().crc32 == zlib.crc32(data)
    assert stored_names("blobs") == [blob_storage_name(digest)]
    assert unfinished_uploads("blobs") == []
    assert nodes.local_files() == []


def test_a_multipart_upload_that_hashes_wrong_is_422_and_leaves_nothing(api_for, editor):
    """Parts sent, then the last byte shows the whole is not what was promised: the
    multipart upload is aborted, the row gone, no blob."""
    client = api_for(editor)
    data = os.urandom(9 * MiB + 3)
    before = store_state()
    location = create(client, data, sha=hashlib.sha256(b"promised").hexdigest())["Location"]
    for start in range(0, len(data), 3 * MiB):
        answer = patch(client, location, start, data[start : start + 3 * MiB])
        assert answer.status_code == (422 if start + 3 * MiB >= len(data) else 204)
    assert store_state() == before
    assert unfinished_uploads("blobs") == [] and not Blob.objects.exists()


@pytest.mark.parametrize("end", ["terminated", "expired"])
def test_terminated_or_expired_uploads_with_parts_leave_nothing(api_for, editor, end):
    client = api_for(editor)
    data = os.urandom(10 * MiB)
    empty = store_state()
    location = create(client, data)["Location"]
    assert patch(client, location, 0, data[: 9 * MiB]).status_code == 204
    assert store_state() != empty  # staged: a part and a tail, or a file
    if end == "terminated":
        assert client.delete(location, **TUS).status_code == 204
    else:
        Upload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert uploads.reap_expired() == 1
    assert store_state() == empty


def test_the_purge_sweeps_staged_bytes_no_upload_names(api_for, editor, monkeypatch):
    """Staged bytes a crash left before (or without) their row are swept once abandoned;
    those an upload names are not."""
    client = api_for(editor)
    data = os.urandom(1000)
    location = create(client, data)["Location"]
    kept = store_state()
    staging.begin(uuid.uuid4(), hashlib.sha256(b"lost").hexdigest())  # then the node died
    if not staging.uses_s3():  # moto dates every multipart upload 2010-11-10: never fresh
        assert uploads.reap_expired() == 0
        assert store_state() != kept  # fresh: it may be a creation in flight
    monkeypatch.setattr(staging, "ABANDONED_AFTER", timedelta(seconds=-5))
    assert uploads.reap_expired() == 0
    assert store_state() == kept
    assert patch(client, location, 0, data).status_code == 204
    assert blob_bytes(hashlib.sha256(data).hexdigest()) == data


class PausedStorageWrite:
    """Holds the first PATCH that writes to storage at the last moment before it does:
    on S3 inside its first part upload (its lease just renewed), on the filesystem at
    its first write to the staging file."""

    def __init__(self, monkeypatch):
        self.writing, self.resume = threading.Event(), threading.Event()
        if staging.uses_s3():
            client = staging._client()
            monkeypatch.setattr(staging, "_client", lambda: Pausing(client, self))
        else:
            real = staging.FileStaging.write
            monkeypatch.setattr(
                staging.FileStaging, "write", lambda staged, chunk: self.hold(real, staged, chunk)
            )

    def hold(self, write, *args, **kwargs):
        if not self.writing.is_set():
            self.writing.set()
            assert self.resume.wait(patience(60)), "the test never resumed the write"
        return write(*args, **kwargs)


class Pausing:
    def __init__(self, client, pause: PausedStorageWrite):
        self.client, self.pause = client, pause

    def upload_part(self, **kwargs):
        return self.pause.hold(self.client.upload_part, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_patch_whose_claim_was_taken_over_writes_nothing(api_for, editor, monkeypatch, settings):
    """A PATCH stalls past its lease just before writing to storage; another takes the
    upload over and stores the same range. The stalled one wakes and writes other bytes:
    they land nowhere that counts, it answers 409, and the upload ends as the second
    wrote it."""
    client = api_for(editor)
    first = staging.part_size(9 * MiB)  # on S3 the stalled PATCH sends one whole part
    data = os.urandom(first + MiB + 3)
    location = create(client, data)["Location"]
    paused = PausedStorageWrite(monkeypatch)
    answers, stalled = {}, api_for(editor)
    garbage = bytes(first)
    writer = in_thread(lambda: answers.update(stalled=patch(stalled, location, 0, garbage)))
    try:
        wait_for(paused.writing.is_set, timeout=60, what="the first PATCH to start writing")
        Upload.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
        took_over = patch(client, location, 0, data[:first])
        assert took_over.status_code == 204, took_over.content
        assert took_over["Upload-Offset"] == str(first)
        before = store_state()
    finally:
        paused.resume.set()
        writer.join(patience(60))
    assert not writer.is_alive()
    assert answers["stalled"].status_code == 409, answers["stalled"].content
    assert store_state() == before
    if staging.uses_s3():  # its part did go out, under a number the upload never uses
        upload = Upload.objects.get()
        sent = staging._client().list_parts(
            Bucket=settings.AWS_STORAGE_BUCKET_NAME,
            Key=staging._key(upload.sha256),
            UploadId=upload.multipart_id,
        )["Parts"]
        assert [(part["PartNumber"], part["Size"]) for part in sent] == [
            (1, first),
            (upload.parts[0][0], first),
        ]
        assert upload.parts[0][0] > 1
    monkeypatch.undo()
    assert patch(client, location, first, data[first:]).status_code == 204
    digest = hashlib.sha256(data).hexdigest()
    assert Blob.objects.get().sha256 == digest and blob_bytes(digest) == data
    assert Blob.objects.get().crc32 == zlib.crc32(data)  # the stalled PATCH's bytes: not in it
    assert stored_names("blobs") == [blob_storage_name(digest)]
    assert unfinished_uploads("blobs") == []


@pytest.mark.live
def test_a_tus_client_killed_half_way_resumes_to_the_right_blob(asgi_server, editor, tmp_path):
    """tuspy in its own process, killed with SIGKILL mid-upload, then resumed."""
    from rest_framework.authtoken.models import Token
    from tusclient import client as tus

    token = Token.objects.get_or_create(user=editor)[0].key
    payload = tmp_path / "payload.bin"
    size = int(os.environ.get("FERRY_TUS_TEST_MB", "24")) * 2**20
    with payload.open("wb") as out:
        for _ in range(size // 2**20):
            out.write(os.urandom(2**20))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    script = (
        "from tusclient import client\n"
        f"headers = {{'Authorization': 'Token {token}'}}\n"
        f"c = client.TusClient('{asgi_server}/api/sync/uploads/', headers=headers)\n"
        f"u = c.uploader(file_path='{payload}', chunk_size=2**20,\n"
        f"               metadata={{'sha256': '{digest}'}})\n"
        "u.set_url(u.create_url()); print(u.url, flush=True)\n"
        "u.upload()\n"
    )
    printed = tmp_path / "child.out"
    with printed.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        url = wait_for(
            lambda: printed.read_text().endswith("\n") and printed.read_text().split()[0],
            timeout=60,
            what="the tus client to create its upload",
            explain=printed.read_text,
        )
        upload_id = url.rsplit("/", 1)[-1]
        wait_for(
            lambda: Upload.objects.get(pk=upload_id).offset >= size // 3,
            timeout=120,
            what="a third of the upload",
            explain=printed.read_text,
        )
        child.kill()
    finally:
        stop_process(child)
    offset_at_kill = Upload.objects.get(pk=upload_id).offset
    assert 0 < offset_at_kill < size, "kill the client half-way, not before or after"
    assert not Blob.objects.exists()

    resumed = tus.TusClient(
        f"{asgi_server}/api/sync/uploads/", headers={"Authorization": f"Token {token}"}
    )
    # A PATCH the kill left in flight may still finish on the server after the HEAD the
    # client resumes from: the client then gets 409 (or 423 while it runs) and, as tuspy
    # does when asked to retry, asks HEAD again and goes on from there.
    uploader = resumed.uploader(
        file_path=str(payload), url=url, chunk_size=2**20, retries=5, retry_delay=1
    )
    assert offset_at_kill <= uploader.offset < size  # the server may finish a PATCH it had whole
    uploader.upload()
    assert Blob.objects.get().sha256 == digest

    pieces, step = [], 5 * 2**20 + 17
    for first in range(0, size, step):
        fetched = subprocess.run(
            [
                "curl",
                "-sf",
                "--max-time",
                str(patience(60)),
                "--range",
                f"{first}-{min(first + step, size) - 1}",
                "-H",
                f"Authorization: Token {token}",
                "-L",
                f"{asgi_server}/api/sync/blobs/{digest}",
            ],
            capture_output=True,
            check=True,
            timeout=patience(90),
        )
        pieces.append(fetched.stdout)
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == digest


def test_an_empty_upload_completes_at_creation(api_for, editor):
    created = create(api_for(editor), b"")
    assert created.status_code == 201 and created["Upload-Offset"] == "0"
    blob = Blob.objects.get()
    assert (blob.sha256, blob.crc32) == (hashlib.sha256(b"").hexdigest(), 0)
