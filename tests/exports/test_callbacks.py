import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django_q.models import Schedule

from exports import services
from exports.callbacks import deliver_callback
from exports.models import ExportJob
from tests.exports.conftest import run_to_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    """A local HTTP endpoint that fails its first request with a 503, then accepts."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(503 if len(received) == 1 else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_the_final_state_is_posted_signed_and_retried(receiver, workspace, settings, editor):
    url, received = receiver
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    settings.EXPORT_CALLBACK_SECRET = "s3cret"
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=url, enqueue=False
    )
    run_to_end(job)

    assert deliver_callback(job.pk) == "retry"
    retry = Schedule.objects.get(func="exports.tasks.deliver_callback")
    assert retry.schedule_type == Schedule.ONCE and str(job.pk) in retry.args
    assert deliver_callback(job.pk) == "delivered"

    headers, body = received[-1]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Ferry-Signature"] == f"sha256={expected}"
    document = json.loads(body)
    assert document["state"] == "succeeded"
    assert document["artifact"]["sha256"] == ExportJob.objects.get(pk=job.pk).artifact_sha256
    job.refresh_from_db()
    assert (job.callback_state, job.callback_attempts) == ("delivered", 2)


def test_callbacks_go_only_to_allowed_hosts(receiver, workspace, settings, editor):
    url, received = receiver
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url=url, enqueue=False
    )
    settings.EXPORT_CALLBACK_HOSTS = ["hooks.example.com"]  # the allow-list changed since
    assert deliver_callback(job.pk) == "refused"
    assert received == []


def test_a_callback_is_queued_when_the_job_ends(workspace, settings, editor):
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    broker.purge_queue()
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url="http://127.0.0.1:9/x", enqueue=False
    )
    assert broker.queue_size() == 0
    run_to_end(job)
    (task,) = [SignedPackage.loads(payload) for _, payload in broker.dequeue()]
    assert task["func"] == "exports.tasks.deliver_callback" and task["args"] == (str(job.pk),)
