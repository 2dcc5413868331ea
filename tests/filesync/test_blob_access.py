"""Proof of possession: knowing a sha256 never reads, or reveals, bytes someone else sent.

User A (a team of their own) stores private bytes; user B (another team) knows their
sha256 and tries every door that takes a sha256. B gets what B would get for content that
exists nowhere, until B sends the bytes themselves.
"""

import base64
import hashlib
import io
import os

import orjson
import pytest

from exports.services import create_export_job
from filesync import services
from filesync.models import Role
from tests.downloads import download
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def secret(alice) -> bytes:
    """A's private bytes, in a file of A's own team."""
    team = services.create_team(name="A's", owner=alice)
    file = services.create_file(project=services.create_project(team=team, name="P"), name="F")
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(20_000)
    services.add_media(
        file=file, name="private.png", stream=io.BytesIO(data), content_type="image/png", user=alice
    )
    return data


@pytest.fixture
def bobs_file(bob):
    team = services.create_team(name="B's", owner=bob)
    project = services.create_project(team=team, name="Q")
    return services.create_file(project=project, name="G")


def announce(client, file, digest: str):
    return client.post(
        f"/api/files/{file.pk}/media/",
        {"name": "x.png", "sha256": digest, "mtype": "image/png"},
        format="json",
    )


def whole_file(client, file) -> list[dict]:
    response = client.get(f"/api/sync/files/{file.pk}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    return [orjson.loads(line) for line in body.splitlines()]


def read(client, url: str) -> bytes:
    got = download(client, url)
    assert got.status == 200
    return got.body


def tus_create(client, digest: str, length: int):
    meta = f"sha256 {base64.b64encode(digest.encode()).decode()}"
    return client.post(
        "/api/sync/uploads/", HTTP_UPLOAD_LENGTH=str(length), HTTP_UPLOAD_METADATA=meta, **TUS
    )


def put(client, data: bytes):
    return client.generic(
        "PUT", f"/api/sync/blobs/{sha(data)}", data, content_type="application/octet-stream"
    )


def test_announcing_a_sha256_stays_pending_whoever_holds_the_bytes(api_for, bob, bobs_file, secret):
    client = api_for(bob)
    unknown = os.urandom(len(secret))
    for data in (secret, unknown):
        created = announce(client, bobs_file, sha(data))
        assert created.status_code == 201 and created.json()["state"] == "pending"
        pending = client.get(f"/api/files/{bobs_file.pk}/media/{created.json()['id']}/download/")
        assert pending.status_code == 404 and pending.json()["reason"] == "pending"
        for method in ("get", "head"):
            blob = getattr(client, method)(f"/api/sync/blobs/{sha(data)}")
            assert blob.status_code == 404
        assert client.get(f"/api/sync/blobs/{sha(data)}").json()["reason"] == "pending"
    media = [r["media"] for r in whole_file(client, bobs_file) if "media" in r]
    assert [m["ready"] for m in media] == [False, False]


def test_a_blob_nobody_announced_answers_like_one_that_does_not_exist(api_for, bob, secret):
    client = api_for(bob)
    for data in (secret, os.urandom(10)):
        for method in ("get", "head", "delete"):
            response = getattr(client, method)(f"/api/sync/blobs/{sha(data)}?before=9999999999")
            assert response.status_code == 404
        assert client.post(f"/api/sync/blobs/{sha(data)}/lock").status_code == 404


def test_tus_creation_answers_alike_and_takes_the_bytes(api_for, bob, bobs_file, secret):
    """Offset 0 for content stored elsewhere, as for new content: no existence oracle."""
    client = api_for(bob)
    pending = announce(client, bobs_file, sha(secret)).json()
    stored = tus_create(client, sha(secret), len(secret))
    new = tus_create(client, sha(b"new" * 9), 27)
    assert stored.status_code == new.status_code == 201
    assert stored["Upload-Offset"] == new["Upload-Offset"] == "0"

    done = client.generic(
        "PATCH",
        stored["Location"],
        secret,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
        **TUS,
    )
    assert done.status_code == 204 and done["Upload-Offset"] == str(len(secret))
    assert read(client, f"/api/sync/blobs/{sha(secret)}") == secret
    media = client.get(f"/api/files/{bobs_file.pk}/media/{pending['id']}/").json()
    assert media["state"] == "ready"


def test_put_answers_alike_and_then_bob_reads_his_own_bytes(api_for, bob, bobs_file, secret):
    client = api_for(bob)
    pending = announce(client, bobs_file, sha(secret)).json()
    new = os.urandom(100)
    assert put(client, new).json() == {"sha256": sha(new), "created": True}

    before = store_state()
    wrong = client.generic(
        "PUT", f"/api/sync/blobs/{sha(secret)}", new, content_type="application/octet-stream"
    )
    assert wrong.status_code == 422
    assert store_state() == before

    response = put(client, secret)
    assert response.status_code == 201 and response.json() == {
        "sha256": sha(secret),
        "created": True,
    }
    assert read(client, f"/api/sync/blobs/{sha(secret)}") == secret
    assert read(client, f"/api/files/{bobs_file.pk}/media/{pending['id']}/download/") == secret
    media = [r["media"] for r in whole_file(client, bobs_file) if "media" in r]
    assert [m["ready"] for m in media] == [True]
    assert put(client, secret).status_code == 200  # now his own: dedup, nothing sent


def test_an_import_cannot_name_someone_elses_archive(api_for, alice, bob, bobs_file, secret):
    a_project = services.create_project(team=alice.teams.get(), name="Exported")
    services.add_page(file=services.create_file(project=a_project, name="Private"), name="p")
    job = run_to_end(create_export_job(user=alice, project=a_project, enqueue=False))
    archive = artifact_bytes(job)
    services.store_blob(stream=io.BytesIO(archive), content_type="application/zip", user=alice)
    client = api_for(bob)
    before = store_state()
    answers = [
        client.post(
            "/api/imports/", {"project": str(bobs_file.project_id), "blob": digest}, format="json"
        )
        for digest in (sha(archive), sha(b"nothing"))
    ]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json() == answers[1].json()
    assert store_state() == before

    assert put(client, archive).status_code == 201
    started = client.post(
        "/api/imports/", {"project": str(bobs_file.project_id), "blob": sha(archive)}, format="json"
    )
    assert started.status_code == 202, started.content


def test_a_teammate_reads_bytes_a_file_of_the_team_references(
    api_for, editor, viewer, design, secret
):
    """Possession is per user, reading is per file: once an editor's upload makes the
    team's media ready, everyone who can see the file reads it."""
    services.set_membership(team=design.project.team, user=editor, role=Role.EDITOR)
    announced = announce(api_for(editor), design, sha(secret)).json()
    assert api_for(viewer).get(f"/api/sync/blobs/{sha(secret)}").status_code == 404
    assert put(api_for(editor), secret).status_code == 201
    assert read(api_for(viewer), f"/api/sync/blobs/{sha(secret)}") == secret
    ready = api_for(viewer).get(f"/api/files/{design.pk}/media/{announced['id']}/")
    assert ready.json()["state"] == "ready"
