"""Event latency, worker to SSE client: how long after a job event's row is written does
an API client following /api/exports/<id>/events receive it.

Runs a real uvicorn server, a real qcluster worker, and an SSE client (httpx), twice in
one run: on the embedded default (in-memory channel layer: the server catches up from the
rows) and with REDIS_URL (channels-redis pushes).

    python bench/events.py
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import httpx
from _harness import ROOT, Ferry, free_port, table

PYTHON = sys.executable


def start(args, env) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def measure(label: str, redis_url: str | None) -> dict:
    ferry = Ferry()
    if redis_url:
        ferry.env.update(REDIS_URL=redis_url)
    ferry.env.update(EXPORT_PROGRESS_INTERVAL="0.05", EXPORT_PART_SIZE=str(1 << 20), Q_WORKERS="1")
    processes = []
    try:
        ferry.manage("migrate", "-v0")
        ferry.manage(
            "shell",
            "-v0",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('bench')",
        )
        project = ferry.manage(
            "seed_demo",
            "-v0",
            "--files",
            "10",
            "--pages",
            "3",
            "--objects",
            "50",
            "--media-mb",
            "500",
            "--owner",
            "bench",
        )[0].split()[-1]
        token = ferry.manage("drf_create_token", "bench")[0].split()[2]
        port = free_port()
        processes.append(
            start(
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "project.asgi:application",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                ferry.env,
            )
        )
        processes.append(start([PYTHON, "manage.py", "qcluster"], ferry.env))
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Token {token}"}
        answer = httpx.post(f"{base}/api/exports/", json={"project": project}, headers=headers)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        received: dict[int, float] = {}

        def follow():
            with httpx.stream(
                "GET", f"{base}/api/exports/{job_id}/events", headers=headers, timeout=300
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("id:"):
                        received[int(line[3:])] = time.time()

        connected = time.time()
        listener = threading.Thread(target=follow)
        listener.start()
        listener.join(timeout=300)
        rows = json.loads(
            ferry.manage(
                "shell",
                "-v0",
                "-c",
                "import json; from exports.models import JobEvent; print(json.dumps({e.seq: "
                f"e.created_at.timestamp() for e in JobEvent.objects.filter(job_id='{job_id}')}}))",
            )[0]
        )
        latencies = [
            (received[int(seq)] - created) * 1000
            for seq, created in rows.items()
            if int(seq) in received and created > connected + 0.5
        ]
        latencies.sort()
        return {
            "label": label,
            "events": len(latencies),
            "median": statistics.median(latencies),
            "p95": latencies[int(len(latencies) * 0.95) - 1],
            "max": latencies[-1],
        }
    finally:
        for process in processes:
            os.killpg(process.pid, 9)
        ferry.remove()


def main() -> None:
    results = [
        measure("embedded (in-memory layer, rows)", None),
        measure(
            "Redis (channels-redis)", os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
        ),
    ]
    print(
        table(
            [("configuration", "events", "median ms", "p95 ms", "max ms")]
            + [
                (
                    r["label"],
                    r["events"],
                    f"{r['median']:.0f}",
                    f"{r['p95']:.0f}",
                    f"{r['max']:.0f}",
                )
                for r in results
            ]
        )
    )
    print("goal: median < 1500 ms embedded, < 300 ms with Redis")


if __name__ == "__main__":
    main()
