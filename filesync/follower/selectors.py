"""Reads of the follower's state: where it may acknowledge the feed, and its progress."""

from django.db.models import Count, Min, Sum

from .models import OPEN_STATES, Download, DownloadState, Leader


def ack_position(leader: Leader) -> int:
    """The feed position this follower holds everything up to: the applied feed, held back
    before the first change whose download is still open or failed."""
    waiting = Download.objects.filter(
        leader=leader, state__in=(*OPEN_STATES, DownloadState.FAILED)
    ).aggregate(first=Min("since_seq"))["first"]
    return leader.feed_seq if waiting is None else min(leader.feed_seq, waiting - 1)


def progress(leader: Leader) -> dict:
    """Downloads by state, and the blob bytes fetched (by the latest attempt of each)."""
    counts = dict(
        Download.objects.filter(leader=leader)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    fetched = Download.objects.filter(leader=leader).aggregate(n=Sum("bytes_done"))["n"]
    return {
        **{state: counts.get(state, 0) for state in DownloadState.values},
        "bytes": fetched or 0,
    }


def is_idle(leader: Leader) -> bool:
    """Nothing left to fetch now (failed rows wait for an operator)."""
    return not Download.objects.filter(leader=leader, state__in=OPEN_STATES).exists()


def is_downloading(download: Download) -> bool:
    """Some worker holds the row now."""
    return Download.objects.filter(pk=download.pk, state=DownloadState.DOWNLOADING).exists()
