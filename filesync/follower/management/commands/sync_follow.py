import os
import socket
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from filesync.client import SyncClient, SyncError
from filesync.follower import services
from filesync.follower.selectors import ack_position, is_idle, progress
from filesync.follower.worker import work

FEED_PAGE = 500
FEED_WAIT = 10
HEARTBEAT_SECONDS = 30


class Command(BaseCommand):
    help = (
        "Mirror a leader Ferry here: register as its replica, follow its change feed, fetch "
        "each changed file (pages, media, verified blobs, library links) with N workers, and "
        "acknowledge the feed as far as everything is held. Runs until Ctrl-C, or with "
        "--once until the feed and the downloads are drained."
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
        client = SyncClient(options["leader"], options["token"])
        leader = services.leader_for(options["leader"])
        try:
            if leader.replica_id is None:
                replica = client.register_replica(options["name"])
                leader.replica_id = replica["id"]
                leader.save(update_fields=["replica_id"])
        except SyncError as error:
            raise CommandError(f"The leader refused: {error}") from None
        stop = threading.Event()
        prefix = f"{socket.gethostname()}:{os.getpid()}"
        threads = [
            threading.Thread(
                target=work,
                args=(leader, client, f"{prefix}:{n}", stop),
                daemon=True,
            )
            for n in range(options["workers"])
        ]
        for thread in threads:
            thread.start()
        try:
            self._follow(leader, client, once=options["once"], verbosity=options["verbosity"])
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            client.close()

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
