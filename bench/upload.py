"""Upload memory benchmark: server peak RSS while a large media file goes through the API.

Requirement: "Uploading a 200 MB media file through the API keeps the server's peak
memory under 100 MB above its idle level". Media must stream (ASGI body -> spooled
temporary file -> multipart parser -> temporary upload file -> blob store), never sit in
memory whole; this script checks that end to end against the real ASGI server.

It makes a throw-away var dir, migrates, creates a user, team, project and file, starts
uvicorn on a free loopback port, warms it up with a 1 MB upload, reads the server's idle
VmHWM/VmRSS from /proc, uploads a --mb MB file of random bytes (httpx streams the open
file in chunks), checks the returned blob sha256 and reads VmHWM again.

By default it runs on the embedded default (SQLite, filesystem storage): DATABASE_URL,
REDIS_URL, Q_BROKER and AWS_* are dropped from the environment unless --keep-env is given.

    .venv/bin/python bench/upload.py --mb 200
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import free_port, memory, write_payload

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BUDGET_MB = 100
DROPPED_ENV = ("DATABASE_URL", "REDIS_URL", "Q_BROKER")

SETUP_SNIPPET = """
from django.contrib.auth import get_user_model
from filesync import services
user = get_user_model().objects.create_user("bench", password=None)
team = services.create_team(name="Bench", owner=user)
project = services.create_project(team=team, name="Bench")
print(services.create_file(project=project, name="Upload bench").pk)
"""


def bench_env(var_dir: Path, keep_env: bool) -> dict[str, str]:
    env = dict(os.environ, FERRY_VAR_DIR=str(var_dir))
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))  # DEBUG is off
    if not keep_env:
        for name in list(env):
            if name in DROPPED_ENV or name.startswith("AWS_"):
                del env[name]
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run manage.py with `args`; return its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def setup_data(env: dict[str, str]) -> tuple[str, str]:
    """Migrate and create the user, team, project and file; return (file id, token)."""
    manage(env, "migrate", "--noinput", "-v0")
    file_id = manage(env, "shell", "-c", SETUP_SNIPPET).strip().splitlines()[-1]
    token = re.search(r"Generated token (\w+)", manage(env, "drf_create_token", "bench"))
    if token is None:
        raise RuntimeError("drf_create_token printed no key")
    return file_id, token.group(1)


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """Start uvicorn and wait until it answers. With one worker uvicorn serves in its own
    process (no supervisor), so the Popen's pid is the process whose memory we read."""
    command = [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("server did not answer within 30 s")


def read_floor_seconds(path: Path) -> float:
    """Time `cat path > /dev/null` done in Python: 1 MiB reads, written to /dev/null."""
    start = time.perf_counter()
    with path.open("rb") as source, open(os.devnull, "wb") as sink:
        while chunk := source.read(MIB):
            sink.write(chunk)
    return time.perf_counter() - start


def upload(client: httpx.Client, file_id: str, path: Path) -> dict:
    """POST the file as multipart field `upload`; httpx streams the open file."""
    with path.open("rb") as payload:
        response = client.post(
            f"/api/files/{file_id}/media/",
            files={"upload": (path.name, payload, "application/octet-stream")},
        )
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
    return response.json()


def run(mb: int, keep_env: bool) -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    server: subprocess.Popen | None = None
    try:
        env = bench_env(var_dir, keep_env)
        file_id, token = setup_data(env)
        port = free_port()
        server = start_server(env, port, var_dir / "server.log")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Token {token}"},
            timeout=600,
        )

        warmup = var_dir / "warmup.bin"
        write_payload(warmup, 1)
        upload(client, file_id, warmup)
        idle = memory(server.pid)

        payload = var_dir / "payload.bin"
        expected = write_payload(payload, mb)
        floor_s = read_floor_seconds(payload)
        start = time.perf_counter()
        media = upload(client, file_id, payload)
        upload_s = time.perf_counter() - start
        after = memory(server.pid)
        client.close()

        sha_ok = media["blob"]["sha256"] == expected
        delta = after["VmHWM"] - idle["VmHWM"]
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MiB
        rows = [
            ("payload", f"{mb} MB"),
            ("upload wall time", f"{upload_s:.2f} s ({mb / upload_s:.0f} MB/s)"),
            ("floor (read file)", f"{floor_s:.3f} s ({mb / floor_s:.0f} MB/s)"),
            ("upload / floor", f"{upload_s / floor_s:.1f}x the floor's time"),
            ("server idle VmHWM / VmRSS", f"{idle['VmHWM']:.1f} / {idle['VmRSS']:.1f} MB"),
            ("server after VmHWM / VmRSS", f"{after['VmHWM']:.1f} / {after['VmRSS']:.1f} MB"),
            ("server peak delta", f"{delta:.1f} MB (budget {BUDGET_MB} MB)"),
            ("  delta vs idle VmRSS", f"{after['VmHWM'] - idle['VmRSS']:.1f} MB (stricter)"),
            ("memory", "PASS" if delta < BUDGET_MB else "FAIL"),
            ("blob sha256", "ok" if sha_ok else f"MISMATCH: {media['blob']['sha256']}"),
            ("client peak RSS", f"{client_peak:.1f} MB"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        return 0 if sha_ok else 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(var_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="payload size in MiB (default 200)")
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help="keep DATABASE_URL, REDIS_URL, Q_BROKER and AWS_* (default: embedded)",
    )
    args = parser.parse_args()
    return run(args.mb, args.keep_env)


if __name__ == "__main__":
    sys.exit(main())
