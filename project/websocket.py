"""The WebSocket answer for a path no consumer is routed to."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

#: The close code for an unknown path, as the job sockets close for an unknown job.
NOT_FOUND = 4404


class UnroutedConsumer(AsyncWebsocketConsumer):
    """Accepts, then closes with 4404: channels' URLRouter would raise on an unknown path
    (a 500 in the server's log), and a close before the handshake completes reaches the
    client as an HTTP 403 with no code."""

    async def connect(self):
        await self.accept()
        await self.close(code=NOT_FOUND)


#: Last in the WebSocket routes: matches any path the others did not.
unrouted = re_path(r"", UnroutedConsumer.as_asgi())
