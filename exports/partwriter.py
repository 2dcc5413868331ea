"""Writes an archive's parts on a thread of its own, in order, hashing them as they land.

Generating part n + 1 (reading blobs, CRC, deflate) overlaps writing part n and hashing
it: both release the GIL, so on two cores an export runs close to the slower of the two.
At most `depth` parts wait, so memory stays a few parts whatever the archive's size.
"""

import queue
import threading
from typing import NamedTuple

from .binfile.resumable_hash import ResumableSha256
from .sinks import PartSink


class WrittenPart(NamedTuple):
    number: int
    size: int
    etag: str
    hash_state: bytes  # the archive's hash over every byte up to the end of this part


class PartWriter:
    def __init__(self, sink: PartSink, hasher: ResumableSha256, depth: int = 2):
        self.sink = sink
        self.hasher = hasher
        self.todo: queue.Queue = queue.Queue(maxsize=depth)
        self.done: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="export-part-writer", daemon=True)
        self.thread.start()

    def submit(self, number: int, data: bytes) -> None:
        self.todo.put((number, data))

    def completed(self) -> list[WrittenPart]:
        """Parts written since the last call; re-raises what went wrong in the writer."""
        parts = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return parts
            if isinstance(item, BaseException):
                raise item
            parts.append(item)

    def finish(self) -> list[WrittenPart]:
        """Wait for every submitted part to be written; return those not yet collected."""
        self.stop()
        return self.completed()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.todo.put(None)
            self.thread.join()

    def _work(self) -> None:
        while (item := self.todo.get()) is not None:
            number, data = item
            try:
                etag = self.sink.write_part(number, data)
                self.hasher.update(data)
            except BaseException as error:  # handed to the generating thread, which decides
                self.done.put(error)
                self._discard_rest()
                return
            self.done.put(WrittenPart(number, len(data), etag, self.hasher.state()))

    def _discard_rest(self) -> None:
        while self.todo.get() is not None:
            pass
