"""A small Python client for Ferry's sync protocol (docs/sync.md), on httpx.

Used by the follower mirror and by users' scripts. Uploads are tus-resumable and carry
the blob's sha256; downloads are ranged, resume where they stopped and are verified.
Connection errors, 429 and 5xx are retried with exponential backoff and jitter (honouring
Retry-After); a 404 whose reason is `pending` is retried too (the bytes are on their way);
any other 4xx is final and raised at once. A client given a `stop` event gives up at the
next safe point once it is set (a retry's wait, the next request, the next ranged piece),
raising Interrupted, so whoever runs it can stop within seconds.
"""

import base64
import hashlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

CHUNK = 8 * 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


class Interrupted(Exception):
    """The client's stop event was set: the call gave up between two requests."""


class SyncError(Exception):
    def __init__(self, response: httpx.Response):
        self.status = response.status_code
        try:
            self.detail = response.json()
        except ValueError:
            self.detail = response.text
        super().__init__(
            f"{response.request.method} {response.request.url}: {self.status} {self.detail}"
        )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class SyncClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        attempts: int = 6,
        backoff: float = 0.5,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        chunk_size: int = CHUNK,
    ):
        """`sleep` waits between retries; by default on `stop`, which cuts the wait short."""
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Token {token}"},
            timeout=httpx.Timeout(60, connect=10),
        )
        self.chunk_size = chunk_size
        self.attempts = attempts
        self.backoff = backoff
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """One call, retried on what may pass; other answers come back or raise SyncError."""
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            self._check_stop()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
                self.sleep(self._delay(attempt, None))
                continue
            if _transient(response) and not last:
                self.sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise SyncError(response)
            return response
        raise AssertionError("unreachable")

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("Stopped before the next request.")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isascii() and retry_after.isdigit():
            return float(retry_after)
        return self.backoff * 2**attempt * random.uniform(0.5, 1.5)

    # Blobs -------------------------------------------------------------------------------

    def upload(self, path: Path, *, content_type: str = "application/octet-stream") -> str:
        """Upload a file as a blob through tus, resuming after any failure; return its sha256."""
        path = Path(path)
        sha256, size = file_sha256(path), path.stat().st_size
        created = self.request(
            "POST",
            "/api/sync/uploads/",
            headers={
                **TUS,
                "Upload-Length": str(size),
                "Upload-Metadata": f"sha256 {_b64(sha256)},content_type {_b64(content_type)}",
            },
        )
        location = created.headers["Location"]
        offset = int(created.headers["Upload-Offset"])
        with open(path, "rb") as source:
            while offset < size:
                source.seek(offset)
                chunk = source.read(self.chunk_size)
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                try:
                    answer = self.request(
                        "PATCH",
                        location,
                        content=chunk,
                        headers={
                            **TUS,
                            "Upload-Offset": str(offset),
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Checksum": f"sha256 {checksum}",
                        },
                    )
                except SyncError as error:
                    if error.status != 409:
                        raise
                    answer = self.request("HEAD", location, headers=TUS)  # resync the offset
                offset = int(answer.headers["Upload-Offset"])
        return sha256

    def download(
        self,
        sha256: str,
        target: Path,
        *,
        progress: Callable[[int], None] | None = None,
        verify: bool = True,
    ) -> Path:
        """Fetch a blob into `target` in ranged pieces, resuming a partial file; verified,
        unless `verify` is False: the caller checks it in a pass of its own (the follower,
        which takes the CRC-32 in the same pass). `progress` is called with the bytes held
        after each piece (an exception it raises stops the download); a stop between
        pieces keeps the partial file for a resume."""
        target = Path(target)
        partial = target.with_name(target.name + ".part")
        size = int(
            self.request("HEAD", f"/api/sync/blobs/{sha256}", follow_redirects=True).headers[
                "Content-Length"
            ]
        )
        while (have := partial.stat().st_size if partial.exists() else 0) < size:
            last = min(have + self.chunk_size, size) - 1
            piece = self.request(
                "GET",
                f"/api/sync/blobs/{sha256}",
                follow_redirects=True,
                headers={"Range": f"bytes={have}-{last}"},
            )
            with open(partial, "ab") as out:
                out.write(
                    piece.content[: last - have + 1]
                    if piece.status_code == 206
                    else piece.content[have : last + 1]
                )
            if progress is not None:
                progress(last + 1)
        if verify and file_sha256(partial) != sha256:
            partial.unlink()
            raise ValueError(f"Downloaded bytes do not hash to {sha256}; removed them.")
        os.replace(partial, target)
        return target

    # Feed, replicas, locks ---------------------------------------------------------------

    def changes(self, since: int = 0, *, limit: int = 100, wait: float = 0) -> dict:
        return self.request(
            "GET",
            "/api/sync/changes",
            params={"since": since, "limit": limit, "wait": wait},
            timeout=wait + 30,
        ).json()

    def timestamp(self) -> float:
        return self.request("GET", "/api/sync/timestamp").json()["epoch"]

    def register_replica(self, name: str) -> dict:
        return self.request("POST", "/api/sync/replicas", json={"name": name}).json()

    def acknowledge(self, replica_id: str, seq: int) -> dict:
        return self.request(
            "POST", f"/api/sync/replicas/{replica_id}/ack", json={"seq": seq}
        ).json()

    def lock(self, sha256: str) -> dict:
        return self.request("POST", f"/api/sync/blobs/{sha256}/lock").json()

    def keep(self, lock_id: str) -> dict:
        return self.request("POST", f"/api/sync/locks/{lock_id}/keep").json()

    def unlock(self, lock_id: str) -> None:
        self.request("DELETE", f"/api/sync/locks/{lock_id}")

    def remove(self, sha256: str, *, margin: float = 30) -> None:
        self.request(
            "DELETE", f"/api/sync/blobs/{sha256}", params={"before": str(self.timestamp() + margin)}
        )


def _transient(response: httpx.Response) -> bool:
    if response.status_code == 429 or response.status_code >= 500:
        return True
    if response.status_code == 404:
        try:
            return response.json().get("reason") == "pending"
        except ValueError:
            return False
    return False
