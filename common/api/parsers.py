"""The JSON parser every API route uses: bounded in size and depth (common.limits)."""

import orjson
from rest_framework import exceptions, renderers
from rest_framework.parsers import BaseParser

from .. import limits


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is larger than this server accepts."
    default_code = "payload_too_large"


class BoundedJSONParser(BaseParser):
    """JSON, refusing a body over API_MAX_JSON_BYTES (413, before reading it whole) or
    nested deeper than the content it may carry (400).

    DRF's JSONParser recurses in Python, so a deep enough body ends in a RecursionError (a
    500); orjson parses without it (and stops past 1024 levels), then the depth is walked
    level by level. Not a JSONParser subclass: DRF hands those `request.body`, read whole
    and capped by DATA_UPLOAD_MAX_MEMORY_SIZE with an HTML 400; this one reads the stream.
    """

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        context = parser_context or {}
        most = limits.API_MAX_JSON_BYTES
        declared = context["request"].META.get("CONTENT_LENGTH", "") if "request" in context else ""
        if declared.isdigit() and int(declared) > most:
            raise PayloadTooLarge(f"The body is over {most} bytes.")
        body = stream.read(most + 1)
        if len(body) > most:
            raise PayloadTooLarge(f"The body is over {most} bytes.")
        try:
            data = orjson.loads(body.decode(context.get("encoding") or "utf-8"))
        except (UnicodeDecodeError, LookupError, orjson.JSONDecodeError) as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        depth = limits.MAX_JSON_DEPTH + limits.DOCUMENT_ENVELOPE_DEPTH
        if limits.deeper_than(data, depth):
            raise exceptions.ParseError(f"The JSON body is nested deeper than {depth} levels.")
        return data
