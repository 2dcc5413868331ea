"""A follower worker: claims a download, runs it, and records how it ended. Any number of
them, in threads of one `sync_follow` or in several processes, share the download rows."""

import logging
import shutil
import threading

import httpx
from django.db import close_old_connections, connection

from filesync.client import Interrupted, SyncClient, SyncError

from . import mirror, services
from .models import Download, DownloadState, Leader

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.2


def run_download(client: SyncClient, download: Download, worker: str) -> str:
    """Fetch, verify and write one file. Returns how it ended. Partial blobs are kept only
    for a retry of the row to resume (after a failure, or a stop that gave the claim back)."""
    outcome = _attempt(client, download, worker)
    if outcome != DownloadState.PENDING:
        shutil.rmtree(mirror.staging(download), ignore_errors=True)
    return outcome


def _attempt(client: SyncClient, download: Download, worker: str) -> str:
    try:
        fetched = mirror.fetch(client, download.file_id)
        mirror.fetch_blobs(client, fetched, download, worker)
        mirror.write(fetched, download, worker)
    except services.ClaimLost:
        logger.info("download of %s: claim lost (cancelled or taken over)", download.file_id)
        return "lost"
    except Interrupted:  # the command is stopping: the next run resumes the row at once
        return services.give_back(download, worker)
    except mirror.Gone:
        services.cancel_gone(download, worker)
        return "gone"
    except mirror.Refused as error:
        return services.retry_later(download, worker, str(error), permanent=True)
    except (mirror.Retry, SyncError, httpx.HTTPError, OSError) as error:
        logger.info("download of %s will be retried: %s", download.file_id, error)
        return services.retry_later(download, worker, f"{type(error).__name__}: {error}")
    except Exception as error:  # a bug or a bad answer: recorded, the worker lives on
        logger.exception("download of %s failed unexpectedly", download.file_id)
        return services.retry_later(download, worker, f"{type(error).__name__}: {error}")
    return "done"


def work(leader: Leader, client: SyncClient, worker: str, stop: threading.Event) -> None:
    """Claim and run downloads until stopped. `client` gives up when `stop` is set (see
    SyncClient), so a download underway ends within a ranged piece of the stop."""
    try:
        while not stop.is_set():
            close_old_connections()
            download = services.claim(leader, worker)
            if download is None:
                stop.wait(IDLE_WAIT)
                continue
            run_download(client, download, worker)
    finally:
        connection.close()
