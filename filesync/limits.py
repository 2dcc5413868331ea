"""Bounds on JSON documents, one rule for every way in (the API, an imported archive)."""

#: The deepest nesting of arrays and objects a JSON document may have: page objects need
#: a handful of levels, and a parser or a validator that recurses must never hit its own
#: limit first.
MAX_JSON_DEPTH = 64
