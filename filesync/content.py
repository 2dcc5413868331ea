"""The shape of file content: what a page object and the assets may hold.

Services validate content before they write it, so every reader (export, duplicate,
snapshot, sync) can rely on it: that includes its bounds (common.limits), so the store
never holds what its own export or whole-file read could not serve.
"""

import re

import orjson
from django.core.exceptions import ValidationError

from common import limits

OBJECT_TYPES = frozenset(
    {"frame", "group", "rect", "ellipse", "path", "text", "image", "component-instance"}
)
ASSET_KINDS = ("components", "colors", "typographies")
SUPPORTED_FEATURES = frozenset({"components/v2", "styles/v2", "layout/grid"})


#: The forms `uuid.UUID` accepts that clients send: with or without hyphens, any case.
UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _is_uuid(value) -> bool:
    """Checked on every object of every page: a match is ~5x cheaper than building a UUID."""
    return isinstance(value, str) and UUID_TEXT.match(value) is not None


def _is_ref(value) -> bool:
    return value is None or (
        isinstance(value, dict) and _is_uuid(value.get("file")) and bool(value.get("id"))
    )


#: What object_errors checks beyond the type, in the order it reports: the field, whether
#: a value passes (given the object), and what it says when one does not.
FIELD_RULES = (
    (
        "component_file",
        lambda value, obj: _is_uuid(value) and bool(obj.get("component_id")),
        "component_file must be a file UUID, with a component_id.",
    ),
    (
        "fill_color_ref",
        lambda value, obj: _is_ref(value),
        "fill_color_ref must be an object with a file UUID and an id.",
    ),
    (
        "typography_ref",
        lambda value, obj: _is_ref(value),
        "typography_ref must be an object with a file UUID and an id.",
    ),
    ("image", lambda value, obj: _is_uuid(value), "image must be a media UUID."),
)


def object_errors(object_id: str, obj) -> list[str]:
    """Checked on every object of every page: a valid one costs a few lookups, and
    messages are only built for what fails."""
    if not isinstance(obj, dict):
        return [f"object {object_id}: must be a JSON object."]
    errors = []
    kind = obj.get("type")
    if not (isinstance(kind, str) and kind in OBJECT_TYPES):
        errors.append(f"type must be one of {', '.join(sorted(OBJECT_TYPES))}.")
    for field, passes, message in FIELD_RULES:
        if field in obj and not passes(obj[field], obj):
            errors.append(message)
    return [f"object {object_id}: {error}" for error in errors] if errors else errors


def validate_bounds(value, field: str, *, max_bytes: int) -> None:
    """Refuse content nested past MAX_JSON_DEPTH or over `max_bytes` as compact JSON.

    Sizing it with orjson also refuses what orjson cannot write (an integer past 64 bits),
    which every reader of the store would fail on later.
    The depth is judged on that JSON text (passes in C, not a walk of every node in
    Python); only a value orjson refuses is walked, to tell a too deep one (orjson stops
    at 255 levels) from one it cannot write.
    """
    deep = ValidationError({field: f"Nested deeper than {limits.MAX_JSON_DEPTH} levels."})
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        if limits.deeper_than(value, limits.MAX_JSON_DEPTH):
            raise deep from None
        raise ValidationError({field: f"Not storable as JSON: {error}."}) from None
    if limits.text_deeper_than(text, limits.MAX_JSON_DEPTH):
        raise deep
    if len(text) > max_bytes:
        raise ValidationError({field: f"{len(text)} bytes as JSON; at most {max_bytes}."})


def validate_objects(objects) -> None:
    if not isinstance(objects, dict):
        raise ValidationError({"objects": "Must be a JSON object keyed by object id."})
    if len(objects) > limits.PAGE_MAX_OBJECTS:
        raise ValidationError(
            {"objects": f"{len(objects)} objects; a page holds at most {limits.PAGE_MAX_OBJECTS}."}
        )
    validate_bounds(objects, "objects", max_bytes=limits.PAGE_MAX_BYTES)
    errors = [e for object_id, obj in objects.items() for e in object_errors(object_id, obj)]
    if errors:
        raise ValidationError({"objects": errors[:20]})


def validate_assets(assets) -> None:
    if not isinstance(assets, dict) or set(assets) - set(ASSET_KINDS):
        raise ValidationError({"assets": f"Must be an object with only {', '.join(ASSET_KINDS)}."})
    for kind in ASSET_KINDS:
        if not isinstance(assets.get(kind, {}), dict):
            raise ValidationError({"assets": f"{kind} must be an object keyed by id."})
    validate_bounds(assets, "assets", max_bytes=limits.PAGE_MAX_BYTES)


def validate_features(features) -> None:
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValidationError({"features": "Must be a list of feature names."})
    if unknown := sorted(set(features) - SUPPORTED_FEATURES):
        raise ValidationError({"features": f"Unsupported: {', '.join(unknown)}."})
    if len(features) != len(set(features)):
        raise ValidationError({"features": "Each feature once."})
