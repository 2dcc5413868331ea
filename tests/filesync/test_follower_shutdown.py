"""`sync_follow` against a real leader: stopped by SIGINT or SIGTERM whatever it is doing (a
long poll of the feed, a retry's wait, a ranged download, a read that never ends), it exits
0 within a bound, saying so, and the next run takes up at once what it gave back; several
processes on one database; a file read torn by a change underway is fetched again.

The leader, its proxy and the follower runs are those of test_follower_live.py, on a small
leader of this module's own.
"""

import re
import signal
from pathlib import Path

import pytest

from filesync.follower.models import Download, DownloadState
from filesync.follower.selectors import is_idle
from filesync.models import Change, File
from tests.filesync import test_follower_live as live
from tests.filesync.test_follower_live import (
    MIB,
    assert_mirrored,
    leader_row,
    serving_leader,
    stored_sha256,
)
from tests.waiting import patience, wait_for

follower, proxy_to = live.follower, live.proxy_to  # their `leader` is this module's

pytestmark = pytest.mark.live

SEED = ("--files", "3", "--pages", "2", "--objects", "10", "--media-mb", "1", "--libraries", "1")
BIG = 40 * MIB


@pytest.fixture(scope="module")
def leader(tmp_path_factory, s3_server):
    """A small seeded leader, and one file with a blob big enough to take several ranged
    pieces, for this module."""
    with serving_leader(tmp_path_factory.mktemp("leader"), SEED) as ferry:
        big = ferry.create_file("Big media")
        payload = tmp_path_factory.mktemp("payload") / "big.png"
        payload.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (BIG // 256))
        with payload.open("rb") as stream:
            ferry.big = (big, ferry.upload(big, "big.png", stream)["blob"]["sha256"])
        yield ferry


def caught_up(leader) -> bool:
    """Every change of the leader applied, every download ended and acknowledged."""
    row = leader_row() if Download.objects.exists() else None
    return row is not None and is_idle(row) and row.acked_seq == leader.feed_end()


def writes_of(file_id) -> int:
    """How many times the follower wrote the file (each write records a change here)."""
    return Change.objects.filter(file_id=file_id).count()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_in_the_long_poll_of_the_feed(leader, follower, signum):
    # SIGINT as a shell's background job gets it: started with SIGINT ignored.
    running = follower.start(sigint_ignored=signum == signal.SIGINT)
    wait_for(lambda: caught_up(leader), timeout=120, what="the mirror", explain=follower.explain)
    follower.stop(running, signum)  # idle: waiting in the feed's 10 s long poll
    assert_mirrored(leader)


@pytest.mark.parametrize(
    "refused",
    [r"^/api/sync/files/", r"^/api/sync/changes"],
    ids=["a worker waits", "the feed reader waits"],
)
def test_a_stop_in_a_retry_wait(leader, follower, proxy_to, refused):
    """503 with a Retry-After of an hour: the client would wait that long before retrying."""
    proxy = proxy_to(refuse=re.compile(refused))
    running = follower.start(url=proxy.base)
    wait_for(lambda: proxy.refused, timeout=120, what="a refused request", explain=follower.explain)
    follower.stop(running)
    assert not Download.objects.filter(state=DownloadState.DOWNLOADING).exists()
    # What a worker gave back is due at once and its attempt not counted.
    assert not Download.objects.filter(attempts__gt=0).exists()
    follower.once()
    assert_mirrored(leader)


def test_a_stop_mid_download_gives_the_claim_back_and_the_next_run_resumes(
    leader, follower, proxy_to
):
    big, sha256 = leader.big
    proxy = proxy_to(rate=10 * MIB)  # the big blob takes several 8 MiB pieces
    running = follower.start(url=proxy.base)
    staging = Path(follower.env["FERRY_VAR_DIR"]) / "tmp" / "follower"

    def partly_held():
        row = Download.objects.filter(file_id=big, state=DownloadState.DOWNLOADING).first()
        parts = [p.stat().st_size for p in staging.glob(f"*/{sha256}.part")]
        return row if row and any(parts) else None

    underway = wait_for(
        partly_held, timeout=120, what="the big blob partly held", explain=follower.explain
    )
    follower.stop(running)
    row = Download.objects.get(file_id=big)
    assert (row.state, row.worker, row.lease_expires_at) == (DownloadState.PENDING, "", None)
    assert row.attempts == underway.attempts - 1  # a stop is not a failed attempt
    kept = [p.stat().st_size for p in staging.glob(f"*/{sha256}.part")]
    assert kept and kept[0] > 0, "the partial blob was not kept for the resume"
    asked_before = len(proxy.starts[sha256])
    follower.once(url=proxy.base)
    row.refresh_from_db()
    assert row.state == DownloadState.DONE, follower.explain()
    resumed = proxy.starts[sha256][asked_before:]
    assert resumed and min(resumed) >= kept[0], f"not resumed from {kept[0]}: {resumed}"
    assert stored_sha256(sha256) == sha256
    assert not list(staging.glob("*/*")), "the resumed partial blob was left behind"
    assert_mirrored(leader)


def test_a_download_that_never_ends_does_not_hold_the_stop(leader, follower, proxy_to):
    """A read blocked on a silent leader cannot be interrupted: the stop waits a bounded
    time for it, then exits, and the claim is left to run out its lease."""
    proxy = proxy_to(stall=True)
    running = follower.start(url=proxy.base)
    wait_for(lambda: proxy.stalled, timeout=120, what="a stalled blob", explain=follower.explain)
    follower.stop(running)
    assert "still busy at exit; their leases lapse" in follower.log(running)
    assert Download.objects.filter(state=DownloadState.DOWNLOADING).exclude(worker="").exists()


def test_two_processes_on_one_database_mirror_to_an_equal_end(leader, follower):
    # A lease no run here outlasts: a claim passes to another worker only if stolen.
    knobs = {"FOLLOWER_LEASE_SECONDS": patience(600)}
    runs = [follower.start("--workers", "2", **knobs) for _ in range(2)]
    wait_for(lambda: caught_up(leader), timeout=180, what="the mirror", explain=follower.explain)
    for run in runs:
        follower.stop(run)
    assert_mirrored(leader)
    assert set(Download.objects.values_list("state", flat=True)) == {DownloadState.DONE}
    files = File.objects.values_list("pk", flat=True)
    assert files and all(writes_of(pk) == 1 for pk in files), "a file was written twice"
    for run in runs:
        assert "claim lost" not in follower.log(run), follower.explain()


def test_a_file_changed_while_it_was_read_is_fetched_again(leader, follower, proxy_to):
    file_id = next(f for f, attrs in leader.files().items() if attrs["deleted_at"] is None)
    proxy = proxy_to(tear=file_id)
    follower.once(url=proxy.base, FOLLOWER_RETRY_SECONDS=0.2)
    [(first, end)] = proxy.torn
    assert end > first
    row = Download.objects.get(file_id=file_id)
    assert row.state == DownloadState.DONE and row.fetched_revision >= end, follower.explain()
    assert row.attempts >= 2
    assert writes_of(file_id) == 1, "the torn read was written"
    log = "\n".join(follower.log(run) for run in follower.runs)
    assert "changed while it was fetched" in log
    assert_mirrored(leader)
