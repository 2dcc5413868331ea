"""The ASGI app as uvicorn serves it (DEBUG off): unrouted WebSocket paths close with
4404, unrouted API paths answer JSON."""

import asyncio

import httpx
import pytest
import websockets

from tests.waiting import patience

pytestmark = [pytest.mark.live]


def close_code(url: str, origin: str) -> int:
    """The close code the server ends the connection with (an HTTP status if the
    handshake was refused)."""

    async def attempt() -> int:
        try:
            async with websockets.connect(url, additional_headers={"Origin": origin}) as socket:
                await asyncio.wait_for(socket.recv(), patience(30))
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else -1
        except websockets.InvalidStatus as status:
            return status.response.status_code
        return 0

    return asyncio.run(attempt())


def test_an_unrouted_websocket_path_is_closed_with_4404(asgi_server, tmp_path):
    url = asgi_server.replace("http://", "ws://")
    for path in ("/ws/nothing/", "/", "/ws/exports/not-a-uuid/"):
        assert close_code(f"{url}{path}", asgi_server) == 4404
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log and "No route found" not in log, log


def test_an_unrouted_api_path_answers_json_from_the_server(asgi_server):
    response = httpx.get(f"{asgi_server}/api/no/such/route/", timeout=patience(10))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
