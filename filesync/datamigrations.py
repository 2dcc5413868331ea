"""Upgrades file content from an older data version to the one this server writes.

The store holds only `DATA_VERSION`; older content (from archives, or rows written before
an upgrade) goes through these steps once, on its way in. Each step upgrades one version,
registered under the version it upgrades from, and never mutates what it is given: the
result is new dicts where something changed, sharing the unchanged parts with the input.
"""

from collections.abc import Callable
from dataclasses import dataclass

from .models import DATA_VERSION


class UnknownDataVersion(ValueError):
    """The content's data version is not one this server can upgrade from."""


def _same(value: dict) -> dict:
    return value


@dataclass(frozen=True)
class Step:
    """One version up: `objects` takes a page's objects, `assets` a file's assets."""

    objects: Callable[[dict], dict] = _same
    assets: Callable[[dict], dict] = _same


#: {from_version: the step to from_version + 1}
STEPS: dict[int, Step] = {}


def _steps(from_version: int) -> list[Step]:
    if not 1 <= from_version <= DATA_VERSION:
        raise UnknownDataVersion(
            f"Data version {from_version} is not one this server reads (1 to {DATA_VERSION})."
        )
    missing = [v for v in range(from_version, DATA_VERSION) if v not in STEPS]
    if missing:
        raise UnknownDataVersion(f"No upgrade from data version {missing[0]}.")
    return [STEPS[v] for v in range(from_version, DATA_VERSION)]


def upgrade_objects(objects: dict, from_version: int) -> dict:
    """A page's objects at `DATA_VERSION`, so readers only ever know the current layout."""
    for step in _steps(from_version):
        objects = step.objects(objects)
    return objects


def upgrade_assets(assets: dict, from_version: int) -> dict:
    """A file's assets at `DATA_VERSION`; components hold objects, so they change too."""
    for step in _steps(from_version):
        assets = step.assets(assets)
    return assets


def _map_component_objects(assets: dict, upgrade: Callable[[dict], dict]) -> dict:
    """Apply an objects step to every component's objects. Content not yet validated
    (an archive being checked) may be malformed: it is left as it is for validation."""
    components = assets.get("components") if isinstance(assets, dict) else None
    if not isinstance(components, dict):
        return assets
    upgraded = {}
    for component_id, component in components.items():
        if isinstance(component, dict) and isinstance(component.get("objects"), dict):
            component = {**component, "objects": upgrade(component["objects"])}
        upgraded[component_id] = component
    return {**assets, "components": upgraded}


# v1 -> v2: geometry says what it means: `w`/`h` became `width`/`height`.

_V2_RENAMES = {"w": "width", "h": "height"}


def _v1_object(obj):
    """Rename w/h; an object that has width or height already, or no w/h, is left alone."""
    if not isinstance(obj, dict) or not obj.keys() & {"w", "h"} or obj.keys() & {"width", "height"}:
        return obj
    return {_V2_RENAMES.get(key, key): value for key, value in obj.items()}


def _v1_objects(objects: dict) -> dict:
    if not isinstance(objects, dict):
        return objects
    return {object_id: _v1_object(obj) for object_id, obj in objects.items()}


def _v1_assets(assets: dict) -> dict:
    return _map_component_objects(assets, _v1_objects)


STEPS[1] = Step(objects=_v1_objects, assets=_v1_assets)
