"""The admin job pages' WebSocket: /ws/exports/<id>/ and /ws/imports/<id>/, the same
events as SSE."""

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from common.http import ascii_int

from .jobs.listening import event_payload
from .jobs.listening import job_events as follow
from .sse import VISIBLE

NOT_FOUND = 4404


class JobEventsConsumer(AsyncJsonWebsocketConsumer):
    kind = "export"

    async def connect(self):
        user = self.scope["user"]
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        jobs = VISIBLE[self.kind](user) if user.is_authenticated else None
        await self.accept()
        if jobs is None or not await database_sync_to_async(jobs.filter(pk=job_id).exists)():
            # Accepted first: a close before the handshake completes is an HTTP 403, and the
            # client would never see the code that tells it to stop trying.
            await self.close(code=NOT_FOUND)
            return
        after = _after(self.scope.get("query_string", b""))
        self.relay = asyncio.create_task(self._relay(jobs.model, job_id, after))

    async def _relay(self, jobs, job_id, after: int) -> None:
        async for event in follow(jobs, job_id, after):
            await self.send_json(event_payload(event) if event else {"kind": "heartbeat"})

    async def disconnect(self, code):
        if relay := getattr(self, "relay", None):
            relay.cancel()


class ImportEventsConsumer(JobEventsConsumer):
    kind = "import"


def _after(query: bytes) -> int:
    for part in query.decode().split("&"):
        key, _, value = part.partition("=")
        if key == "after" and (after := ascii_int(value)) is not None:
            return after
    return 0
