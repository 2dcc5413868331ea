import base64
import hashlib
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from filesync.models import Blob, Upload
from tests.conftest import ROOT, stored_names

pytestmark = pytest.mark.django_db(transaction=True)
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


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


def staged_files() -> list[str]:
    directory = settings.SYNC_UPLOAD_DIR
    return sorted(os.listdir(directory)) if directory.exists() else []


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
    assert Blob.objects.get().sha256 == hashlib.sha256(data).hexdigest()


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
    assert patch(client, location, 10, data[:100]).status_code == 409
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    refused = patch(client, location, 0, data[:100], HTTP_UPLOAD_CHECKSUM=f"sha256 {wrong}")
    assert refused.status_code == 460
    assert client.head(location, **TUS)["Upload-Offset"] == "0"
    assert patch(client, location, 0, data[:100]).status_code == 204


def test_a_complete_upload_that_hashes_wrong_is_422_and_leaves_nothing(api_for, editor):
    client = api_for(editor)
    data = os.urandom(1000)
    location = create(client, data, sha=hashlib.sha256(b"promised").hexdigest())["Location"]
    assert patch(client, location, 0, data).status_code == 422
    assert not Blob.objects.exists() and not Upload.objects.exists()
    assert stored_names("blobs") == [] and staged_files() == []


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"HTTP_TUS_RESUMABLE": "0.2.2"}, 412),
        ({"HTTP_UPLOAD_LENGTH": "abc"}, 400),
        ({"HTTP_UPLOAD_METADATA": "filename " + base64.b64encode(b"x").decode()}, 400),
        ({"HTTP_UPLOAD_METADATA": "sha256 !!!notbase64"}, 400),
    ],
)
def test_bad_creations_are_refused(api_for, editor, headers, status):
    response = create(api_for(editor), b"abc", **headers)
    assert response.status_code == status
    assert not Upload.objects.exists()


def test_oversize_uploads_and_bodies_are_413(api_for, editor, settings):
    client = api_for(editor)
    settings.SYNC_MAX_BLOB_BYTES = 100
    assert create(client, b"x" * 101).status_code == 413
    settings.SYNC_MAX_BLOB_BYTES = 10_000
    location = create(client, b"y" * 50)["Location"]
    assert patch(client, location, 0, b"y" * 60).status_code == 413
    assert client.head(location, **TUS)["Upload-Offset"] == "0"
    assert not Blob.objects.exists()


def test_uploads_are_their_owners_and_can_be_terminated_or_expire(api_for, editor, viewer):
    data = os.urandom(100)
    location = create(api_for(editor), data)["Location"]
    assert api_for(viewer).head(location, **TUS).status_code == 404
    assert patch(api_for(viewer), location, 0, data).status_code == 404
    assert api_for(editor).delete(location, **TUS).status_code == 204
    assert not Upload.objects.exists() and staged_files() == []

    location = create(api_for(editor), data)["Location"]
    Upload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert patch(api_for(editor), location, 0, data).status_code == 410
    from filesync.sync.uploads import reap_expired

    assert reap_expired() == 1 and staged_files() == []


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
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    url = child.stdout.readline().strip()
    upload_id = url.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 30
    while Upload.objects.get(pk=upload_id).offset < size // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    child.kill()
    child.wait()
    offset_at_kill = Upload.objects.get(pk=upload_id).offset
    assert 0 < offset_at_kill < size, "kill the client half-way, not before or after"
    assert not Blob.objects.exists()

    resumed = tus.TusClient(
        f"{asgi_server}/api/sync/uploads/", headers={"Authorization": f"Token {token}"}
    )
    uploader = resumed.uploader(file_path=str(payload), url=url, chunk_size=2**20)
    assert offset_at_kill <= uploader.offset < size  # the server may finish a PATCH it had whole
    uploader.upload()
    assert Blob.objects.get().sha256 == digest

    pieces, step = [], 5 * 2**20 + 17
    for first in range(0, size, step):
        fetched = subprocess.run(
            [
                "curl",
                "-sf",
                "--range",
                f"{first}-{min(first + step, size) - 1}",
                "-H",
                f"Authorization: Token {token}",
                "-L",
                f"{asgi_server}/api/sync/blobs/{digest}",
            ],
            capture_output=True,
            check=True,
        )
        pieces.append(fetched.stdout)
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == digest


def test_an_empty_upload_completes_at_creation(api_for, editor):
    created = create(api_for(editor), b"")
    assert created.status_code == 201 and created["Upload-Offset"] == "0"
    assert Blob.objects.get().sha256 == hashlib.sha256(b"").hexdigest()
