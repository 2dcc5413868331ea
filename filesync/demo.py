"""A demo workspace of a chosen size, the same for the same seed and sizes.

Used by `make run` (a small one) and the benchmarks (big ones). Rows go in with
bulk_create for speed; content is validated by the same rules as the services, and media
bytes go through `store_blob` like any upload.
"""

import hashlib
import io
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from . import services
from .content import validate_objects
from .feed import record_change
from .models import ChangeKind, File, FileLibrary, Membership, Page, Project, Role, Team

MIB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MEDIA_PER_FILE = 2


@dataclass(frozen=True)
class WorkspaceSize:
    files: int
    pages: int
    objects: int
    media_mb: float
    libraries: int
    seed: int = 1


class _RandomBytes(io.RawIOBase):
    """`size` pseudo-random bytes from `rng`, after a PNG signature, made as they are read."""

    def __init__(self, rng: random.Random, size: int):
        self.rng = rng
        self.pending = PNG_SIGNATURE[:size]
        self.left = size - len(self.pending)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending and self.left:
            self.pending = self.rng.randbytes(min(self.left, MIB))
            self.left -= len(self.pending)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


class _Ids:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)


def _library_assets(ids: _Ids, rng: random.Random, n: int) -> dict:
    return {
        "components": {
            str(ids()): {"name": f"Component {n}.{i}", "objects": {"root": {"type": "rect"}}}
            for i in range(8)
        },
        "colors": {
            str(ids()): {"name": f"Colour {n}.{i}", "color": f"#{rng.getrandbits(24):06x}"}
            for i in range(6)
        },
        "typographies": {
            str(ids()): {"name": f"Type {n}.{i}", "font_family": "Inter", "font_size": 12 + i}
            for i in range(3)
        },
    }


def _page_objects(
    ids: _Ids, rng: random.Random, count: int, libraries: list[File], media_ids: list[uuid.UUID]
) -> dict:
    objects = {}
    for i in range(count):
        obj = {
            "type": "rect",
            "name": f"Shape {i}",
            "x": rng.randint(0, 2000),
            "y": rng.randint(0, 2000),
            "width": rng.randint(10, 400),
            "height": rng.randint(10, 400),
        }
        kind = i % 5
        library = libraries[i % len(libraries)] if libraries else None
        if kind == 1 and library:
            obj["fill_color_ref"] = {
                "file": str(library.id),
                "id": rng.choice(list(library.assets["colors"])),
            }
        elif kind == 2:
            obj.update(type="text", content=f"Text {rng.getrandbits(32):08x}")
            if library:
                obj["typography_ref"] = {
                    "file": str(library.id),
                    "id": rng.choice(list(library.assets["typographies"])),
                }
        elif kind == 3 and media_ids:
            obj.update(type="image", image=str(rng.choice(media_ids)))
        elif kind == 4 and library:
            obj.update(
                type="component-instance",
                component_file=str(library.id),
                component_id=rng.choice(list(library.assets["components"])),
            )
        objects[str(ids())] = obj
    validate_objects(objects)
    return objects


def _workspace_key(size: WorkspaceSize) -> bytes:
    return hashlib.sha256(repr(sorted(size.__dict__.items())).encode()).digest()


def workspace_project_id(size: WorkspaceSize) -> uuid.UUID:
    """The project's id follows from the seed and sizes, so seeding twice is a no-op."""
    return uuid.UUID(bytes=_workspace_key(size)[:16], version=4)


def build_workspace(
    size: WorkspaceSize, *, owner=None, progress: Callable[[int], None] = lambda n: None
) -> tuple[Project, bool]:
    """Return the project and whether it was created now (False: it was there already).
    Built in one transaction: the project's presence says the workspace is whole, so one
    interrupted halfway must leave nothing for the next run to mistake for it."""
    with transaction.atomic():
        return _build_workspace(size, owner=owner, progress=progress)


def _build_workspace(
    size: WorkspaceSize, *, owner, progress: Callable[[int], None]
) -> tuple[Project, bool]:
    project_id = workspace_project_id(size)
    if existing := Project.objects.filter(pk=project_id).first():
        return existing, False
    rng = random.Random(_workspace_key(size))
    ids = _Ids(rng)
    team = Team.objects.create(id=ids(), name=f"Demo team {size.seed}")
    if owner is not None:
        Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    project = Project.objects.create(id=project_id, team=team, name=f"Demo project {size.seed}")
    libraries = [
        File.objects.create(
            id=ids(),
            project=project,
            name=f"Library {n}",
            is_library=True,
            assets=_library_assets(ids, rng, n),
        )
        for n in range(size.libraries)
    ]
    for library in libraries:  # the feed tells followers and clients of every file
        record_change(kind=ChangeKind.FILE_CREATED, file=library)
    media_bytes = int(size.media_mb * MIB) // max(1, size.files * MEDIA_PER_FILE)
    for n in range(size.files):
        with transaction.atomic():
            file = File.objects.create(id=ids(), project=project, name=f"Design {n:04d}")
            FileLibrary.objects.bulk_create(
                [FileLibrary(file=file, library=library) for library in libraries]
            )
            media_ids = []
            if media_bytes:
                for m in range(MEDIA_PER_FILE):
                    media = services.add_media(
                        file=file,
                        name=f"image-{n}-{m}.png",
                        stream=io.BufferedReader(_RandomBytes(rng, media_bytes), MIB),
                        content_type="image/png",
                        width=rng.randint(16, 4096),
                        height=rng.randint(16, 4096),
                        media_id=ids(),
                    )
                    media_ids.append(media.id)
            Page.objects.bulk_create(
                Page(
                    page_id=ids(),
                    file=file,
                    index=p,
                    name=f"Page {p + 1}",
                    object_map=_page_objects(ids, rng, size.objects, libraries, media_ids),
                )
                for p in range(size.pages)
            )
            record_change(kind=ChangeKind.FILE_CREATED, file=file)
        progress(1)
    return project, True
