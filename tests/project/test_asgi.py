"""The ASGI app as uvicorn serves it (DEBUG off): unrouted WebSocket paths close with
4404, unrouted API paths answer JSON."""

import httpx
import pytest

from tests.exports.test_events_live import refused
from tests.waiting import patience

pytestmark = [pytest.mark.live]


def test_an_unrouted_websocket_path_is_closed_with_4404(asgi_server, tmp_path):
    url = asgi_server.replace("http://", "ws://")
    for path in ("/ws/nothing/", "/", "/ws/exports/not-a-uuid/"):
        assert refused(f"{url}{path}", {"Origin": asgi_server}) == 4404
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log and "No route found" not in log, log


def test_an_unrouted_api_path_answers_json_from_the_server(asgi_server):
    response = httpx.get(f"{asgi_server}/api/no/such/route/", timeout=patience(10))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
