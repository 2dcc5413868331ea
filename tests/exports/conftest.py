import io
import zipfile

import pytest
from django.core.files.storage import storages

from exports.binfile.reader import BinfileReader
from exports.engine import run_tick
from exports.models import ExportJob


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
