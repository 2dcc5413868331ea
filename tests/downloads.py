"""Reading what Ferry serves the way a client does, on either storage.

On the filesystem the API streams the bytes itself; on S3 it answers 302 to a presigned
URL that serves them (and ranges) itself. `download` follows that redirect, without the
API's credentials and with the same Range, so a test checks the status, headers and bytes
a client ends up with, whichever storage is configured.
"""

from dataclasses import dataclass

import httpx
from django.conf import settings

from tests.waiting import patience

#: Request headers a client sends on to the presigned URL (test-client name → HTTP name).
FORWARDED = {"HTTP_RANGE": "Range"}


@dataclass
class Download:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    redirected: bool


def served_by_s3() -> bool:
    """Whether downloads are redirects to presigned URLs (S3) or streamed by Ferry."""
    return bool(settings.AWS_STORAGE_BUCKET_NAME)


def download(client, url: str, **headers) -> Download:
    """GET `url` with the test client; follow a redirect to the object store."""
    response = client.get(url, **headers)
    if response.status_code != 302:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return Download(response.status_code, _lower(response.headers), body, redirected=False)
    sent = {FORWARDED[name]: value for name, value in headers.items() if name in FORWARDED}
    followed = httpx.get(response["Location"], headers=sent, timeout=patience(30))
    return Download(followed.status_code, _lower(followed.headers), followed.content, True)


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
