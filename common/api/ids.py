"""Ids in routes: every row the API names has a UUID primary key."""

UUID_RE = "[0-9a-fA-F-]{36}"


class UUIDLookup:
    """Ids are UUIDs; anything else does not match a route and answers 404."""

    lookup_value_regex = UUID_RE
