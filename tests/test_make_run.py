"""`make run` on a fresh var/ dir: the demo comes up and serves the admin and the schema."""

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.waiting import stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
SERVICE_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "Q_BROKER",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "FERRY_TEST_SERVICES",
    "DJANGO_SETTINGS_MODULE",
    # A fresh machine's terminal sets no key: the demo runs with DEBUG on and makes its own.
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def make_run(tmp_path):
    """`make run` in a process group of its own (as a terminal runs it), on a fresh var
    dir; its whole group is ended whatever the test did."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
        yield process, f"http://127.0.0.1:{port}", log, tmp_path / "var"
    finally:
        stop_process(process)


def server_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/admin/login/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.live
def test_make_run_serves_the_admin_and_the_schema(make_run):
    process, base, log, var = make_run
    password = wait_for(
        lambda: (
            (m := re.search(r"Superuser 'admin' created, password: (\S+)", log.read_text()))
            and m.group(1)
        ),
        timeout=120,
        what="the demo admin's password",
        explain=log.read_text,
    )
    wait_for(
        lambda: server_up(base) or process.poll() is not None,
        timeout=60,
        what="the ASGI server",
        explain=log.read_text,
    )
    assert process.poll() is None, log.read_text()
    assert len((var / "secret_key").read_text()) >= 50  # the demo's per-machine key

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
    wait_for(lambda: "running." in log.read_text(), timeout=60, what="the Q cluster")

    # Ctrl-C in the terminal: SIGINT to the whole group; the server and the cluster shut
    # down cleanly and nothing of the group is left.
    os.killpg(process.pid, signal.SIGINT)
    wait_for(
        lambda: process.poll() is not None and not group_alive(process.pid),
        timeout=30,
        what="make run's processes to exit on Ctrl-C",
        explain=log.read_text,
    )
    output = log.read_text()
    assert "Finished server process" in output, output
    assert re.search(r"Q Cluster \S+ has stopped", output), output
