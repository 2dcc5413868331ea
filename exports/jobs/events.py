"""Job events: a row first (the truth), then a Channels wake-up (a hint).

A listener that missed a push, or that lives in another process than the in-memory
channel layer, catches up by reading the rows after the last `seq` it saw.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from exports.jobs.queue import enqueue_callback
from exports.models import Event, EventKind, Job

TERMINAL_KINDS = {EventKind.END, EventKind.ERROR, EventKind.CANCELLED}

logger = logging.getLogger(__name__)


def group_name(job_id) -> str:
    return f"job-{job_id}"


def record_event(job: Job, kind: str, data: dict | None = None) -> Event:
    """Append to an export's or an import's trail (`job` needs only its pk and class)."""
    jobs, job_id = type(job), job.pk
    with transaction.atomic():
        jobs.objects.filter(pk=job_id).update(event_seq=F("event_seq") + 1)
        seq = jobs.objects.values_list("event_seq", flat=True).get(pk=job_id)
        event = job.events.create(seq=seq, kind=kind, data=data or {})
        transaction.on_commit(lambda: _push(job_id, seq, kind))
        if kind in TERMINAL_KINDS and getattr(job, "callback_url", ""):
            transaction.on_commit(lambda: enqueue_callback(job_id))
    return event


def _push(job_id, seq: int, kind: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            group_name(job_id), {"type": "job.event", "seq": seq, "kind": kind}
        )
    except Exception:  # a lost hint costs latency, never correctness
        logger.warning("could not push event %s of job %s", seq, job_id, exc_info=True)
