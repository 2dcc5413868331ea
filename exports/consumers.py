"""The admin job page's WebSocket: /ws/exports/<id>/, the same events as SSE."""

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .listening import event_payload
from .listening import job_events as follow
from .selectors import jobs_for

NOT_FOUND = 4404


class JobEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope["user"]
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        if (
            not user.is_authenticated
            or not await database_sync_to_async(jobs_for(user).filter(pk=job_id).exists)()
        ):
            await self.close(code=NOT_FOUND)
            return
        await self.accept()
        after = _after(self.scope.get("query_string", b""))
        self.relay = asyncio.create_task(self._relay(job_id, after))

    async def _relay(self, job_id, after: int) -> None:
        async for event in follow(job_id, after):
            await self.send_json(event_payload(event) if event else {"kind": "heartbeat"})

    async def disconnect(self, code):
        if relay := getattr(self, "relay", None):
            relay.cancel()


def _after(query: bytes) -> int:
    for part in query.decode().split("&"):
        key, _, value = part.partition("=")
        if key == "after" and value.isdigit():
            return int(value)
    return 0
