"""Callbacks, as docs/api.md promises them: the final state POSTed signed (HMAC-SHA256 of
the raw body), only to allowed hosts, connection errors, 429 and 5xx retried with
exponential backoff (2, 4, 8, 16 s; five attempts), redirects not followed.

The receivers are real HTTP servers on loopback, answering from a script.
"""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from django_q.models import Schedule

from exports import services, tasks
from exports.models import ExportJob
from tests.conftest import free_port
from tests.exports.conftest import run_to_end
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cret"


@dataclass
class Receiver:
    """A loopback endpoint that answers its requests from `script` (a status, or a status
    and headers, each), then 204; it keeps what it received and when."""

    script: list
    received: list = field(default_factory=list)
    url: str = ""

    def answer(self) -> tuple[int, dict]:
        step = self.script.pop(0) if self.script else 204
        return step if isinstance(step, tuple) else (step, {})


@pytest.fixture
def receiver():
    """`receiver(*script)` starts a Receiver; all are shut down after the test."""
    servers = []

    def start(*script) -> Receiver:
        endpoint = Receiver(list(script))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.received.append((time.monotonic(), dict(self.headers), body))
                status, headers = endpoint.answer()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        endpoint.url = f"http://127.0.0.1:{server.server_port}/hook"
        return endpoint

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def callbacks_allowed(settings):
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    settings.EXPORT_CALLBACK_SECRET = SECRET


def finished_job(workspace, editor, url: str) -> ExportJob:
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=url, enqueue=False
    )
    return run_to_end(job)


def assert_signed(headers: dict, body: bytes) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Ferry-Signature"], expected)
    assert headers["Content-Type"] == "application/json"


def retries_of(job) -> list:
    return list(
        Schedule.objects.filter(func="exports.tasks.deliver_callback", args__contains=job.pk)
    )


@pytest.mark.parametrize("first", [429, (429, {"Retry-After": "1"}), 500, 503])
def test_the_final_state_is_posted_signed_and_a_transient_answer_retried(
    receiver, callbacks_allowed, workspace, editor, first
):
    endpoint = receiver(first)
    job = finished_job(workspace, editor, endpoint.url)

    assert tasks.deliver_callback(str(job.pk)) == "retry"
    (retry,) = retries_of(job)
    assert retry.schedule_type == Schedule.ONCE and retry.repeats == 1
    assert tasks.deliver_callback(str(job.pk)) == "delivered"

    assert len(endpoint.received) == 2
    for _, headers, body in endpoint.received:
        assert_signed(headers, body)
    assert endpoint.received[0][2] == endpoint.received[1][2]  # the same document, resent
    document = json.loads(endpoint.received[-1][2])
    job.refresh_from_db()
    assert document["state"] == "succeeded" and document["id"] == str(job.pk)
    assert document["artifact"]["sha256"] == job.artifact_sha256
    assert (job.callback_state, job.callback_attempts) == ("delivered", 2)


def test_transient_failures_back_off_2_4_8_16_seconds_then_give_up_after_five(
    receiver, callbacks_allowed, workspace, editor
):
    endpoint = receiver(429, 503, 500, 504, 502, 204)
    job = finished_job(workspace, editor, endpoint.url)

    for attempt, delay in enumerate([2, 4, 8, 16], start=1):
        before = timezone.now()
        assert tasks.deliver_callback(str(job.pk)) == "retry"
        after = timezone.now()
        retry = Schedule.objects.get(name=f"export-callback-{job.pk}-{attempt}")
        wait = timedelta(seconds=delay)
        assert before + wait <= retry.next_run <= after + wait, (attempt, retry.next_run)
    assert tasks.deliver_callback(str(job.pk)) == "failed"

    assert len(endpoint.received) == 5 and endpoint.script == [204]  # the sixth never asked
    assert len(retries_of(job)) == 4
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("failed", 5)


def test_a_connection_error_is_retried(callbacks_allowed, workspace, editor):
    job = finished_job(workspace, editor, f"http://127.0.0.1:{free_port()}/nobody-listens")
    assert tasks.deliver_callback(str(job.pk)) == "retry"
    assert len(retries_of(job)) == 1
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("", 1)


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_refusal_is_final(receiver, callbacks_allowed, workspace, editor, status):
    endpoint = receiver(status)
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "failed"
    assert len(endpoint.received) == 1 and retries_of(job) == []
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("failed", 1)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(receiver, callbacks_allowed, workspace, editor, status):
    elsewhere = receiver()
    endpoint = receiver((status, {"Location": elsewhere.url}))
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "failed"
    assert len(endpoint.received) == 1 and elsewhere.received == []
    assert retries_of(job) == []


def test_callbacks_go_only_to_allowed_hosts(
    receiver, callbacks_allowed, workspace, settings, editor
):
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    settings.EXPORT_CALLBACK_HOSTS = ["hooks.example.com"]  # the allow-list changed since
    assert tasks.deliver_callback(str(job.pk)) == "refused"
    assert endpoint.received == [] and retries_of(job) == []
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("refused", 0)


def test_a_callback_is_queued_when_the_job_ends(workspace, callbacks_allowed, editor):
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    broker.purge_queue()
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url="http://127.0.0.1:9/x", enqueue=False
    )
    assert broker.queue_size() == 0
    run_to_end(job)
    (task,) = [SignedPackage.loads(payload) for _, payload in broker.dequeue()]
    assert task["func"] == "exports.tasks.deliver_callback" and task["args"] == (str(job.pk),)


@pytest.mark.live
@pytest.mark.timeout(240)
def test_a_cluster_delivers_and_retries_a_429(
    receiver, callbacks_allowed, start_qcluster, workspace, editor
):
    """A real qcluster runs the export, posts its end, gets a 429, and delivers the retry
    its scheduler picks up (django-q2 looks at schedules every 30 s): at least 2 s later,
    the same signed document."""
    endpoint = receiver(429)
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=endpoint.url
    )
    start_qcluster(EXPORT_CALLBACK_HOSTS="127.0.0.1", EXPORT_CALLBACK_SECRET=SECRET)

    def delivered():
        job.refresh_from_db()
        return job.callback_state == "delivered"

    wait_for(delivered, timeout=120, what="the callback's retry to be delivered", every=0.5)
    (first_at, _, first), (retry_at, headers, body) = endpoint.received
    assert_signed(headers, body)
    assert body == first and json.loads(body)["state"] == "succeeded"
    assert retry_at - first_at >= 2  # the first backoff step is a floor, not a guess
    assert job.callback_attempts == 2
