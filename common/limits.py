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
