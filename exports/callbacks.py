"""Callbacks: when an export ends, POST its final state to the callback_url it was given.

Signed as Standard Webhooks sign (`webhook-id`, `webhook-timestamp`, `webhook-signature`
v1 over "id.timestamp.body", with the job owner's webhook secret), so a receiver verifies
with the standardwebhooks library of its language and rejects replays by the timestamp.
Sent only to hosts in EXPORT_CALLBACK_HOSTS (checked again at each attempt), never
following redirects. Connection errors, timeouts, 429 and 5xx are retried on the
schedule the spec recommends, through django-q2 schedules, so a receiver may be down
for hours without losing the delivery.
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django_q.models import Schedule
from standardwebhooks import Webhook

from .models import ExportJob
from .selectors import describe_job, webhook_secret_for

logger = logging.getLogger(__name__)

#: The waits before each retry: the Standard Webhooks recommendation (an attempt at once,
#: then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h), about 27.5 h in all.
RETRY_DELAYS = tuple(
    timedelta(seconds=s) for s in (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
#: The longest Retry-After obeyed: a receiver cannot park a delivery for days.
RETRY_AFTER_LIMIT = timedelta(hours=10)
TIMEOUT_SECONDS = 10
#: Outcomes after which no attempt follows.
FINAL_STATES = ("delivered", "failed", "refused")


def webhook_id(job: ExportJob) -> str:
    """The same for every attempt of a job's callback: receivers deduplicate by it."""
    return f"msg_{job.pk.hex}"


def signed_headers(secret: str, job: ExportJob, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for one attempt: signed anew, with the attempt's time."""
    message_id, sent_at = webhook_id(job), datetime.now(UTC).replace(microsecond=0)
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, sent_at, body.decode()),
    }


def deliver_callback(job_id) -> str:
    """One delivery attempt: 'delivered', 'retry' (scheduled), 'failed' or 'refused'.

    A task that runs again after its callback ended (django-q2 delivers tasks at least
    once) sends nothing more."""
    job = ExportJob.objects.select_related("created_by").get(pk=job_id)
    if job.callback_state in FINAL_STATES:
        return job.callback_state
    if urlsplit(job.callback_url).hostname not in settings.EXPORT_CALLBACK_HOSTS:
        return _finish(job, "refused")
    secret = webhook_secret_for(job.created_by)
    if secret is None:
        logger.warning("callback for export %s refused: its owner has no webhook secret", job.pk)
        return _finish(job, "refused")
    body = json.dumps(describe_job(job), sort_keys=True).encode()
    ExportJob.objects.filter(pk=job.pk).update(
        callback_attempts=F("callback_attempts") + 1, callback_next_attempt_at=None
    )
    attempt = job.callback_attempts + 1
    asked = None
    try:
        answer = httpx.post(
            job.callback_url,
            content=body,
            headers=signed_headers(secret.secret, job, body),
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
        if not (answer.status_code == 429 or answer.status_code >= 500):
            return _finish(job, "delivered" if answer.is_success else "failed")
        asked = retry_after(answer)
    except httpx.HTTPError as error:
        logger.info("callback for export %s failed: %s", job.pk, error)
    if attempt >= MAX_ATTEMPTS:
        return _finish(job, "failed")
    wait = max(RETRY_DELAYS[attempt - 1], min(asked or timedelta(0), RETRY_AFTER_LIMIT))
    _schedule_retry(job, attempt, timezone.now() + wait)
    return "retry"


def retry_after(answer: httpx.Response) -> timedelta | None:
    """The wait a 429 or 503 asks for (seconds or an HTTP date); None if absent or unreadable."""
    value = answer.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(when - timezone.now(), timedelta(0))


def _schedule_retry(job: ExportJob, attempt: int, at: datetime) -> None:
    Schedule.objects.create(
        name=f"export-callback-{job.pk}-{attempt}",
        func="exports.tasks.deliver_callback",
        args=repr(str(job.pk)),
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=at,
    )
    ExportJob.objects.filter(pk=job.pk).update(callback_next_attempt_at=at)


def _finish(job: ExportJob, outcome: str) -> str:
    ExportJob.objects.filter(pk=job.pk).update(callback_state=outcome)
    return outcome
