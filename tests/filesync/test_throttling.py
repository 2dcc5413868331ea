"""The API's rate limits (common/api/throttling.py), set low through the environment of
a real server: the request past the rate is answered 429 with Retry-After in the API's
error shape, and writes nothing. On Redis (`make test-services`) a second server shares
the counts."""

import base64
import hashlib
import os

import httpx
import pytest
from rest_framework.authtoken.models import Token

from tests.conftest import SERVICES, serve_asgi
from tests.snapshot import store_state
from tests.waiting import patience, stop_process

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ONE_PER_MINUTE = {
    f"FERRY_THROTTLE_{scope}": "1/min" for scope in ("EXPORTS", "IMPORTS", "UPLOADS", "BLOB_READS")
}
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def throttled_server(live_env, tmp_path):
    """Servers (started by the test) with every throttled scope at one request a minute."""
    started = []

    def start() -> str:
        server, base = serve_asgi({**live_env, **ONE_PER_MINUTE}, tmp_path / "uvicorn.log")
        started.append(server)
        return base

    yield start
    for server in started:
        stop_process(server)


def client_for(base: str, user) -> httpx.Client:
    token, _ = Token.objects.get_or_create(user=user)
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Token {token.key}"}, timeout=patience(30)
    )


def tus_creation(data: bytes) -> dict:
    sha256 = base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()
    return {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"sha256 {sha256}"}


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["detail"].startswith("Request was throttled.")


def test_past_the_rate_each_scope_answers_429_and_writes_nothing(
    throttled_server, editor, design, media, png_bytes
):
    api = client_for(throttled_server(), editor)
    data = os.urandom(1000)
    sha256 = hashlib.sha256(data).hexdigest()
    created = api.post("/api/sync/uploads/", headers=tus_creation(data))
    assert created.status_code == 201
    assert api.post("/api/exports/", json={}).status_code == 400  # counted all the same
    assert api.post("/api/imports/", json={}).status_code == 400
    assert api.get(f"/api/files/{design.id}/media/{media.id}/download/").status_code in (200, 302)

    before = store_state()
    octets = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0", **TUS}
    refused = [
        api.post("/api/sync/uploads/", headers=tus_creation(data)),
        api.patch(created.headers["Location"], content=data, headers=octets),
        api.put(f"/api/sync/blobs/{sha256}", content=data),
        api.post(f"/api/files/{design.id}/media/", files={"upload": ("a.png", png_bytes)}),
        api.get(f"/api/sync/blobs/{media.blob_id}"),
        api.get(f"/api/files/{design.id}/media/{media.id}/download/"),
        api.post("/api/exports/", json={"project": str(design.project_id)}),
        api.post("/api/imports/", json={}),
    ]
    for response in refused:
        assert_throttled(response)
    assert refused[0].headers["Tus-Resumable"] == "1.0.0"
    assert store_state() == before


def test_scopes_and_users_are_counted_apart(throttled_server, editor, owner, design):
    base = throttled_server()
    editor_api, owner_api = client_for(base, editor), client_for(base, owner)
    assert editor_api.post("/api/exports/", json={}).status_code == 400
    assert_throttled(editor_api.post("/api/exports/", json={}))
    assert owner_api.post("/api/exports/", json={}).status_code == 400  # another user
    assert editor_api.post("/api/imports/", json={}).status_code == 400  # another scope
    assert editor_api.get("/api/files/").status_code == 200  # not throttled at all


@pytest.mark.skipif(not SERVICES, reason="the local-memory cache is one process's own")
def test_servers_sharing_redis_share_the_counts(throttled_server, editor):
    first, second = throttled_server(), throttled_server()
    assert client_for(first, editor).post("/api/exports/", json={}).status_code == 400
    assert_throttled(client_for(second, editor).post("/api/exports/", json={}))
