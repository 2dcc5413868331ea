import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from filesync.client import Interrupted, SyncClient, SyncError, file_sha256
from filesync.models import Blob
from tests.waiting import patience, wait_for


@pytest.fixture
def scripted_server():
    """A real local HTTP server answering from a script of (status, headers, body)."""
    script, seen = [], []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(self.command)
            status, headers, body = script.pop(0)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            payload = json.dumps(body).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", script, seen
    server.shutdown()


def test_retries_5xx_429_and_pending_then_succeeds(scripted_server):
    base, script, seen = scripted_server
    script += [
        (503, {}, {}),
        (429, {"Retry-After": "7"}, {}),
        (404, {}, {"reason": "pending"}),
        (200, {}, {"timestamp": "t", "epoch": 1.5}),
    ]
    delays = []
    client = SyncClient(base, "token", sleep=delays.append)
    assert client.timestamp() == 1.5
    assert len(seen) == 4
    assert delays[1] == 7  # Retry-After honoured
    assert 0 < delays[0] < delays[2]  # exponential backoff with jitter


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_4xx_are_final(scripted_server, status):
    base, script, seen = scripted_server
    script += [(status, {}, {"detail": "no"}), (200, {}, {})]
    client = SyncClient(base, "token", sleep=lambda s: None)
    with pytest.raises(SyncError) as refused:
        client.timestamp()
    assert refused.value.status == status and len(seen) == 1


def test_connection_errors_are_retried_then_raised():
    delays = []
    client = SyncClient("http://127.0.0.1:9", "token", attempts=3, sleep=delays.append)
    with pytest.raises(httpx.ConnectError):
        client.timestamp()
    assert len(delays) == 2


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_upload_and_ranged_download_round_trip_through_a_live_server(asgi_server, editor, tmp_path):
    from rest_framework.authtoken.models import Token

    token = Token.objects.get_or_create(user=editor)[0].key
    client = SyncClient(asgi_server, token, chunk_size=256 * 1024)
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(1_000_000))
    sha256 = client.upload(source)
    assert sha256 == file_sha256(source) and Blob.objects.filter(pk=sha256).exists()

    target = tmp_path / "copy.bin"
    partial = tmp_path / "copy.bin.part"
    partial.write_bytes(source.read_bytes()[:300_000])  # a download that stopped half-way
    client.download(sha256, target)
    assert target.read_bytes() == source.read_bytes() and not partial.exists()

    replica = client.register_replica("test replica")
    feed = client.changes(0)
    assert client.acknowledge(replica["id"], feed["next"])["acked_seq"] == feed["next"]
    lock = client.lock(sha256)
    with pytest.raises(SyncError) as refused:
        client.remove(sha256)
    assert refused.value.status == 409 and refused.value.detail["reason"] == "locked"
    client.unlock(lock["id"])
    client.remove(sha256)
    assert not Blob.objects.filter(pk=sha256).exists()


def test_a_stop_cuts_a_retry_wait_short(scripted_server):
    """An hour's Retry-After: the stop ends the wait, and no request follows it."""
    base, script, seen = scripted_server
    script += [(503, {"Retry-After": "3600"}, {})]
    stop = threading.Event()
    client = SyncClient(base, "token", stop=stop)
    outcome = []
    call = threading.Thread(target=lambda: outcome.append(_outcome(client.timestamp)))
    call.start()
    try:
        wait_for(lambda: seen, timeout=30, what="the first answer")
        stop.set()
        call.join(patience(10))
        assert not call.is_alive(), "the retry wait went on after the stop"
    finally:
        stop.set()
    assert isinstance(outcome[0], Interrupted) and seen == ["GET"]


def test_a_stopped_client_sends_nothing(scripted_server):
    base, script, seen = scripted_server
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        SyncClient(base, "token", stop=stop).timestamp()
    assert seen == []


def _outcome(call):
    try:
        return call()
    except Exception as error:
        return error
