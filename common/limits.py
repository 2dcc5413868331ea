"""How big and how deep JSON may be, one rule for every way in (the API, the admin, an
imported archive).

The values live in settings (environment-overridable); reading one here, as
`limits.MAX_JSON_DEPTH`, fetches it at that moment, so a changed setting applies at once.

- `MAX_JSON_DEPTH`: nesting of stored content (page objects, assets, features). Well under
  what orjson writes (255 levels), so an export or a whole-file read can serve anything
  the store holds.
- `API_MAX_JSON_BYTES`: a JSON request body.
- `PAGE_MAX_BYTES`, `PAGE_MAX_OBJECTS`: one page's objects, as compact JSON and as a count.
"""

from array import array
from itertools import accumulate

from django.conf import settings

#: A document (a request body, a page or file entry of an archive) is one object around the
#: content it carries, so it may nest one level more than MAX_JSON_DEPTH.
DOCUMENT_ENVELOPE_DEPTH = 1

NAMES = ("MAX_JSON_DEPTH", "API_MAX_JSON_BYTES", "PAGE_MAX_BYTES", "PAGE_MAX_OBJECTS")


def __getattr__(name: str) -> int:
    if name in NAMES:
        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def deeper_than(value, limit: int) -> bool:
    """Whether `value` nests more than `limit` containers (`{}` is 1, `{"a": []}` is 2).

    Level by level, not recursive: Python's recursion limit is what a hostile document
    would otherwise hit. After n rounds `level` holds what sits inside n containers.
    """
    level = [value]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
    return any(isinstance(node, dict | list) for node in level)


#: Bytes that are not a quote or a bracket, and the step each bracket takes the depth.
NEITHER_QUOTE_NOR_BRACKET = bytes(set(range(256)) - set(b'"[]{}'))
DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def text_deeper_than(text: bytes, limit: int) -> bool:
    """`deeper_than` for JSON text, before (or instead of) walking it parsed: a few passes
    in C over its bytes. Escapes out, then everything but quotes and brackets; then what
    lies between quotes (empty pairs first, in one pass: dropping two adjacent quotes
    leaves every other quote on its side, and most strings hold no bracket); the brackets
    left, as +1/-1 steps, add up to the depth."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = text.translate(None, NEITHER_QUOTE_NOR_BRACKET).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    return max(accumulate(array("b", marks.translate(DEPTH_STEP))), default=0) > limit
