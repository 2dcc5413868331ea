import hashlib
import os
import threading
import time
import zlib
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from filesync import services
from filesync.models import Blob, BlobHolder, Change, ContentLock
from tests.conftest import serve_asgi
from tests.downloads import download, served_by_s3
from tests.snapshot import store_state
from tests.waiting import patience, stop_process, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(client, data: bytes, *, name: str | None = None, **headers):
    return client.generic(
        "PUT",
        f"/api/sync/blobs/{name or sha(data)}",
        data,
        content_type="application/octet-stream",
        **headers,
    )


def test_put_stores_a_verified_blob_and_dedups(api_for, editor):
    client = api_for(editor)
    data = os.urandom(300_000)
    created = put(client, data)
    assert created.status_code == 201, created.content
    blob = Blob.objects.get(pk=sha(data))
    assert (blob.size, blob.crc32) == (len(data), zlib.crc32(data))
    again = put(client, data)
    assert again.status_code == 200 and again.json()["created"] is False


def test_put_refuses_a_body_that_does_not_match_its_name(api_for, editor):
    client = api_for(editor)
    data = os.urandom(1000)
    before = store_state()
    response = put(client, data, name=sha(b"something else"))
    assert response.status_code == 422
    assert store_state() == before


def test_a_truncated_body_stores_nothing(asgi_server, editor):
    """Through uvicorn: 600 of 1000 declared bytes, then the client stops sending."""
    import socket
    from urllib.parse import urlsplit

    token = Token.objects.get_or_create(user=editor)[0].key
    data = os.urandom(1000)
    address = urlsplit(asgi_server)
    before = store_state()
    with socket.create_connection((address.hostname, address.port), timeout=patience(30)) as conn:
        conn.sendall(
            f"PUT /api/sync/blobs/{sha(data)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nContent-Length: 1000\r\n\r\n".encode()
            + data[:600]
        )
        conn.shutdown(socket.SHUT_WR)
        answer = conn.recv(4096)
    assert not answer.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2"))
    assert store_state() == before


def test_put_without_content_length_is_411_and_stores_nothing(asgi_server, editor):
    """Through uvicorn, a body sent chunked (RFC 9112) declares no length: 411 Length
    Required (RFC 9110 15.5.12), read or not, nothing stored."""
    data = os.urandom(3000)
    headers = {"Authorization": f"Token {Token.objects.get_or_create(user=editor)[0].key}"}
    before = store_state()
    response = httpx.put(
        f"{asgi_server}/api/sync/blobs/{sha(data)}",
        content=iter([data[:1000], data[1000:]]),
        headers=headers,
        timeout=patience(30),
    )
    assert response.status_code == 411, response.text
    assert "Content-Length" in response.json()["detail"]
    assert store_state() == before


def test_put_needs_a_length_within_the_limit_and_a_real_sha(api_for, editor, settings):
    client = api_for(editor)
    settings.SYNC_MAX_BLOB_BYTES = 10
    before = store_state()
    assert put(client, b"x" * 11).status_code == 413
    assert put(client, b"abc", name="not-a-sha").status_code in (400, 404)
    assert put(client, b"abc", CONTENT_LENGTH="").status_code == 411
    assert put(client, b"abc", CONTENT_LENGTH="three").status_code == 411
    assert put(client, b"abc", CONTENT_LENGTH="³").status_code == 411
    assert store_state() == before


def test_get_serves_ranges_etags_and_head(api_for, viewer, media, png_bytes):
    """On either storage: the filesystem answers ranges itself, S3's presigned URL does."""
    client = api_for(viewer)
    url = f"/api/sync/blobs/{media.blob_id}"
    head = client.head(url)
    assert head.status_code == 200 and head["Content-Length"] == str(len(png_bytes))
    assert head["ETag"] == f'"{media.blob_id}"' and head["Accept-Ranges"] == "bytes"
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"{media.blob_id}"').status_code == 304
    whole = download(client, url)
    assert whole.status == 200 and whole.body == png_bytes
    assert whole.redirected == served_by_s3()
    pieces = []
    for first in range(0, len(png_bytes), 1000):
        last = min(first + 999, len(png_bytes) - 1)
        part = download(client, url, HTTP_RANGE=f"bytes={first}-{first + 999}")
        assert part.status == 206
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(png_bytes)}"
        pieces.append(part.body)
    assert b"".join(pieces) == png_bytes
    tail = download(client, url, HTTP_RANGE="bytes=-100")
    assert tail.status == 206 and tail.body == png_bytes[-100:]
    assert download(client, url, HTTP_RANGE="bytes=999999-").status == 416


def test_blobs_are_invisible_to_outsiders(api_for, outsider, media):
    client = api_for(outsider)
    before = store_state()
    assert client.get(f"/api/sync/blobs/{media.blob_id}").status_code == 404
    assert client.head(f"/api/sync/blobs/{media.blob_id}").status_code == 404
    assert client.post(f"/api/sync/blobs/{media.blob_id}/lock").status_code == 404
    assert client.delete(f"/api/sync/blobs/{media.blob_id}?before=9e9").status_code == 404
    assert store_state() == before


def timestamp(client, seconds_ahead=60) -> str:
    return str(client.get("/api/sync/timestamp").json()["epoch"] + seconds_ahead)


def test_remove_refuses_referenced_locked_and_late_requests(api_for, editor, make_user):
    client = api_for(editor)
    data = os.urandom(5000)
    url = f"/api/sync/blobs/{sha(data)}"
    empty = store_state()
    put(client, data)
    lock = client.post(f"{url}/lock")
    assert lock.status_code == 201
    before = store_state()
    refused = client.delete(f"{url}?before={timestamp(client)}")
    assert refused.status_code == 409 and refused.json()["reason"] == "locked"
    assert store_state() == before

    assert client.post(f"/api/sync/locks/{lock.json()['id']}/keep").status_code == 200
    assert client.delete(f"/api/sync/locks/{lock.json()['id']}").status_code == 204
    before = store_state()
    late = client.delete(f"{url}?before={timestamp(client, -5)}")
    assert late.status_code == 409 and late.json()["reason"] == "too_late"
    assert client.delete(url).status_code == 400
    assert client.delete(f"{url}?before=yesterday").status_code == 400
    assert store_state() == before

    assert client.delete(f"{url}?before={timestamp(client)}").status_code == 204
    assert store_state() == empty


def test_remove_refuses_a_blob_in_use(api_for, editor, media):
    BlobHolder.objects.create(blob_id=media.blob_id, user=editor)
    client = api_for(editor)
    deadline = timestamp(client)
    before = store_state()
    response = client.delete(f"/api/sync/blobs/{media.blob_id}?before={deadline}")
    assert response.status_code == 409 and response.json()["reason"] == "referenced"
    assert store_state() == before


def test_only_the_uploader_or_a_superuser_may_remove_an_unused_blob(
    api_for, editor, viewer, make_user
):
    """Staff who are not superusers cannot read a blob no file of theirs uses (404), and
    one a file uses is referenced (409): removing someone else's blob takes a superuser."""
    data = os.urandom(100)
    url = f"/api/sync/blobs/{sha(data)}"
    put(api_for(editor), data)
    other = api_for(viewer)
    staff = api_for(make_user("stella", is_staff=True, is_superuser=True))
    before = store_state()
    assert other.delete(f"{url}?before={timestamp(other)}").status_code == 404
    assert store_state() == before
    assert staff.delete(f"{url}?before={timestamp(staff)}").status_code == 204
    assert not Blob.objects.exists()


def test_expired_locks_stop_counting(api_for, editor):
    client = api_for(editor)
    data = os.urandom(100)
    put(client, data)
    lock = client.post(f"/api/sync/blobs/{sha(data)}/lock").json()
    ContentLock.objects.filter(pk=lock["id"]).update(expires_at=timezone.now() - timedelta(1))
    before = store_state()
    kept = client.post(f"/api/sync/locks/{lock['id']}/keep")
    assert kept.status_code == 409 and kept.json()["reason"] == "lock_expired"
    assert store_state() == before
    response = client.delete(f"/api/sync/blobs/{sha(data)}?before={timestamp(client)}")
    assert response.status_code == 204


def test_locks_belong_to_their_holder(api_for, editor, viewer, media):
    lock = api_for(editor).post(f"/api/sync/blobs/{media.blob_id}/lock").json()
    other = api_for(viewer)
    before = store_state()
    assert other.delete(f"/api/sync/locks/{lock['id']}").status_code == 404
    assert other.post(f"/api/sync/locks/{lock['id']}/keep").status_code == 404
    assert store_state() == before


def test_every_write_appends_to_the_feed_in_order(api_for, editor, design, library):
    client = api_for(editor)
    services.add_page(file=design, name="p")
    services.link_library(file=design, library=library)
    services.soft_delete_file(file=design)
    services.restore_file(file=design)
    body = client.get("/api/sync/changes?since=0").json()
    kinds = [(c["kind"], c["file"]) for c in body["changes"]]
    assert sorted(kinds[:2]) == sorted(
        [("file.created", str(library.id)), ("file.created", str(design.id))]
    )
    assert kinds[2:] == [
        ("page.added", str(design.id)),
        ("library.linked", str(design.id)),
        ("file.deleted", str(design.id)),
        ("file.restored", str(design.id)),
    ]
    seqs = [c["seq"] for c in body["changes"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert body["next"] == seqs[-1]
    limited = client.get(f"/api/sync/changes?since={seqs[1]}&limit=2").json()
    assert [c["seq"] for c in limited["changes"]] == seqs[2:4] and limited["next"] == seqs[3]


def test_the_feed_shows_only_the_teams_of_the_reader(api_for, outsider, design):
    assert api_for(outsider).get("/api/sync/changes").json()["changes"] == []
    assert Change.objects.count() == 1


def test_long_poll_answers_when_a_change_arrives(api_for, editor, design, settings, monkeypatch):
    """A poll that found nothing waits; a change made then ends the wait with that change.

    The change is made once the poll has read the feed and found nothing (its read is
    watched), and the poll may wait longer than the test would: an answer can only come
    from the change, never from the deadline, and nothing here depends on timing."""
    from filesync.sync import views

    bound = patience(120)
    settings.SYNC_MAX_WAIT_SECONDS = bound
    found_nothing = threading.Event()
    read_feed = views.changes_for

    def watched(*args, **kwargs):
        found = list(read_feed(*args, **kwargs))
        if not found:
            found_nothing.set()
        return found

    monkeypatch.setattr(views, "changes_for", watched)
    client = api_for(editor)
    since = Change.objects.latest("seq").seq
    answers = {}
    poll = threading.Thread(
        target=lambda: answers.update(
            response=client.get(f"/api/sync/changes?since={since}&wait={bound}")
        ),
        daemon=True,  # on failure it ends at the bound, after the test
    )
    poll.start()
    wait_for(found_nothing.is_set, timeout=60, what="the poll to find nothing and wait")
    assert "response" not in answers, "an empty feed answered before its wait"
    services.add_page(file=design, name="late")
    poll.join(patience(60))
    assert not poll.is_alive(), "the change did not end the wait"
    response = answers["response"]
    assert response.status_code == 200
    changes = response.json()["changes"]
    assert [(c["kind"], c["file"]) for c in changes] == [("page.added", str(design.id))]
    assert response.json()["next"] == changes[0]["seq"] > since


def test_the_wait_is_capped_not_refused_nor_honoured(api_for, editor, design, settings):
    """docs/sync.md: `wait` up to 30 s. A longer wait is cut to the cap (lowered here so the
    test does not sit through 30 s): an empty answer once the cap has passed."""
    from django.conf import settings as defaults

    assert defaults.SYNC_MAX_WAIT_SECONDS == 30
    settings.SYNC_MAX_WAIT_SECONDS = 1
    client = api_for(editor)
    since = Change.objects.latest("seq").seq
    started = time.monotonic()
    response = client.get(f"/api/sync/changes?since={since}&wait=86400")
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"changes": [], "next": since}
    assert 1 <= waited < patience(60), "waited the cap (1 s), not the day asked for"


@pytest.mark.parametrize("query", ["since=x", "limit=many", "wait=forever"])
def test_a_feed_query_that_is_not_a_number_is_400(api_for, editor, query):
    client = api_for(editor)
    before = store_state()
    assert client.get(f"/api/sync/changes?{query}").status_code == 400
    assert store_state() == before


def test_replicas_register_heartbeat_and_acknowledge(api_for, editor, design):
    client = api_for(editor)
    replica = client.post("/api/sync/replicas", {"name": "laptop"}, format="json").json()
    position = Change.objects.latest("seq").seq
    acked = client.post(f"/api/sync/replicas/{replica['id']}/ack", {"seq": position}, format="json")
    assert acked.status_code == 200 and acked.json()["acked_seq"] == position
    before = store_state()
    ahead = client.post(
        f"/api/sync/replicas/{replica['id']}/ack", {"seq": position + 5}, format="json"
    )
    assert ahead.status_code == 409
    for refused in ({"seq": -1}, {"seq": "x"}, {}):
        answer = client.post(f"/api/sync/replicas/{replica['id']}/ack", refused, format="json")
        assert answer.status_code == 400, refused
    assert client.post(f"/api/sync/replicas/{replica['id']}/nonsense").status_code == 404
    assert store_state() == before
    back = client.post(f"/api/sync/replicas/{replica['id']}/ack", {"seq": 0}, format="json")
    assert back.json()["acked_seq"] == position
    assert client.post(f"/api/sync/replicas/{replica['id']}/heartbeat").status_code == 200


def test_media_created_before_its_bytes_is_pending_until_they_arrive(api_for, editor, design):
    from exports.services import create_export_job

    client = api_for(editor)
    data = os.urandom(2048)
    created = client.post(
        f"/api/files/{design.id}/media/",
        {"name": "later.png", "sha256": sha(data), "mtype": "image/png"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["state"] == "pending" and created.json()["blob"] is None
    before = store_state()
    waiting = client.get(f"/api/sync/blobs/{sha(data)}")
    assert waiting.status_code == 404 and waiting.json()["reason"] == "pending"
    pending = client.get(f"/api/files/{design.id}/media/{created.json()['id']}/download/")
    assert pending.status_code == 404 and pending.json()["reason"] == "pending"
    with pytest.raises(Exception, match="still uploading"):
        create_export_job(file_ids=[design.id], enqueue=False)
    with pytest.raises(Exception, match="still uploading"):
        services.create_snapshot(file=design)
    assert store_state() == before

    assert put(client, data).status_code == 201
    media = client.get(f"/api/files/{design.id}/media/{created.json()['id']}/").json()
    assert media["state"] == "ready" and media["blob"]["sha256"] == sha(data)
    assert Change.objects.latest("seq").kind == "media.ready"
    assert client.get(f"/api/sync/blobs/{sha(data)}").status_code in (200, 302)


def test_pending_media_needs_exactly_one_of_bytes_or_hash(api_for, editor, design):
    client = api_for(editor)
    before = store_state()
    for body in ({"name": "x"}, {"name": "x", "sha256": "nothex"}, {"sha256": "a" * 64}):
        response = client.post(f"/api/files/{design.id}/media/", body, format="json")
        assert response.status_code == 400, body
    assert store_state() == before


@pytest.mark.live
def test_sixty_four_concurrent_clients_all_finish(asgi_server, editor):
    """64 clients uploading and downloading at once on one server process."""
    import asyncio

    headers = {"Authorization": f"Token {Token.objects.get_or_create(user=editor)[0].key}"}
    blobs = [os.urandom(200_000) for _ in range(64)]

    async def one(client: httpx.AsyncClient, data: bytes) -> bool:
        url = f"{asgi_server}/api/sync/blobs/{sha(data)}"
        stored = await client.put(url, content=data, headers=headers)
        assert stored.status_code == 201, stored.text
        fetched = await client.get(url, headers=headers, follow_redirects=True)
        return fetched.status_code == 200 and fetched.content == data

    async def crowd() -> list[bool]:
        # A fresh connection per request: a pooled one that the server closes for idleness
        # just as it is reused (keep-alive running out on a loaded machine) fails with
        # ReadError, which is about keep-alive, not about 64 clients at once.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=patience(60), limits=limits) as client:
            return await asyncio.gather(*(one(client, data) for data in blobs))

    results = asyncio.run(crowd())
    assert all(results) and len(results) == 64
    assert Blob.objects.count() == 64


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        key: int(value.split()[0])
        for key, value in (line.split(":", 1) for line in lines)
        if key in ("VmRSS", "VmHWM")
    }


def test_the_whole_file_read_streams_in_flat_memory(live_env, tmp_path, editor, project):
    """Through uvicorn, a file of 32 pages of 1.5 MB each is sent a page at a time: the
    server's peak memory grows by well under half the file, and the lines read back are the
    file. (Django drains a sync iterator into memory under ASGI; this one is async.)"""
    small = services.create_file(project=project, name="Warm-up")
    services.add_page(file=small, name="p", objects={"r": {"type": "rect"}})
    big = services.create_file(project=project, name="Big")
    pages = [
        {f"p{n}-{k}": {"type": "path", "content": os.urandom(50_000).hex()} for k in range(15)}
        for n in range(32)
    ]
    for n, objects in enumerate(pages):
        services.add_page(file=big, name=f"Page {n}", objects=objects)
    size = sum(len(orjson.dumps(objects)) for objects in pages)
    token = Token.objects.get_or_create(user=editor)[0].key
    server, base = serve_asgi(live_env, tmp_path / "uvicorn.log")
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}) as http:
            http.get(f"/api/sync/files/{small.id}").raise_for_status()
            before = _memory_kib(server.pid)
            with http.stream("GET", f"/api/sync/files/{big.id}", timeout=patience(60)) as answer:
                assert answer.status_code == 200
                body = b"".join(answer.iter_bytes())
            after = _memory_kib(server.pid)
    finally:
        stop_process(server)
    records = [orjson.loads(line) for line in body.splitlines()]
    assert [r["page"]["objects"] for r in records if "page" in r] == pages
    assert records[-1] == {"end": {"revision": 33}}
    grown = (after["VmHWM"] - before["VmRSS"]) * 1024
    assert grown < size / 2, f"the server's peak grew {grown >> 20} MiB for {size >> 20} MiB"
