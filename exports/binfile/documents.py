"""The JSON documents of a binfile, checked field by field before anything is written.

Pure: each check takes a parsed document and raises BinfileError naming the entry and the
field. What the store alone can judge (objects, assets, features) the importer checks
with the store's own rules, so this module stays free of Django.
"""

import re
from uuid import UUID

from .format import MANIFEST, BinfileError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
NAME_MAX = 250
INT_MAX = 2**31 - 1  # what an integer column (width, height, index) holds on every database


def fail(entry: str, field: str, message: str, code: str = "invalid_document"):
    raise BinfileError(f"{entry}: {field}: {message}", code=code, entry=entry, field=field)


def uuid_text(value, entry: str, field: str) -> str:
    if isinstance(value, str):
        try:
            return str(UUID(value))
        except ValueError:
            pass
    fail(entry, field, f"{value!r} is not a UUID.")


def text(value, entry: str, field: str, *, limit: int = NAME_MAX) -> str:
    if not isinstance(value, str) or len(value) > limit:
        fail(entry, field, f"must be a string of at most {limit} characters.")
    return value


def boolean(value, entry: str, field: str) -> bool:
    if not isinstance(value, bool):
        fail(entry, field, "must be true or false.")
    return value


def optional_size(value, entry: str, field: str) -> int | None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT_MAX
    ):
        fail(entry, field, f"must be an integer from 0 to {INT_MAX}, or null.")
    return value


def mapping(value, entry: str, field: str) -> dict:
    if not isinstance(value, dict):
        fail(entry, field, "must be a JSON object.")
    return value


def id_list(value, entry: str, field: str) -> list[str]:
    if not isinstance(value, list):
        fail(entry, field, "must be a list of UUIDs.")
    ids = [uuid_text(item, entry, f"{field}[{n}]") for n, item in enumerate(value)]
    if len(set(ids)) != len(ids):
        fail(entry, field, "lists an id twice.")
    return ids


def data_version(value, entry: str, field: str, *, current: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(entry, field, "must be a positive integer.")
    if value > current:
        fail(
            entry,
            field,
            f"data version {value} is newer than this server's {current}; upgrade Ferry.",
            code="newer_data_version",
        )
    return value


def manifest_files(manifest: dict, *, current_version: int) -> list[dict]:
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        fail(MANIFEST, "files", "must be a non-empty list.")
    seen = set()
    checked = []
    for n, item in enumerate(files):
        field = f"files[{n}]"
        mapping(item, MANIFEST, field)
        file_id = uuid_text(item.get("id"), MANIFEST, f"{field}.id")
        if file_id in seen:
            fail(MANIFEST, f"{field}.id", "names a file twice.")
        seen.add(file_id)
        checked.append(
            {
                "id": file_id,
                "data_version": data_version(
                    item.get("data_version"),
                    MANIFEST,
                    f"{field}.data_version",
                    current=current_version,
                ),
            }
        )
    return checked


def manifest_relations(manifest: dict, file_ids: set[str]) -> list[tuple[str, str]]:
    relations = manifest.get("relations", [])
    if not isinstance(relations, list):
        fail(MANIFEST, "relations", "must be a list of [file id, library id] pairs.")
    pairs = []
    for n, pair in enumerate(relations):
        field = f"relations[{n}]"
        if not isinstance(pair, list) or len(pair) != 2:
            fail(MANIFEST, field, "must be a [file id, library id] pair.")
        file_id = uuid_text(pair[0], MANIFEST, f"{field}[0]")
        if file_id not in file_ids:
            fail(MANIFEST, f"{field}[0]", f"{file_id} is not a file of this archive.")
        pairs.append((file_id, uuid_text(pair[1], MANIFEST, f"{field}[1]")))
    return pairs


def file_document(document, entry: str, file_id: str) -> dict:
    """The file's attributes; features and assets are the store's to judge."""
    mapping(document, entry, "(document)")
    if uuid_text(document.get("id"), entry, "id") != file_id:
        fail(entry, "id", "does not match the entry's name.")
    checked = {
        "name": text(document.get("name"), entry, "name"),
        "is_library": boolean(document.get("is_library"), entry, "is_library"),
        "data_version": document.get("data_version"),
        "features": document.get("features"),
        "assets": mapping(document.get("assets"), entry, "assets"),
        "pages": id_list(document.get("pages"), entry, "pages"),
        "media": id_list(document.get("media"), entry, "media"),
    }
    return checked


def page_document(document, entry: str, page_id: str) -> dict:
    mapping(document, entry, "(document)")
    if uuid_text(document.get("id"), entry, "id") != page_id:
        fail(entry, "id", "does not match the entry's name.")
    index = document.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= INT_MAX:
        fail(entry, "index", f"must be an integer from 0 to {INT_MAX}.")
    return {
        "index": index,
        "name": text(document.get("name"), entry, "name"),
        "objects": mapping(document.get("objects"), entry, "objects"),
    }


def media_document(document, entry: str, media_id: str) -> dict:
    mapping(document, entry, "(document)")
    if uuid_text(document.get("id"), entry, "id") != media_id:
        fail(entry, "id", "does not match the entry's name.")
    blob = document.get("blob")
    if not isinstance(blob, str) or not SHA256.match(blob):
        fail(entry, "blob", "must be a sha256 (64 lowercase hex digits).")
    return {
        "name": text(document.get("name"), entry, "name"),
        "mtype": text(document.get("mtype"), entry, "mtype", limit=100),
        "width": optional_size(document.get("width"), entry, "width"),
        "height": optional_size(document.get("height"), entry, "height"),
        "blob": blob,
    }
