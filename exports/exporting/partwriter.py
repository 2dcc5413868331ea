"""Writes an archive's parts on a thread of its own, in order: write, hash, checkpoint.

Generating part n + 1 (reading blobs, CRC, deflate) overlaps writing part n: both release
the GIL, so on two cores an export runs close to the slower of the two. A part goes to
storage only after `fence()` passed (the worker still holds the job). Each part is
checkpointed by this thread right after it is durable, so a worker that dies loses at
most the part it was writing. At most `depth` parts wait: memory stays a few parts.
"""

import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from django.db import connection

from exports.exporting.sinks import PartSink
from filesync.resumable_hash import ResumableSha256


class WrittenPart(NamedTuple):
    number: int
    size: int
    etag: str
    hash_state: bytes  # the archive's hash over every byte up to the end of this part
    context: Any  # what the generating thread handed over with the part


class PartWriter:
    def __init__(
        self,
        sink: PartSink,
        hasher: ResumableSha256,
        checkpoint: Callable[[WrittenPart], None],
        depth: int = 1,
        fence: Callable[[], None] = lambda: None,
    ):
        self.fence = fence
        self.sink = sink
        self.hasher = hasher
        self.checkpoint = checkpoint
        self.todo: queue.Queue = queue.Queue(maxsize=depth)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="export-part-writer", daemon=True)
        self.thread.start()

    def submit(self, number: int, data: bytes, context: Any = None) -> None:
        """Queue a part (waiting while `depth` parts wait); re-raise the writer's failure."""
        self.raise_failure()
        self.todo.put((number, data, context))

    def finish(self) -> None:
        """Wait until every submitted part is written and checkpointed."""
        self.stop()
        self.raise_failure()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.todo.put(None)
            self.thread.join()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _work(self) -> None:
        try:
            while (item := self.todo.get()) is not None:
                if self.failure is not None:
                    continue  # drain: nothing more is written after a failure
                number, data, context = item
                try:
                    self.fence()
                    etag = self.sink.write_part(number, data)
                    self.hasher.update(data)
                    self.checkpoint(
                        WrittenPart(number, len(data), etag, self.hasher.state(), context)
                    )
                except BaseException as error:  # handed to the generating thread
                    self.failure = error
        finally:
            connection.close()
