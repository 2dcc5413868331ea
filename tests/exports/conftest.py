import io
import subprocess
import sys
import zipfile

import pytest
from django.core.files.storage import storages

from exports.binfile.reader import BinfileReader
from exports.exporting.engine import run_tick
from exports.models import ExportJob
from tests.conftest import ROOT
from tests.waiting import stop_process, wait_for


@pytest.fixture(autouse=True)
def small_parts(settings):
    """Small parts so that exports of small workspaces still span several (S3 keeps 5 MiB)."""
    settings.EXPORT_PART_SIZE = 256 * 1024
    settings.EXPORT_PROGRESS_INTERVAL = 0


def run_to_end(job, *, tick_seconds=None, max_ticks=1000) -> ExportJob:
    """Run ticks inline, as a worker would, until the job ends."""
    for _ in range(max_ticks):
        outcome = run_tick(job.pk, worker="test-worker", tick_seconds=tick_seconds)
        if outcome != "running":
            break
    job.refresh_from_db()
    return job


def artifact_bytes(job) -> bytes:
    with storages["exports"].open(job.artifact_name, "rb") as artifact:
        return artifact.read()


def read_archive(job) -> tuple[BinfileReader, zipfile.ZipFile]:
    data = artifact_bytes(job)
    reader = BinfileReader(io.BytesIO(data))
    reader.verify()
    return reader, zipfile.ZipFile(io.BytesIO(data))


@pytest.fixture
def start_qcluster(live_env, tmp_path):
    """Start `manage.py qcluster` on this test's database and storages (one worker, 64 KiB
    parts: a checkpoint and a progress event every few entries; S3 keeps its 5 MiB) in a
    process group of its own; `start(**env)` returns once it runs. Every cluster started
    is stopped at teardown, whatever the test did."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(**env: str) -> subprocess.Popen:
        log_path = tmp_path / f"qcluster-{len(started)}.log"
        log = log_path.open("w")
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env={
                **live_env,
                "Q_WORKERS": "1",
                "EXPORT_PART_SIZE": str(64 * 1024),
                "EXPORT_PROGRESS_INTERVAL": "0",
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append((cluster, log))
        wait_for(
            lambda: "running." in log_path.read_text() or cluster.poll() is not None,
            timeout=60,
            what="qcluster to start",
            explain=log_path.read_text,
        )
        assert cluster.poll() is None, log_path.read_text()
        return cluster

    try:
        yield start
    finally:
        for cluster, log in started:
            stop_process(cluster)
            log.close()
