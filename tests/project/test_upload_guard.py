"""The upload routes refuse from the headers, before the body, through a real uvicorn.

A raw socket client sends the body as fast as the server takes it, with a small send
buffer, and stops when the answer comes: what `send()` accepted bounds what the server
could have read. (Django's own spool of a body is an unnamed temporary file, which no
directory listing shows; the byte count is the proof that it never happened.)
"""

import base64
import hashlib
import io
import json
import os
import select
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from filesync.models import Blob, Upload
from tests.conftest import serve_asgi
from tests.snapshot import store_state
from tests.waiting import patience, stop_process

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
SHA = hashlib.sha256(b"never sent").hexdigest()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client's send() accepted before the answer came

    def json(self) -> dict:
        return json.loads(self.body)


def push(base: str, head: str, *, body_bytes: int, chunked: bool = False) -> Answer:
    """Send `head`, then up to `body_bytes` zeros (framed as 64 KiB chunks if `chunked`)
    as fast as the server takes them, until an answer arrives or the server closes the
    connection; then read the answer."""
    address = urlsplit(base)
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    conn.settimeout(patience(10))
    deadline = time.monotonic() + patience(60)
    with conn:
        conn.connect((address.hostname, address.port))
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        conn.setblocking(False)
        piece = bytes(64 * 1024)
        if chunked:
            piece = b"%x\r\n%s\r\n" % (len(piece), piece)
        pending, sent = memoryview(b""), 0
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no answer after sending {sent} bytes"
            writing = [conn] if sent < body_bytes else []
            readable, writable, _ = select.select([conn], writing, [], left)
            if readable:
                break
            if writable:
                pending = pending or memoryview(piece)[: body_bytes - sent]
                try:
                    accepted = conn.send(pending)
                    sent, pending = sent + accepted, pending[accepted:]
                except (BrokenPipeError, ConnectionResetError):
                    break
        return _answer(_read_all(conn, deadline), sent)


def _read_all(conn: socket.socket, deadline: float) -> bytes:
    """Everything the server sent until it closed (a reset after the answer ends it too:
    the server closed with unread bytes of ours in its buffer)."""
    conn.setblocking(True)
    received = b""
    while True:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = conn.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def _answer(raw: bytes, sent: int) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body, sent)


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def small_limits_server(live_env, tmp_path):
    """uvicorn with limits small enough to cross: blobs and tus 1000 bytes, imports 1 MiB."""
    env = {**live_env, "SYNC_MAX_BLOB_BYTES": "1000", "IMPORT_MAX_BYTES": str(MiB)}
    server, base = serve_asgi(env, tmp_path / "uvicorn-small.log")
    try:
        yield base
    finally:
        stop_process(server)


def assert_refused_early(answer: Answer, status: int) -> None:
    assert answer.sent < MiB, f"the server took {answer.sent} bytes before refusing"
    assert answer.status == status, answer
    assert answer.headers["connection"] == "close"


def test_an_anonymous_put_of_300_mib_is_401_before_its_body(asgi_server):
    before = store_state()
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {300 * MiB}\n",
        body_bytes=300 * MiB,
    )
    assert_refused_early(answer, 401)
    assert answer.headers["www-authenticate"] == "Token"
    assert answer.json() == {"detail": "Authentication credentials were not provided."}
    assert store_state() == before


def test_a_bad_token_is_401_before_the_body(asgi_server):
    before = store_state()
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Token {'0' * 40}\n"
        f"Content-Length: {300 * MiB}\n",
        body_bytes=300 * MiB,
    )
    assert_refused_early(answer, 401)
    assert answer.json() == {"detail": "Invalid token."}
    assert store_state() == before


def test_a_declared_6_gib_put_is_413_with_nothing_sent(asgi_server, editor):
    token = token_for(editor)
    before = store_state()
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Token {token}\n"
        f"Content-Length: {6 * 1024**3}\n",
        body_bytes=0,
    )
    assert answer.status == 413 and answer.headers["connection"] == "close"
    assert "larger" in answer.json()["detail"]
    assert store_state() == before


def test_a_client_that_expects_100_continue_gets_the_refusal_instead(asgi_server):
    """The server sends 100 Continue only when the app first reads; a refusal never does."""
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nExpect: 100-continue\n"
        f"Content-Length: {300 * MiB}\n",
        body_bytes=0,
    )
    assert answer.status == 401 and answer.headers["connection"] == "close"


def test_a_session_counts_as_an_identity(asgi_server, editor):
    """A logged-in browser passes the guard (here to a 413); CSRF stays the view's."""
    client = Client()
    client.force_login(editor)
    cookie = client.cookies["sessionid"].value
    before = store_state()
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nCookie: sessionid={cookie}\n"
        f"Content-Length: {6 * 1024**3}\n",
        body_bytes=0,
    )
    assert answer.status == 413
    assert store_state() == before


def test_an_anonymous_tus_patch_is_401_with_tus_resumable(asgi_server):
    before = store_state()
    answer = push(
        asgi_server,
        f"PATCH /api/sync/uploads/{uuid.uuid4()} HTTP/1.1\nHost: 127.0.0.1\nTus-Resumable: 1.0.0\n"
        f"Upload-Offset: 0\nContent-Type: application/offset+octet-stream\n"
        f"Content-Length: {300 * MiB}\n",
        body_bytes=300 * MiB,
    )
    assert_refused_early(answer, 401)
    assert answer.headers["tus-resumable"] == "1.0.0"
    assert answer.headers["www-authenticate"] == "Token"
    assert store_state() == before


def test_an_anonymous_multipart_import_is_401_before_the_body(asgi_server):
    before = store_state()
    answer = push(
        asgi_server,
        "POST /api/imports/ HTTP/1.1\nHost: 127.0.0.1\n"
        "Content-Type: multipart/form-data; boundary=xyz\n"
        f"Content-Length: {300 * MiB}\n",
        body_bytes=300 * MiB,
    )
    assert_refused_early(answer, 401)
    assert store_state() == before


def test_an_anonymous_media_upload_is_401_before_the_body(asgi_server, design):
    before = store_state()
    answer = push(
        asgi_server,
        f"POST /api/files/{design.pk}/media/ HTTP/1.1\nHost: 127.0.0.1\n"
        "Content-Type: multipart/form-data; boundary=xyz\n"
        f"Content-Length: {300 * MiB}\n",
        body_bytes=300 * MiB,
    )
    assert_refused_early(answer, 401)
    assert store_state() == before


def test_a_put_without_a_length_is_411_before_the_body(asgi_server, editor):
    token = token_for(editor)
    before = store_state()
    answer = push(
        asgi_server,
        f"PUT /api/sync/blobs/{SHA} HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Token {token}\n"
        "Transfer-Encoding: chunked\n",
        body_bytes=300 * MiB,
        chunked=True,
    )
    assert_refused_early(answer, 411)
    assert answer.json() == {"detail": "Content-Length is required."}
    assert store_state() == before


def test_each_route_refuses_past_its_own_limit(small_limits_server, editor, design):
    token = token_for(editor)
    auth = f"Host: 127.0.0.1\nAuthorization: Token {token}\n"
    tus = "Tus-Resumable: 1.0.0\n"
    before = store_state()
    refused = {
        "blob": push(
            small_limits_server,
            f"PUT /api/sync/blobs/{SHA} HTTP/1.1\n{auth}Content-Length: 1001\n",
            body_bytes=0,
        ),
        "tus creation": push(
            small_limits_server,
            f"POST /api/sync/uploads/ HTTP/1.1\n{auth}{tus}Upload-Length: 1001\n"
            f"Upload-Metadata: sha256 {b64(SHA)}\nContent-Length: 0\n",
            body_bytes=0,
        ),
        "tus patch": push(
            small_limits_server,
            f"PATCH /api/sync/uploads/{uuid.uuid4()} HTTP/1.1\n{auth}{tus}Upload-Offset: 0\n"
            f"Content-Type: application/offset+octet-stream\nContent-Length: 1001\n",
            body_bytes=0,
        ),
        "import": push(
            small_limits_server,
            f"POST /api/imports/ HTTP/1.1\n{auth}Content-Type: multipart/form-data; boundary=b\n"
            f"Content-Length: {9 * MiB + 1}\n",
            body_bytes=0,
        ),
        "media": push(
            small_limits_server,
            f"POST /api/files/{design.pk}/media/ HTTP/1.1\n{auth}"
            f"Content-Type: multipart/form-data; boundary=b\nContent-Length: {8 * MiB + 1001}\n",
            body_bytes=0,
        ),
    }
    assert {route: answer.status for route, answer in refused.items()} == dict.fromkeys(
        refused, 413
    )
    assert refused["tus creation"].headers["tus-resumable"] == "1.0.0"
    assert refused["tus patch"].headers["tus-resumable"] == "1.0.0"
    assert store_state() == before


def test_a_chunked_tus_patch_is_cut_at_the_limit(small_limits_server, editor):
    """No length declared: the body is counted as it streams and refused past the limit."""
    headers = {"Authorization": f"Token {token_for(editor)}", "Tus-Resumable": "1.0.0"}
    data = os.urandom(1000)
    created = httpx.post(
        f"{small_limits_server}/api/sync/uploads/",
        headers={
            **headers,
            "Upload-Length": "1000",
            "Upload-Metadata": f"sha256 {b64(hashlib.sha256(data).hexdigest())}",
        },
        timeout=patience(30),
    )
    assert created.status_code == 201, created.text
    before = store_state()
    refused = httpx.patch(
        created.headers["Location"],
        content=iter([data, data]),
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=patience(30),
    )
    assert refused.status_code == 413, refused.text
    assert refused.headers["tus-resumable"] == "1.0.0"
    assert store_state() == before
    accepted = httpx.patch(
        created.headers["Location"],
        content=iter([data[:500], data[500:]]),
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=patience(30),
    )
    assert accepted.status_code == 204, accepted.text
    assert Blob.objects.filter(pk=hashlib.sha256(data).hexdigest()).exists()


def test_authenticated_uploads_still_work_end_to_end(asgi_server, editor):
    from tusclient import client as tus

    token = token_for(editor)
    data = os.urandom(3 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    stored = httpx.put(
        f"{asgi_server}/api/sync/blobs/{digest}",
        content=data,
        headers={"Authorization": f"Token {token}"},
        timeout=patience(60),
    )
    assert stored.status_code == 201, stored.text

    resumable = os.urandom(3 * MiB)
    uploader = tus.TusClient(
        f"{asgi_server}/api/sync/uploads/", headers={"Authorization": f"Token {token}"}
    ).uploader(
        file_stream=io.BytesIO(resumable),
        chunk_size=MiB,
        metadata={"sha256": hashlib.sha256(resumable).hexdigest()},
    )
    uploader.upload()
    assert Upload.objects.get().completed_at is not None
    assert set(Blob.objects.values_list("pk", flat=True)) == {
        digest,
        hashlib.sha256(resumable).hexdigest(),
    }
