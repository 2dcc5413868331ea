"""`make run` on a fresh var/ dir: the demo comes up and serves the admin and the schema."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "Q_BROKER",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "FERRY_TEST_SERVICES",
    "DJANGO_SETTINGS_MODULE",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def make_run(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["FERRY_VAR_DIR"] = str(tmp_path / "var")
    log = tmp_path / "make-run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
        try:
            process.wait(timeout=30)
        finally:
            os.killpg(process.pid, signal.SIGKILL)


def server_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/admin/login/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.live
def test_make_run_serves_the_admin_and_the_schema(make_run):
    base, log = make_run
    password = wait_for(
        lambda: (
            (m := re.search(r"Superuser 'admin' created, password: (\S+)", log.read_text()))
            and m.group(1)
        ),
        timeout=120,
        what="the demo admin's password",
    )
    wait_for(lambda: server_up(base), timeout=60, what="the ASGI server")

    with httpx.Client(base_url=base, follow_redirects=True, timeout=10) as browser:
        login = browser.get("/admin/login/")
        token = browser.cookies["csrftoken"]
        assert 'name="csrfmiddlewaretoken"' in login.text
        refused = browser.post("/admin/login/", data={"username": "admin", "password": password})
        assert refused.status_code == 403
        admin = browser.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
        )
        assert admin.status_code == 200
        assert "Site administration" in admin.text
        assert "Document store" in admin.text
        css = browser.get("/static/admin/css/base.css")
        assert css.status_code == 200 and "body" in css.text
        files = browser.get("/api/files/").json()
        assert files["count"] == 14
        schema = browser.get("/api/schema/")
        assert schema.status_code == 200 and "openapi" in schema.text
    assert "Q Cluster" in log.read_text() and "running." in log.read_text()
