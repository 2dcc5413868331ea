"""Following a job's events live: rows first, pushes only to wake up sooner.

SSE (exports/sse.py) and the admin's WebSocket (exports/consumers.py) both read this one
stream. It re-reads the rows after the last seq it sent whenever a push arrives, and at
least every EVENTS_POLL_SECONDS, so it works when the channel layer cannot reach across
processes (the in-memory default) and is instant when it can (Redis).
"""

import asyncio
import time
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings

from common.auth import read
from exports.jobs.events import TERMINAL_KINDS, group_name
from exports.models import Event, Job
from exports.selectors import events_after


def event_payload(event: Event) -> dict:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


async def job_events(jobs: type[Job], job_id, after: int) -> AsyncIterator[Event | None]:
    """Events with seq > after, in order, until a terminal one; None when a heartbeat is due."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(job_id), channel)
    try:
        quiet_since = time.monotonic()
        while True:
            for event in await read(lambda after=after: list(events_after(jobs, job_id, after))):
                after = event.seq
                quiet_since = time.monotonic()
                yield event
                if event.kind in TERMINAL_KINDS:
                    return
            if time.monotonic() - quiet_since >= settings.EVENTS_HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield None
            try:
                await asyncio.wait_for(layer.receive(channel), settings.EVENTS_POLL_SECONDS)
            except TimeoutError:
                pass
    finally:
        await layer.group_discard(group_name(job_id), channel)
