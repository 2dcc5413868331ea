import logging
import os
import socket
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from common.commands.stopping import Stopped, stop_on_signals
from filesync.client import SyncClient, SyncError
from filesync.follower import services
from filesync.follower.models import Leader
from filesync.follower.selectors import ack_position, is_idle, progress
from filesync.follower.worker import work

logger = logging.getLogger(__name__)

FEED_PAGE = 500
FEED_WAIT = 10
HEARTBEAT_SECONDS = 30
#: How long a stop waits for the workers to give their downloads back (each ends within a
#: ranged piece of the stop); a worker still busy after it is left to its lease.
STOP_JOIN_SECONDS = 5


class Command(BaseCommand):
    help = (
        "Mirror a leader Ferry here: register as its replica, follow its change feed, fetch "
        "each changed file (pages, media, verified blobs, library links) with N workers, and "
        "acknowledge the feed as far as everything is held. Runs until SIGINT (Ctrl-C) or "
        "SIGTERM, which stop it within seconds (exit 0; downloads underway are given back "
        "for the next run), or with --once until the feed and the downloads are drained."
    )

    def add_arguments(self, parser):
        parser.add_argument("--leader", required=True, help="The leader's base URL.")
        parser.add_argument("--token", required=True, help="An API token on the leader.")
        parser.add_argument("--workers", type=int, default=4)
        parser.add_argument("--once", action="store_true", help="Stop when caught up.")
        parser.add_argument("--name", default=socket.gethostname(), help="The replica's name.")

    def handle(self, *args, **options):
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.")
        self.busy_workers = 0
        with stop_on_signals() as stop:
            client = SyncClient(options["leader"], options["token"], stop=stop)
            try:
                leader = self._register(client, options["leader"], options["name"])
                self._run(leader, client, stop, options)
            except Stopped as stopped:
                self.stderr.write(f"sync_follow stopped by {stopped.signal_name}.")
            finally:
                # A worker still reading would fail on a closed client and record the
                # failure as its own; its claim is left to the lease, its socket to the exit.
                if not self.busy_workers:
                    client.close()

    def _register(self, client: SyncClient, url: str, name: str) -> Leader:
        """The leader's row, registered there as a replica on the first run."""
        leader = services.leader_for(url)
        if leader.replica_id is not None:
            return leader
        try:
            replica = client.register_replica(name)
        except SyncError as error:
            raise CommandError(f"The leader refused: {error}") from None
        leader.replica_id = replica["id"]
        leader.save(update_fields=["replica_id"])
        return leader

    def _run(self, leader: Leader, client: SyncClient, stop: threading.Event, options) -> None:
        """Follow with the workers in threads; however it ends, stop them and wait (boundedly)
        for them to give their downloads back."""
        prefix = f"{socket.gethostname()}:{os.getpid()}"
        threads = [
            threading.Thread(target=work, args=(leader, client, f"{prefix}:{n}", stop), daemon=True)
            for n in range(options["workers"])
        ]
        for thread in threads:
            thread.start()
        try:
            self._follow(leader, client, once=options["once"], verbosity=options["verbosity"])
        finally:
            stop.set()
            deadline = time.monotonic() + STOP_JOIN_SECONDS
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self.busy_workers = sum(thread.is_alive() for thread in threads)
            if self.busy_workers:
                logger.warning(
                    "%d worker(s) still busy at exit; their leases lapse", self.busy_workers
                )

    def _follow(self, leader, client: SyncClient, *, once: bool, verbosity: int) -> None:
        """Read the feed, acknowledge what is held, show progress; with `once`, return when
        the feed is drained and every download has ended."""
        started, beat = time.monotonic(), 0.0
        out = self.stderr._out
        with tqdm(unit=" files", desc="mirror", file=out, disable=verbosity == 0) as bar:
            while True:
                answer = client.changes(
                    leader.feed_seq, limit=FEED_PAGE, wait=0 if once else FEED_WAIT
                )
                services.apply_changes(leader, answer["changes"], answer["next"])
                self._acknowledge(leader, client)
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    beat = time.monotonic()
                    client.request("POST", f"/api/sync/replicas/{leader.replica_id}/heartbeat")
                self._show(bar, leader, started)
                if once and not answer["changes"]:
                    while not is_idle(leader):
                        time.sleep(0.2)
                        self._show(bar, leader, started)
                    self._acknowledge(leader, client)
                    self._show(bar, leader, started)
                    return

    def _acknowledge(self, leader, client: SyncClient) -> None:
        position = ack_position(leader)
        if position > leader.acked_seq:
            client.acknowledge(str(leader.replica_id), position)
            services.record_ack(leader, position)

    def _show(self, bar: tqdm, leader, started: float) -> None:
        """Files ended of all known, pending and failed counts, MB/s of blob bytes."""
        counts = progress(leader)
        ended = counts["done"] + counts["cancelled"] + counts["failed"]
        bar.total = ended + counts["pending"] + counts["downloading"]
        bar.n = ended
        seconds = max(time.monotonic() - started, 1e-6)
        bar.set_postfix(
            pending=counts["pending"],
            failed=counts["failed"],
            MBps=f"{counts['bytes'] / seconds / 1e6:.1f}",
            acked=leader.acked_seq,
            refresh=False,
        )
        bar.refresh()
