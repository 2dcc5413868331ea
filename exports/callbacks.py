"""Callbacks: when a job ends, POST its final state to the callback_url it was given.

Signed with HMAC-SHA256 (header `X-Ferry-Signature: sha256=<hex>` over the raw body), sent
only to hosts in EXPORT_CALLBACK_HOSTS (checked again at delivery), never following
redirects, retried with exponential backoff on connection errors, 429 and 5xx.
"""

import hashlib
import hmac
import json
import logging
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django_q.models import Schedule

from .models import ExportJob
from .selectors import describe_job

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
TIMEOUT_SECONDS = 10


def callback_secret() -> bytes:
    return (settings.EXPORT_CALLBACK_SECRET or settings.SECRET_KEY).encode()


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(callback_secret(), body, hashlib.sha256).hexdigest()


def deliver_callback(job_id) -> str:
    """One delivery attempt: 'delivered', 'retry' (scheduled), 'failed' or 'refused'."""
    job = ExportJob.objects.select_related("created_by").get(pk=job_id)
    if urlsplit(job.callback_url).hostname not in settings.EXPORT_CALLBACK_HOSTS:
        return _finish(job, "refused")
    body = json.dumps(describe_job(job), sort_keys=True).encode()
    ExportJob.objects.filter(pk=job.pk).update(callback_attempts=F("callback_attempts") + 1)
    attempt = job.callback_attempts + 1
    try:
        answer = httpx.post(
            job.callback_url,
            content=body,
            headers={"Content-Type": "application/json", "X-Ferry-Signature": signature(body)},
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
        transient = answer.status_code == 429 or answer.status_code >= 500
        if not transient:
            return _finish(job, "delivered" if answer.is_success else "failed")
    except httpx.HTTPError as error:
        logger.info("callback for export %s failed: %s", job.pk, error)
    if attempt >= MAX_ATTEMPTS:
        return _finish(job, "failed")
    Schedule.objects.create(
        name=f"export-callback-{job.pk}-{attempt}",
        func="exports.tasks.deliver_callback",
        args=repr(str(job.pk)),
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=timezone.now() + timedelta(seconds=2**attempt),
    )
    return "retry"


def _finish(job: ExportJob, outcome: str) -> str:
    ExportJob.objects.filter(pk=job.pk).update(callback_state=outcome)
    return outcome
