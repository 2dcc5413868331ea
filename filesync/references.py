"""The one declared list of cross-file references an object can hold.

Export (merge, detach), import and duplicate (relink) all walk references through this
list, so a new kind of reference is added here once.
"""

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class AssetReference:
    """An object field pointing at an asset (`kind`) of some file, maybe another one."""

    kind: str  # "components", "colors" or "typographies"
    field: str  # the object key holding {"file", "id"}, or holding the file id itself
    id_field: str = ""  # set when the file and the asset id are two flat keys

    def get(self, obj: dict) -> tuple[str, str] | None:
        if self.id_field:
            if self.field in obj:
                return str(obj[self.field]), str(obj.get(self.id_field))
            return None
        ref = obj.get(self.field)
        return (str(ref["file"]), str(ref["id"])) if isinstance(ref, dict) else None

    def set_file(self, obj: dict, file_id: str) -> None:
        if self.id_field:
            obj[self.field] = file_id
        else:
            obj[self.field] = {**obj[self.field], "file": file_id}

    def drop(self, obj: dict) -> None:
        obj.pop(self.field, None)
        if self.id_field:
            obj.pop(self.id_field, None)


ASSET_REFERENCES = (
    AssetReference("components", "component_file", "component_id"),
    AssetReference("colors", "fill_color_ref"),
    AssetReference("typographies", "typography_ref"),
)

#: Object key naming a media object (of the same file).
MEDIA_REFERENCE = "image"


def asset_references(obj: dict) -> Iterator[tuple[AssetReference, str, str]]:
    """(reference, file id, asset id) for each asset the object points at."""
    for reference in ASSET_REFERENCES:
        if (target := reference.get(obj)) is not None:
            yield reference, *target
