"""Server-sent events for API clients: GET /api/exports/<id>/events and
/api/imports/<id>/events (one async view; the URLconf says which jobs)."""

import json

from django.http import Http404, JsonResponse, StreamingHttpResponse

from common.auth import read, request_user

from .jobs.listening import job_events as follow
from .selectors import imports_for, jobs_for

VISIBLE = {"export": jobs_for, "import": imports_for}


def _last_seen(request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


async def _stream(jobs, job_id, after: int):
    yield "retry: 2000\n\n"
    async for event in follow(jobs, job_id, after):
        if event is None:
            yield ": heartbeat\n\n"
            continue
        data = json.dumps(event.data, separators=(",", ":"))
        yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"


async def job_events(request, job_id, kind: str = "export"):
    """The job's events as `text/event-stream`; honours Last-Event-ID; ends after the last."""
    user = await request_user(request)
    if user is None:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    jobs = VISIBLE[kind](user)
    visible = await read(lambda: jobs.filter(pk=job_id).exists())
    if not visible:
        raise Http404(f"No such {kind}.")
    response = StreamingHttpResponse(
        _stream(jobs.model, job_id, _last_seen(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
