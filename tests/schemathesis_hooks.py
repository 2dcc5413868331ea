"""Hooks the schemathesis CLI loads for tests/test_api_schema.py (`hooks` in its config)."""

import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def tus_chunk(ctx, value) -> bytes:
    """A tus PATCH body is raw bytes; schemathesis generates them for `format: binary`."""
    return value if isinstance(value, bytes) else str(value).encode()
