"""SSE and WebSocket delivery through a real ASGI server (uvicorn) sharing the test database.

The test process plays the worker: it runs the export's ticks while the server, another
process, streams the events. With the in-memory channel layer no push crosses from the
worker to the server, so these also prove the catch-up from the event rows.
"""

import asyncio
import json
import threading
import time

import httpx
import pytest
import websockets
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token

from exports import services
from exports.models import JobEvent
from tests.exports.conftest import run_to_end

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def token_header(user) -> dict:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def read_sse(response) -> list[dict]:
    """Parse a text/event-stream body into events (comments and retry lines skipped)."""
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if "event" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return events


def follow_in_background(base, job, headers, extra=None) -> tuple[threading.Thread, list]:
    received: list = []

    def listen():
        with httpx.stream(
            "GET",
            f"{base}/api/exports/{job.id}/events",
            headers={**headers, **(extra or {})},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            received.extend(read_sse(response))

    thread = threading.Thread(target=listen)
    thread.start()
    return thread, received


def test_sse_streams_progress_then_end_and_replays_after_last_event_id(
    asgi_server, workspace, editor
):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    thread, received = follow_in_background(asgi_server, job, token_header(editor))
    job = run_to_end(job, tick_seconds=0)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the stream did not close after the end event"

    kinds = [e["event"] for e in received]
    assert kinds[0] == "queued" and kinds[-1] == "end" and "progress" in kinds
    assert [int(e["id"]) for e in received] == list(range(1, len(received) + 1))
    end = json.loads(received[-1]["data"])
    assert end["sha256"] == job.artifact_sha256 and end["size"] == job.artifact_size
    assert end["download_uri"].startswith(f"/api/exports/{job.id}/download/?token=")

    _, replayed = follow_in_background(
        asgi_server, job, token_header(editor), {"Last-Event-ID": "3"}
    )
    _.join(timeout=30)
    assert [int(e["id"]) for e in replayed] == list(range(4, len(received) + 1))
    assert replayed == received[3:]


def test_sse_is_refused_to_strangers_and_anonymous(asgi_server, workspace, editor, outsider):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    url = f"{asgi_server}/api/exports/{job.id}/events"
    assert httpx.get(url, headers=token_header(outsider)).status_code == 404
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Token forged"}).status_code == 401


def session_cookie(user) -> str:
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def test_websocket_sends_the_same_events_to_the_owner_only(
    asgi_server, workspace, editor, outsider
):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    ws_url = asgi_server.replace("http", "ws") + f"/ws/exports/{job.id}/"

    def headers_for(user) -> dict:
        return {"Cookie": session_cookie(user), "Origin": asgi_server}

    async def collect(headers) -> list:
        messages = []
        async with websockets.connect(ws_url, additional_headers=headers) as socket:
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), 30))
                messages.append(message)
                if message["kind"] in ("end", "error", "cancelled"):
                    return messages

    async def refused(headers) -> int:
        try:
            async with websockets.connect(ws_url, additional_headers=headers) as socket:
                await socket.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else -1
        except websockets.InvalidStatus as status:
            return status.response.status_code
        return 0

    result: dict = {}
    owner_headers = headers_for(editor)
    thread = threading.Thread(
        target=lambda: result.update(owner=asyncio.run(collect(owner_headers)))
    )
    thread.start()
    run_to_end(job)
    thread.join(timeout=30)
    messages = result["owner"]
    assert [m["seq"] for m in messages] == list(
        JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True)
    )
    assert messages[-1]["kind"] == "end"
    assert asyncio.run(refused(headers_for(outsider))) in (4404, 403)


def test_two_hundred_sse_clients_on_one_server_all_get_every_event(asgi_server, workspace, editor):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    headers = token_header(editor)
    clients = 200

    async def one(client: httpx.AsyncClient) -> list[int]:
        seqs = []
        async with client.stream(
            "GET", f"{asgi_server}/api/exports/{job.id}/events", headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    seqs.append(int(line[3:]))
        return seqs

    async def crowd() -> list[list[int]]:
        limits = httpx.Limits(max_connections=clients + 10)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(clients)))

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(seqs=asyncio.run(crowd())))
    thread.start()
    time.sleep(2)  # let every client connect before the work starts
    run_to_end(job, tick_seconds=0.2)
    thread.join(timeout=120)
    expected = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))
    assert len(result["seqs"]) == clients
    assert all(seqs == expected for seqs in result["seqs"])
