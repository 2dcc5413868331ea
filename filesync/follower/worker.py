"""A follower worker: claims a download, runs it, and records how it ended. Any number of
them, in threads of one `sync_follow` or in several processes, share the download rows."""

import logging
import shutil
import threading

import httpx
from django.db import close_old_connections, connection

from common.leases import LeaseLost
from filesync.client import Interrupted, SyncClient, SyncError

from . import mirror, services
from .models import DownloadState, Leader
from .selectors import is_downloading

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.2


def run_download(client: SyncClient, claim: services.Claim) -> str:
    """Fetch, verify and write one file. Returns how it ended. Partial blobs are kept only
    for a retry of the row to resume (after a failure, or a stop that gave the claim back),
    and, after a lost claim, for the claim that took the row over: they are its now."""
    outcome = _attempt(client, claim)
    taken_over = outcome == services.LOST and is_downloading(claim.download)
    if outcome != DownloadState.PENDING and not taken_over:
        shutil.rmtree(mirror.staging(claim.download), ignore_errors=True)
    return outcome


def _attempt(client: SyncClient, claim: services.Claim) -> str:
    download, lease = claim.download, claim.lease
    try:
        fetched = mirror.fetch(client, download.file_id)
        mirror.fetch_blobs(client, fetched, claim)
        mirror.write(fetched, lease)
    except LeaseLost:
        logger.info("download of %s: claim lost (cancelled or taken over)", download.file_id)
        return services.LOST
    except Interrupted:  # the command is stopping: the next run resumes the row at once
        return services.give_back(lease)
    except mirror.Gone:
        return services.cancel_gone(lease)
    except mirror.Refused as error:
        return services.retry_later(lease, str(error), permanent=True)
    except (mirror.Retry, SyncError, httpx.HTTPError, OSError) as error:
        logger.info("download of %s will be retried: %s", download.file_id, error)
        return services.retry_later(lease, f"{type(error).__name__}: {error}")
    except Exception as error:  # a bug or a bad answer: recorded, the worker lives on
        logger.exception("download of %s failed unexpectedly", download.file_id)
        return services.retry_later(lease, f"{type(error).__name__}: {error}")
    return "done"


def work(leader: Leader, client: SyncClient, worker: str, stop: threading.Event) -> None:
    """Claim and run downloads until stopped. `client` gives up when `stop` is set (see
    SyncClient), so a download underway ends within a ranged piece of the stop."""
    try:
        while not stop.is_set():
            close_old_connections()
            claim = services.claim(leader, worker)
            if claim is None:
                stop.wait(IDLE_WAIT)
                continue
            run_download(client, claim)
    finally:
        connection.close()
