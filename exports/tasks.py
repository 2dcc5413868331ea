"""django-q2 entry points. Thin: each calls the engine or a service."""

import os
import socket
import uuid

from . import callbacks, services
from .exporting.engine import run_tick
from .exporting.preserved import release_preserved
from .importing import engine as importer
from .jobs.queue import enqueue_export


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_export(job_id: str) -> str:
    return run_tick(job_id, worker=_worker(), requeue=enqueue_export)


def run_import(job_id: str) -> str:
    return importer.run_import(job_id, worker=_worker())


def maintain() -> dict:
    """Scheduled every minute: resume stalled jobs, expire artifacts, drop abandoned parts,
    uploaded archives and the preserved revisions no active export reads."""
    return {
        "requeued": len(services.requeue_stalled_jobs()),
        "expired": services.expire_artifacts(),
        "abandoned_parts_removed": services.remove_abandoned_parts(),
        "abandoned_imports_removed": services.remove_abandoned_imports(),
        "preserved_released": release_preserved(),
    }


def deliver_callback(job_id: str) -> str:
    return callbacks.deliver_callback(job_id)
