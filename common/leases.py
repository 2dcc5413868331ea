"""Leases: a row held by one holder until a time, every write of the holder fenced by it.

A holder is a token for one hold (a worker and its attempt; `new_holder`): a write goes
through only while the row still names that token. A worker that stalled past its lease
(a long GC pause, SIGSTOP, a storage call that hung) and woke after another took the row
over therefore changes nothing: its next write raises `LeaseLost`. Jobs, follower
downloads and tus uploads hold their rows this way.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Model, Q, QuerySet
from django.utils import timezone


class LeaseLost(Exception):
    """Another holder has the row now (or nobody does): stop writing at once."""


def new_holder(worker: str) -> str:
    """A token naming `worker` and this one hold of it, unique even when the worker
    takes the same row twice."""
    return f"{worker[:88]}/{secrets.token_hex(5)}"


@dataclass(frozen=True)
class Lease:
    model: type[Model]
    pk: Any
    holder: str
    seconds: float
    holder_field: str = "worker"
    until_field: str = "lease_expires_at"

    @classmethod
    def take(
        cls,
        claimable: QuerySet,
        pk,
        *,
        holder: str,
        seconds: float,
        holder_field: str = "worker",
        until_field: str = "lease_expires_at",
        **fields,
    ) -> "Lease | None":
        """Hold the row if it is among `claimable` and nobody holds a live lease on it;
        `fields` are written with the claim, in the same statement."""
        lease = cls(claimable.model, pk, holder, seconds, holder_field, until_field)
        now = timezone.now()
        free = Q(**{f"{lease.until_field}__isnull": True}) | Q(**{f"{lease.until_field}__lt": now})
        taken = (
            claimable.filter(pk=pk)
            .filter(free)
            .update(**{lease.holder_field: holder, lease.until_field: lease.until(now)}, **fields)
        )
        return lease if taken else None

    def until(self, now=None):
        return (now or timezone.now()) + timedelta(seconds=self.seconds)

    def held(self) -> QuerySet:
        """The row, while this holder has it: every fenced read or write starts here."""
        return self.model._default_manager.filter(pk=self.pk, **{self.holder_field: self.holder})

    def write(self, **fields) -> None:
        """Write `fields` to the row, or raise LeaseLost (and write nothing)."""
        if not self.held().update(**fields):
            raise LeaseLost

    def renew(self, **fields) -> None:
        """Push the lease's end back (and write `fields`); LeaseLost if no longer held."""
        self.write(**{self.until_field: self.until()}, **fields)

    def release(self, **fields) -> bool:
        """Give the row back (and write `fields`); False if it was no longer held."""
        return bool(self.held().update(**{self.holder_field: "", self.until_field: None}, **fields))

    def lock(self) -> Model:
        """Inside a transaction: the row, locked until the commit, or LeaseLost. Writes
        that must commit only under the lease (a finish) go after this."""
        row = self.held().select_for_update().first()
        if row is None:
            raise LeaseLost
        return row
