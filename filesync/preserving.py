"""Readers that pinned a revision keep it, at the cost of the edit that moves past it.

An export pins each file's revision and reads it live for as long as the file stays
there. Every write that changes a file's content calls `preserve_pinned` first, inside its
own transaction and with the file's row locked: when a reader still needs the revision
about to be replaced, it is captured in a `preserved` snapshot and the reader pointed at
it, so the reader goes on from the snapshot (selectors.PinnedState). An edit with no such
reader costs one query; readers cost nothing until an edit races them.

Readers are registered by the apps that pin (`register_pin_keeper`: the exports app), so
filesync knows nothing of them.
"""

from collections.abc import Callable

from django.db import transaction

from .copying import bulk_create_batched
from .models import File, Snapshot, SnapshotMedia, SnapshotPage
from .selectors import FileState, get_file

#: Given the locked file and a function that preserves its current revision (once, however
#: often it is called), point the keeper's readers of that revision at the snapshot.
PinKeeper = Callable[[File, Callable[[], Snapshot]], None]
_keepers: list[PinKeeper] = []


def register_pin_keeper(keeper: PinKeeper) -> None:
    if keeper not in _keepers:
        _keepers.append(keeper)


def capture(state: FileState, *, skip_pending: bool = False, **fields) -> Snapshot:
    """Write a snapshot of `state`'s pages, assets and media, page by page. Media still
    pending have no bytes to capture: `skip_pending` leaves them out (callers that
    snapshot for people refuse instead)."""
    snapshot = Snapshot.all_kinds.create(
        file=state.file,
        revision=state.revision,
        name=state.name,
        data_version=state.data_version,
        features=state.features,
        assets=state.assets,
        **fields,
    )
    bulk_create_batched(
        SnapshotPage,
        (
            SnapshotPage(
                snapshot=snapshot, page_id=p.id, index=p.index, name=p.name, object_map=p.objects
            )
            for p in state.pages()
        ),
    )
    bulk_create_batched(
        SnapshotMedia,
        (
            SnapshotMedia(
                snapshot=snapshot,
                media_id=m.id,
                blob_id=m.blob_id,
                name=m.name,
                mtype=m.mtype,
                width=m.width,
                height=m.height,
            )
            for m in state.media()
            if m.blob_id is not None or not skip_pending
        ),
    )
    return snapshot


def preserve_pinned(file: File) -> None:
    """Before a write changes the file's content, in the write's transaction: keep the
    current revision for the readers that pinned it and have not got it kept yet.

    The file's row is locked here (callers usually hold it already), so two racing edits
    preserve once, and a reader pinning the file (which locks it too) either sees the new
    revision or is seen here.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("preserve_pinned runs inside the transaction of the write.")
    state = get_file(file.pk, include_deleted=True, for_update=True)
    taken: list[Snapshot] = []

    def freeze() -> Snapshot:
        if not taken:
            taken.append(
                capture(
                    state,
                    skip_pending=True,
                    kind=Snapshot.Kind.PRESERVED,
                    label=f"r{state.revision}, kept for the exports reading it",
                    file_modified_at=state.file.modified_at,
                )
            )
        return taken[0]

    for keeper in _keepers:
        keeper(state.file, freeze)
