"""SSE and WebSocket delivery through a real ASGI server (uvicorn) sharing the test database.

For exports the test process plays the worker: it runs the export's ticks while the
server, another process, streams the events. With the in-memory channel layer no push
crosses from the worker to the server, so these also prove the catch-up from the event
rows. Imports run on a real `manage.py qcluster`. Every client is connected (has the
server's first answer) before the work starts, so what it reads came live.
"""

import asyncio
import io
import json
import threading
from dataclasses import dataclass, field

import httpx
import pytest
import websockets
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token

from exports import services
from exports.jobs.listening import event_payload
from exports.models import ImportJob, JobEvent, JobState
from filesync import services as filesync_services
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.snapshot import store_state
from tests.waiting import patience, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def token_header(user) -> dict:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def read_sse(response, connected: threading.Event) -> list[dict]:
    """Parse a text/event-stream body into events (comments and retry lines skipped);
    `connected` is set once the server sent its first line."""
    events, current = [], {}
    for line in response.iter_lines():
        connected.set()
        if not line:
            if "event" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return events


@dataclass
class Listener:
    """One SSE client on a thread of its own: the events it read, and what went wrong."""

    thread: threading.Thread
    events: list = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)
    failures: list = field(default_factory=list)

    def wait_connected(self) -> None:
        wait_for(
            lambda: self.connected.is_set() or not self.thread.is_alive(),
            timeout=30,
            what="the stream's first line",
        )
        assert not self.failures, self.failures

    def finish(self) -> list[dict]:
        """The events, once the server closed the stream (after its last event)."""
        self.thread.join(timeout=patience(60))
        assert not self.thread.is_alive(), "the stream did not close after the last event"
        assert not self.failures, self.failures
        return self.events


def listen(url: str, headers: dict) -> Listener:
    """Follow `url` (a job's events) with httpx; returns at once."""

    def run():
        try:
            with httpx.stream("GET", url, headers=headers, timeout=patience(60)) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                assert response.headers["x-accel-buffering"] == "no"
                listener.events.extend(read_sse(response, listener.connected))
        except BaseException as error:  # reported by wait_connected() and finish()
            listener.failures.append(error)

    listener = Listener(thread=threading.Thread(target=run, daemon=True))
    listener.thread.start()
    return listener


def test_sse_streams_progress_then_end_and_replays_after_last_event_id(
    asgi_server, workspace, editor
):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    url = f"{asgi_server}/api/exports/{job.id}/events"
    listener = listen(url, token_header(editor))
    listener.wait_connected()
    job = run_to_end(job, tick_seconds=0)
    received = listener.finish()

    kinds = [e["event"] for e in received]
    assert kinds[0] == "queued" and kinds[-1] == "end" and "progress" in kinds
    assert [int(e["id"]) for e in received] == list(range(1, len(received) + 1))
    end = json.loads(received[-1]["data"])
    assert end["sha256"] == job.artifact_sha256 and end["size"] == job.artifact_size
    assert end["download_uri"].startswith(f"/api/exports/{job.id}/download/?token=")

    replayed = listen(url, {**token_header(editor), "Last-Event-ID": "3"}).finish()
    assert [int(e["id"]) for e in replayed] == list(range(4, len(received) + 1))
    assert replayed == received[3:]
    assert listen(f"{url}?after=3", token_header(editor)).finish() == received[3:]


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


def socket_url(base: str, job, query: str = "") -> str:
    return base.replace("http", "ws") + f"/ws/exports/{job.id}/{query}"


def same_origin(base: str, user) -> dict:
    """What the admin's page sends: its session cookie and its own origin."""
    return {"Cookie": session_cookie(user), "Origin": base}


def collect_in_background(url: str, headers: dict) -> tuple[threading.Thread, dict]:
    """Read a job's WebSocket on a thread until a terminal event. The dict gets "open" (an
    Event, set once the server accepted), then "messages" (heartbeats left out) or
    "failure"."""
    result: dict = {"open": threading.Event()}

    async def collect() -> list:
        messages = []
        async with websockets.connect(url, additional_headers=headers) as socket:
            result["open"].set()
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), patience(30)))
                if message["kind"] != "heartbeat":
                    messages.append(message)
                if message["kind"] in ("end", "error", "cancelled"):
                    return messages

    def run():
        try:
            result["messages"] = asyncio.run(collect())
        except BaseException as error:  # reported by the test
            result["failure"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(
        lambda: result["open"].is_set() or not thread.is_alive(),
        timeout=30,
        what="the WebSocket to open",
    )
    assert "failure" not in result, result["failure"]
    return thread, result


def finished(thread: threading.Thread, result: dict) -> list:
    thread.join(timeout=patience(60))
    assert not thread.is_alive(), "no terminal event came over the WebSocket"
    assert "failure" not in result, result["failure"]
    return result["messages"]


def refused(url: str, headers: dict) -> int:
    """The HTTP status or close code a WebSocket connection ends with, 0 if it stays open."""

    async def attempt() -> int:
        try:
            async with websockets.connect(url, additional_headers=headers) as socket:
                await asyncio.wait_for(socket.recv(), patience(30))
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else -1
        except websockets.InvalidStatus as status:
            return status.response.status_code
        return 0

    return asyncio.run(attempt())


def rows_as_sent(job) -> list[dict]:
    """The job's event rows, as the WebSocket sends them."""
    return [event_payload(event) for event in JobEvent.objects.filter(job=job).order_by("seq")]


def test_websocket_sends_the_same_events_to_the_owner_only(
    asgi_server, workspace, editor, outsider
):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    url = socket_url(asgi_server, job)
    listening = collect_in_background(url, same_origin(asgi_server, editor))
    run_to_end(job)
    messages = finished(*listening)
    assert messages == rows_as_sent(job)
    assert messages[-1]["kind"] == "end"
    assert refused(url, same_origin(asgi_server, outsider)) == 4404
    assert refused(url, {"Origin": asgi_server}) == 4404  # no session at all


def test_websocket_after_sends_only_later_events_none_missed_none_repeated(
    asgi_server, workspace, editor
):
    """`?after=N`, given while the job runs and after it ended: exactly the events N+1.."""
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    headers = same_origin(asgi_server, editor)
    assert [r["kind"] for r in rows_as_sent(job)] == ["queued"]  # before anyone listens
    listening = collect_in_background(socket_url(asgi_server, job, "?after=1"), headers)
    run_to_end(job, tick_seconds=0)
    live = finished(*listening)
    rows = rows_as_sent(job)
    assert len(rows) > 4 and rows[-1]["kind"] == "end"
    assert live == rows[1:]

    middle = len(rows) // 2
    tail = finished(
        *collect_in_background(socket_url(asgi_server, job, f"?after={middle}"), headers)
    )
    assert [m["seq"] for m in tail] == list(range(middle + 1, len(rows) + 1))
    assert tail == rows[middle:]


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1.evil.example",
        "https://localhost.evil.example:8443",
        "null",
        None,
    ],
)
def test_websocket_from_a_foreign_origin_is_refused(asgi_server, workspace, editor, origin):
    """The owner's own session, from a page of another origin (or none): the handshake is
    refused (403) before any event is read, and nothing is written."""
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    headers = {"Cookie": session_cookie(editor)}
    if origin is not None:
        headers["Origin"] = origin
    before = store_state()
    assert refused(socket_url(asgi_server, job), headers) == 403
    assert store_state() == before


@pytest.fixture
def queued_import(workspace, editor, team) -> ImportJob:
    """An import of the workspace's exported project into a new project, queued."""
    archive = artifact_bytes(
        run_to_end(
            services.create_export_job(user=editor, project=workspace.project, enqueue=False)
        )
    )
    target = filesync_services.create_project(team=team, name="Restored")
    return services.create_import_job(user=editor, project=target, upload=io.BytesIO(archive))


def test_import_events_stream_from_queued_to_end_and_resume(
    asgi_server, start_qcluster, queued_import, editor
):
    """A real worker runs the import while a client follows it over SSE: queued, progress
    through check, store and one write, then end with the new files; a reconnect with
    Last-Event-ID (or ?after=) gets exactly the rest."""
    job = queued_import
    url = f"{asgi_server}/api/imports/{job.id}/events"
    listener = listen(url, token_header(editor))
    listener.wait_connected()
    start_qcluster()
    received = listener.finish()

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert [int(e["id"]) for e in received] == list(range(1, job.event_seq + 1))
    kinds = [e["event"] for e in received]
    assert kinds[0] == "queued" and kinds[-1] == "end"
    assert set(kinds[1:-1]) == {"progress"}
    progress = [json.loads(e["data"]) for e in received if e["event"] == "progress"]
    phases = [p["phase"] for p in progress]
    order = ["check", "store", "write"]
    assert phases == sorted(phases, key=order.index) and phases.count("write") == 1, phases
    assert {"check", "store"} <= set(phases) and phases[-1] == "write"
    assert all(p["items_done"] <= p["items_total"] for p in progress)
    assert json.loads(received[-1]["data"]) == {"project": str(job.project_id), "files": job.files}
    assert len(job.files) == 3

    headers = token_header(editor)
    resumed = listen(url, {**headers, "Last-Event-ID": "2"}).finish()
    assert resumed == received[2:]
    assert listen(f"{url}?after={len(received) - 1}", headers).finish() == received[-1:]


def test_two_hundred_sse_clients_on_one_server_all_get_every_event(asgi_server, workspace, editor):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    headers = token_header(editor)
    clients = 200
    connected: set[int] = set()

    async def one(client: httpx.AsyncClient, number: int) -> list[int]:
        seqs = []
        async with client.stream(
            "GET", f"{asgi_server}/api/exports/{job.id}/events", headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                connected.add(number)
                if line.startswith("id:"):
                    seqs.append(int(line[3:]))
        return seqs

    async def crowd() -> list[list[int]]:
        limits = httpx.Limits(max_connections=clients + 10)
        async with httpx.AsyncClient(timeout=patience(120), limits=limits) as client:
            return await asyncio.gather(*(one(client, n) for n in range(clients)))

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(seqs=asyncio.run(crowd())), daemon=True)
    thread.start()
    # Every client has its first answer from the server before the work starts.
    wait_for(
        lambda: len(connected) == clients or not thread.is_alive(),
        timeout=60,
        what=f"{clients} clients to connect",
    )
    assert len(connected) == clients, f"{len(connected)} connected; the crowd failed"
    run_to_end(job, tick_seconds=0.2)
    thread.join(timeout=patience(120))
    assert not thread.is_alive(), "a client's stream did not close after the end event"
    expected = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))
    assert len(result["seqs"]) == clients
    assert all(seqs == expected for seqs in result["seqs"])
