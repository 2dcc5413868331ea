"""Callbacks, as docs/api.md promises them: the final state POSTed as a Standard Webhook
(signed with the owner's webhook secret, verified here by the standardwebhooks library
unmodified), only to allowed hosts, connection errors, 429 and 5xx retried on the spec's
schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) or later if Retry-After asks, redirects
not followed.

The receivers are real HTTP servers on loopback, answering from a script.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.utils import timezone
from django_q.models import Schedule
from standardwebhooks import Webhook, WebhookVerificationError

from exports import services, tasks
from exports.models import ExportJob
from tests.conftest import free_port
from tests.exports.conftest import run_to_end
from tests.snapshot import store_state
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULE = [timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)]


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


@pytest.fixture
def secret(api_for, editor) -> str:
    """The editor's webhook secret, made as a user makes it: through the API, shown once."""
    response = api_for(editor).post("/api/webhook-secret/")
    assert response.status_code == 201, response.content
    return response.json()["secret"]


def finished_job(workspace, editor, url: str) -> ExportJob:
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=url, enqueue=False
    )
    return run_to_end(job)


def verified(secret: str, headers: dict, body: bytes) -> dict:
    """What a receiver does: the standardwebhooks library, unmodified, on what arrived."""
    assert headers["Content-Type"] == "application/json"
    assert "X-Ferry-Signature" not in headers
    return Webhook(secret).verify(body, headers)


def retries_of(job) -> list:
    return list(
        Schedule.objects.filter(func="exports.tasks.deliver_callback", args__contains=job.pk)
    )


@pytest.mark.parametrize("first", [429, (429, {"Retry-After": "1"}), 500, 503])
def test_the_final_state_is_posted_as_a_standard_webhook_and_a_transient_answer_retried(
    receiver, callbacks_allowed, secret, workspace, editor, first
):
    endpoint = receiver(first)
    job = finished_job(workspace, editor, endpoint.url)

    assert tasks.deliver_callback(str(job.pk)) == "retry"
    (retry,) = retries_of(job)
    assert retry.schedule_type == Schedule.ONCE and retry.repeats == 1
    assert tasks.deliver_callback(str(job.pk)) == "delivered"

    (_, first_headers, first_body), (_, headers, body) = endpoint.received
    assert verified(secret, first_headers, first_body) == verified(secret, headers, body)
    assert first_body == body  # the same document, resent
    assert headers["webhook-id"] == first_headers["webhook-id"] == f"msg_{job.pk.hex}"
    document = json.loads(body)
    job.refresh_from_db()
    assert document["state"] == "succeeded" and document["id"] == str(job.pk)
    assert document["artifact"]["sha256"] == job.artifact_sha256
    assert (job.callback_state, job.callback_attempts) == ("delivered", 2)
    assert job.callback_next_attempt_at is None


def test_a_replayed_delivery_fails_verification_once_its_timestamp_is_old(
    receiver, callbacks_allowed, secret, workspace, editor
):
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "delivered"
    ((_, headers, body),) = endpoint.received
    verified(secret, headers, body)

    sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    with time_machine.travel(sent_at + timedelta(minutes=6), tick=False):
        with pytest.raises(WebhookVerificationError, match="too old"):
            Webhook(secret).verify(body, headers)
    # Nor can the replayer freshen the timestamp: it is signed.
    restamped = {**headers, "webhook-timestamp": str(int(sent_at.timestamp()) + 60)}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(body, restamped)


def test_a_tampered_body_or_another_key_fails_verification(
    receiver, callbacks_allowed, secret, workspace, editor, api_for, viewer
):
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "delivered"
    ((_, headers, body),) = endpoint.received

    tampered = body.replace(b'"succeeded"', b'"failed"')
    assert tampered != body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered, headers)
    someone_elses = api_for(viewer).post("/api/webhook-secret/").json()["secret"]
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(someone_elses).verify(body, headers)


def test_a_rotated_secret_signs_the_next_attempt(
    receiver, callbacks_allowed, secret, workspace, editor, api_for
):
    endpoint = receiver(503)
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "retry"
    rotated = api_for(editor).post("/api/webhook-secret/").json()["secret"]
    assert tasks.deliver_callback(str(job.pk)) == "delivered"

    _, (_, headers, body) = endpoint.received
    verified(rotated, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_transient_failures_back_off_on_the_standard_schedule_then_give_up_after_eight(
    receiver, callbacks_allowed, secret, workspace, editor, api_for
):
    endpoint = receiver(429, 503, 500, 504, 502, 500, 503, 500, 204)
    job = finished_job(workspace, editor, endpoint.url)
    client = api_for(editor)

    for attempt, delay in enumerate(SCHEDULE, start=1):
        before = timezone.now()
        assert tasks.deliver_callback(str(job.pk)) == "retry"
        after = timezone.now()
        retry = Schedule.objects.get(name=f"export-callback-{job.pk}-{attempt}")
        assert before + delay <= retry.next_run <= after + delay, (attempt, retry.next_run)
        callback = client.get(f"/api/exports/{job.pk}/").json()["callback"]
        assert callback == {
            "url": endpoint.url,
            "state": "pending",
            "attempts": attempt,
            "next_attempt_at": retry.next_run.isoformat(),
        }
    assert tasks.deliver_callback(str(job.pk)) == "failed"

    assert len(endpoint.received) == 8 and endpoint.script == [204]  # the ninth never asked
    assert len({headers["webhook-id"] for _, headers, _ in endpoint.received}) == 1
    assert len(retries_of(job)) == 7
    callback = client.get(f"/api/exports/{job.pk}/").json()["callback"]
    assert (callback["state"], callback["attempts"], callback["next_attempt_at"]) == (
        "failed",
        8,
        None,
    )


@pytest.mark.parametrize(
    "asked, wait",
    [
        ("120", timedelta(seconds=120)),  # longer than the schedule's 5 s: obeyed
        ("1", timedelta(seconds=5)),  # sooner than the schedule: the schedule stands
        ("999999", timedelta(hours=10)),  # past the bound: the bound
        ("soon", timedelta(seconds=5)),  # unreadable: the schedule
    ],
)
def test_retry_after_is_honoured_within_bounds(
    receiver, callbacks_allowed, secret, workspace, editor, asked, wait
):
    endpoint = receiver((429, {"Retry-After": asked}))
    job = finished_job(workspace, editor, endpoint.url)
    before = timezone.now()
    assert tasks.deliver_callback(str(job.pk)) == "retry"
    after = timezone.now()
    (retry,) = retries_of(job)
    assert before + wait <= retry.next_run <= after + wait


def test_retry_after_as_an_http_date_is_honoured(
    receiver, callbacks_allowed, secret, workspace, editor
):
    asked = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    endpoint = receiver((503, {"Retry-After": format_datetime(asked, usegmt=True)}))
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "retry"
    (retry,) = retries_of(job)
    assert abs(retry.next_run - asked) < timedelta(seconds=1)


def test_a_connection_error_is_retried(callbacks_allowed, secret, workspace, editor):
    job = finished_job(workspace, editor, f"http://127.0.0.1:{free_port()}/nobody-listens")
    assert tasks.deliver_callback(str(job.pk)) == "retry"
    (retry,) = retries_of(job)
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("", 1)
    assert job.callback_next_attempt_at == retry.next_run


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_refusal_is_final(receiver, callbacks_allowed, secret, workspace, editor, status):
    endpoint = receiver(status)
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "failed"
    assert len(endpoint.received) == 1 and retries_of(job) == []
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("failed", 1)


def test_a_task_run_again_after_delivery_sends_nothing(
    receiver, callbacks_allowed, secret, workspace, editor
):
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "delivered"
    assert tasks.deliver_callback(str(job.pk)) == "delivered"
    assert len(endpoint.received) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(receiver, callbacks_allowed, secret, workspace, editor, status):
    elsewhere = receiver()
    endpoint = receiver((status, {"Location": elsewhere.url}))
    job = finished_job(workspace, editor, endpoint.url)
    assert tasks.deliver_callback(str(job.pk)) == "failed"
    assert len(endpoint.received) == 1 and elsewhere.received == []
    assert retries_of(job) == []


def test_callbacks_go_only_to_allowed_hosts(
    receiver, callbacks_allowed, secret, workspace, settings, editor
):
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    settings.EXPORT_CALLBACK_HOSTS = ["hooks.example.com"]  # the allow-list changed since
    assert tasks.deliver_callback(str(job.pk)) == "refused"
    assert endpoint.received == [] and retries_of(job) == []
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("refused", 0)


def test_a_job_whose_owner_is_gone_is_not_sent(
    receiver, callbacks_allowed, secret, workspace, editor
):
    """No owner, no secret to sign with: nothing goes out unsigned."""
    endpoint = receiver()
    job = finished_job(workspace, editor, endpoint.url)
    editor.delete()
    assert tasks.deliver_callback(str(job.pk)) == "refused"
    assert endpoint.received == []
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("refused", 0)


def test_an_export_with_a_callback_is_refused_to_a_user_without_a_secret(
    callbacks_allowed, workspace, api_for, editor
):
    client = api_for(editor)
    before = store_state()
    response = client.post(
        "/api/exports/",
        {"project": str(workspace.project.id), "callback_url": "http://127.0.0.1:9/hook"},
        format="json",
    )
    assert response.status_code == 400, response.content
    (message,) = response.json()["callback_url"]
    assert "POST /api/webhook-secret/" in message and "manage.py webhook_secret" in message
    assert store_state() == before


def test_a_callback_is_queued_when_the_job_ends(workspace, callbacks_allowed, secret, editor):
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
    receiver, callbacks_allowed, secret, start_qcluster, workspace, editor
):
    """A real qcluster runs the export, posts its end, gets a 429, and delivers the retry
    its scheduler picks up (django-q2 looks at schedules every 30 s): at least 5 s later,
    the same document, signed anew."""
    endpoint = receiver(429)
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=endpoint.url
    )
    start_qcluster(EXPORT_CALLBACK_HOSTS="127.0.0.1")

    def delivered():
        job.refresh_from_db()
        return job.callback_state == "delivered"

    wait_for(delivered, timeout=120, what="the callback's retry to be delivered", every=0.5)
    (first_at, _, first), (retry_at, headers, body) = endpoint.received
    assert verified(secret, headers, body)["state"] == "succeeded"
    assert body == first
    assert retry_at - first_at >= 5  # the first backoff step is a floor, not a guess
    assert job.callback_attempts == 2
