"""Every route, every role: generated from the URL conf, so a route without a rule fails.

Six callers try every HTTP method of every route under /api/ (and both WebSocket routes)
against one team's objects: anonymous, an outsider (another team's member), the team's
viewer and editor, staff in no team, and a superuser. Each answer falls in one class:
401 (who are you?), 404 (no such thing, for you), 403 (seen, but your role is too low),
or allowed (anything else below 500). Each request runs in a transaction rolled back after
it, so every caller meets the same world. The admin has its own generic rule below.
"""

import asyncio
import base64
import hashlib
import io
import os
from dataclasses import dataclass
from uuid import uuid4

import pytest
import websockets
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

from exports import services as export_services
from exports.exporting.links import download_path
from exports.models import ExportJob, ImportJob
from filesync import services
from filesync.sync import services as sync_services
from filesync.sync import uploads
from tests.exports.conftest import run_to_end
from tests.waiting import patience

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "outsider", "viewer", "staff", "editor", "superuser")
ANON, HIDDEN, FORBIDDEN, OK = "401", "404", "403", "allowed"


def rule(outsider=HIDDEN, viewer=OK, staff=HIDDEN, editor=OK, superuser=OK) -> dict:
    return {
        "anonymous": ANON,
        "outsider": outsider,
        "viewer": viewer,
        "staff": staff,
        "editor": editor,
        "superuser": superuser,
    }


ANY_USER = rule(outsider=OK, staff=OK)
#: The API's description.
PUBLIC = {role: OK for role in ANY_USER}
TEAM_READ = rule()
TEAM_WRITE = rule(viewer=FORBIDDEN)
#: Jobs: whoever started them (the editor here) and superusers.
OWN_JOB = rule(viewer=HIDDEN)
#: Uploads, locks, replicas: their holder's alone.
PERSONAL = rule(viewer=HIDDEN, superuser=HIDDEN)
#: Removing a blob: someone who sent its bytes, or a superuser.
BLOB_REMOVAL = rule(viewer=HIDDEN)

RULES = {
    ("api-root", "get"): ANY_USER,
    ("schema", "get"): PUBLIC,
    ("api-docs", "get"): PUBLIC,
    ("team-list", "get"): ANY_USER,
    ("team-list", "post"): ANY_USER,
    ("team-detail", "get"): TEAM_READ,
    ("project-list", "get"): ANY_USER,
    ("project-list", "post"): TEAM_WRITE,
    ("project-detail", "get"): TEAM_READ,
    ("project-duplicate", "post"): TEAM_WRITE,
    ("file-list", "get"): ANY_USER,
    ("file-list", "post"): TEAM_WRITE,
    ("file-detail", "get"): TEAM_READ,
    ("file-detail", "patch"): TEAM_WRITE,
    ("file-detail", "delete"): TEAM_WRITE,
    ("file-duplicate", "post"): TEAM_WRITE,
    ("file-restore", "post"): TEAM_WRITE,
    ("file-libraries", "get"): TEAM_READ,
    ("file-libraries", "post"): TEAM_WRITE,
    ("file-unlink", "delete"): TEAM_WRITE,
    ("page-list", "get"): TEAM_READ,
    ("page-list", "post"): TEAM_WRITE,
    ("page-detail", "get"): TEAM_READ,
    ("media-list", "get"): TEAM_READ,
    ("media-list", "post"): TEAM_WRITE,
    ("media-detail", "get"): TEAM_READ,
    ("media-download", "get"): TEAM_READ,
    ("snapshot-list", "get"): TEAM_READ,
    ("snapshot-list", "post"): TEAM_WRITE,
    ("snapshot-detail", "get"): TEAM_READ,
    ("snapshot-restore", "post"): TEAM_WRITE,
    ("export-list", "get"): ANY_USER,
    ("export-list", "post"): TEAM_READ,
    ("export-detail", "get"): OWN_JOB,
    ("export-detail", "delete"): OWN_JOB,
    ("export-download", "get"): OWN_JOB,
    ("export-retry", "post"): OWN_JOB,
    ("export-events", "get"): OWN_JOB,
    ("import-list", "get"): ANY_USER,
    ("import-list", "post"): TEAM_WRITE,
    ("import-detail", "get"): OWN_JOB,
    ("import-detail", "delete"): OWN_JOB,
    ("import-events", "get"): OWN_JOB,
    ("webhook-secret", "get"): ANY_USER,
    ("webhook-secret", "post"): ANY_USER,
    ("sync-timestamp", "get"): ANY_USER,
    ("sync-changes", "get"): ANY_USER,
    ("sync-file", "get"): TEAM_READ,
    ("sync-blob", "get"): TEAM_READ,
    ("sync-blob", "head"): TEAM_READ,
    ("sync-blob", "put"): ANY_USER,
    ("sync-blob", "delete"): BLOB_REMOVAL,
    ("sync-blob-lock", "post"): TEAM_READ,
    ("sync-lock", "delete"): PERSONAL,
    ("sync-lock-keep", "post"): PERSONAL,
    ("sync-replicas", "get"): ANY_USER,
    ("sync-replicas", "post"): ANY_USER,
    ("sync-replica", "post"): PERSONAL,
    ("sync-uploads", "options"): ANY_USER,
    ("sync-uploads", "post"): ANY_USER,
    ("sync-upload", "head"): PERSONAL,
    ("sync-upload", "patch"): PERSONAL,
    ("sync-upload", "delete"): PERSONAL,
}

WEBSOCKETS = {"/ws/exports/{export}/": OWN_JOB, "/ws/imports/{import_job}/": OWN_JOB}

NEW_BYTES = os.urandom(32)
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def _methods(pattern: URLPattern) -> list[str]:
    callback = pattern.callback
    if actions := getattr(callback, "actions", None):
        # DRF adds HEAD beside GET to a viewset's actions at its first request: implied.
        return sorted(m for m in actions if m != "head")
    view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view is None:  # a function view (the async SSE and change-feed views): GET only
        return ["get"]
    base = APIView if issubclass(view, APIView) else object
    return sorted(m for m in METHODS if getattr(view, m, None) not in (None, getattr(base, m, 0)))


def api_routes() -> set[tuple[str, str]]:
    """(route name, method) of every route under /api/, from the URL conf."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif prefix.startswith("api/") or str(pattern.pattern).startswith("api/"):
                yield from ((pattern.name, method) for method in _methods(pattern))

    return set(walk(get_resolver().url_patterns))


def test_every_api_route_has_a_rule():
    """A new route, or a new method on a route, fails here until RULES says who may call it."""
    assert api_routes() == set(RULES)


@dataclass
class World:
    users: dict
    ids: dict


def request_body(name: str, method: str, ids: dict):
    """What a caller sends; ids in the body come from the same ids as the URL's."""
    return {
        ("team-list", "post"): {"name": "New"},
        ("project-list", "post"): {"team": str(ids["team"]), "name": "New"},
        ("file-list", "post"): {"project": str(ids["project"]), "name": "New"},
        ("file-detail", "patch"): {"name": "Renamed"},
        ("file-libraries", "post"): {"library": str(ids["library"])},
        ("page-list", "post"): {"name": "Two", "objects": {}},
        ("media-list", "post"): {"name": "later.png", "sha256": "cd" * 32},
        ("snapshot-list", "post"): {"label": "v2"},
        ("export-list", "post"): {"project": str(ids["project"])},
        ("import-list", "post"): {"project": str(ids["project"]), "blob": ids["sha256"]},
        ("sync-replicas", "post"): {"name": "another"},
        ("sync-blob", "put"): NEW_BYTES,
    }.get((name, method))


@pytest.fixture
def world(make_user, owner, editor, viewer, team, project, design, library) -> World:
    outsider = make_user("oscar")
    elsewhere = services.create_team(name="Elsewhere", owner=outsider)
    services.create_project(team=elsewhere, name="Theirs")
    staff = make_user("stella", is_staff=True)
    root = make_user("root", is_staff=True, is_superuser=True)

    services.link_library(file=design, library=library)
    page = services.add_page(file=design, name="Home", objects={})
    media = services.add_media(
        file=design,
        name="hero.png",
        stream=io.BytesIO(b"\x89PNG" + os.urandom(64)),
        content_type="image/png",
        user=editor,
    )
    snapshot = services.create_snapshot(file=design, label="v1", user=editor)
    export = run_to_end(export_services.create_export_job(user=editor, project=project))
    import_job = ImportJob.objects.create(
        created_by=editor, project=project, source_blob=media.blob_id
    )
    lock = sync_services.take_lock(blob=media.blob, holder=editor)
    replica = sync_services.register_replica(owner=editor, name="mirror")
    upload = uploads.create_upload(owner=editor, length=3, sha256="ab" * 32, metadata={})
    ids = {
        "team": team.pk,
        "project": project.pk,
        "file": design.pk,
        "library": library.pk,
        "page": page.page_id,
        "media": media.pk,
        "snapshot": snapshot.pk,
        "export": export.pk,
        "import_job": import_job.pk,
        "sha256": media.blob_id,
        "lock": lock.pk,
        "replica": replica.pk,
        "upload": upload.pk,
    }
    users = {
        "anonymous": None,
        "outsider": outsider,
        "viewer": viewer,
        "staff": staff,
        "editor": editor,
        "superuser": root,
    }
    return World(users=users, ids=ids)


def route_url(name: str, method: str, ids: dict) -> str:
    kwargs = {
        "team-": {"pk": ids["team"]},
        "project-": {"pk": ids["project"]},
        "file-": {"pk": ids["file"]},
        "page-": {"file_id": ids["file"], "page_id": ids["page"]},
        "media-": {"file_id": ids["file"], "pk": ids["media"]},
        "snapshot-": {"file_id": ids["file"], "pk": ids["snapshot"]},
        "export-": {"pk": ids["export"]},
        "import-": {"pk": ids["import_job"]},
    }
    sync = {
        "sync-file": {"file_id": ids["file"]},
        "sync-blob": {"sha256": ids["sha256"]},
        "sync-blob-lock": {"sha256": ids["sha256"]},
        "sync-lock": {"lock_id": ids["lock"]},
        "sync-lock-keep": {"lock_id": ids["lock"]},
        "sync-replica": {"replica_id": ids["replica"], "verb": "heartbeat"},
        "sync-upload": {"upload_id": ids["upload"]},
        "export-events": {"job_id": ids["export"]},
        "import-events": {"job_id": ids["import_job"]},
    }
    if name in sync:
        args = sync[name]
    elif name.startswith("sync-") or name == "webhook-secret":
        args = {}
    elif name.endswith("-list") or name in ("api-root", "schema", "api-docs") or "-" not in name:
        args = {}
    else:
        args = next(v for k, v in kwargs.items() if name.startswith(k))
        if name == "file-unlink":
            args = {**args, "library_id": ids["library"]}
        if name.startswith("page-") and name != "page-detail":
            args = {"file_id": ids["file"]}
    if name.endswith("-list") and name.split("-")[0] in ("page", "media", "snapshot"):
        args = {"file_id": ids["file"]}
    url = reverse(name, kwargs=args)
    if name == "export-download":
        job = ExportJob.objects.filter(pk=ids["export"]).first()
        url = download_path(job) if job else f"{url}?token=unknown"
    if name == "sync-blob" and method == "delete":
        url += "?before=9999999999"
    if name == "sync-changes":
        url += "?wait=0"
    return url


def request(client: Client, name: str, method: str, url: str, body):
    headers = {}
    if name.startswith("sync-upload"):
        headers["HTTP_TUS_RESUMABLE"] = "1.0.0"
    if (name, method) == ("sync-uploads", "post"):
        digest = base64.b64encode(hashlib.sha256(b"abc").hexdigest().encode()).decode()
        headers.update(HTTP_UPLOAD_LENGTH="3", HTTP_UPLOAD_METADATA=f"sha256 {digest}")
    if (name, method) == ("sync-upload", "patch"):
        headers["HTTP_UPLOAD_OFFSET"] = "0"
        return client.patch(url, b"abc", content_type="application/offset+octet-stream", **headers)
    if isinstance(body, bytes):
        return client.generic(
            method.upper(), url, body, content_type="application/octet-stream", **headers
        )
    if body is not None:
        return getattr(client, method)(url, body, content_type="application/json", **headers)
    return getattr(client, method)(url, **headers)


def answer_class(status: int) -> str:
    assert status < 500, f"server error {status}"
    return {401: ANON, 404: HIDDEN, 403: FORBIDDEN}.get(status, OK)


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def call(world: World, role: str, name: str, method: str, ids: dict | None = None):
    """One request as `role`, rolled back afterwards, so every caller meets the same world."""
    ids = ids or world.ids
    url = route_url(name, method, ids)
    client = client_for(world.users[role])  # its token committed: async views read elsewhere
    with transaction.atomic():
        response = request(client, name, method, url, request_body(name, method, ids))
        if response.streaming:
            response.close()
        transaction.set_rollback(True)
    return response


@pytest.mark.parametrize("name, method", sorted(RULES), ids=lambda v: v)
def test_route_answers_each_role_by_its_rule(world, name, method):
    """Each caller's answer falls in the class its rule says; where the outsider's is a 404,
    it is the very answer the editor gets for ids nobody has (foreign ids leak nothing)."""
    answers = {role: answer_class(call(world, role, name, method).status_code) for role in ROLES}
    assert answers == RULES[(name, method)]
    if RULES[(name, method)]["outsider"] == HIDDEN:
        foreign = call(world, "outsider", name, method)
        unknown_ids = {key: uuid4() for key in world.ids} | {"sha256": "0" * 64}
        unknown = call(world, "editor", name, method, ids=unknown_ids)
        assert (foreign.status_code, foreign.content) == (unknown.status_code, unknown.content)


@pytest.fixture
def live_env(live_env):
    """A job with no events yet says so at once: its socket's first message, a heartbeat."""
    return {**live_env, "EVENTS_HEARTBEAT_SECONDS": "0.2"}


@pytest.mark.live
def test_websocket_routes_answer_each_role_by_their_rule(world, asgi_server, tmp_path):
    """Over a live server, as the admin's page connects: a session cookie and its origin.
    A socket has no 401: whoever may not see the job gets the close code 4404. Every
    socket closes cleanly: the server logs no error."""
    for path, who in WEBSOCKETS.items():
        url = asgi_server.replace("http", "ws") + path.format(**world.ids)
        answers = {}
        for role in ROLES:
            headers = {"Origin": asgi_server}
            if (user := world.users[role]) is not None:
                headers["Cookie"] = session_cookie(user)
            answers[role] = asyncio.run(_websocket_answer(url, headers))
        assert answers == {role: OK if rule == OK else HIDDEN for role, rule in who.items()}
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log, log


def session_cookie(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


async def _websocket_answer(url: str, headers: dict) -> str:
    """OK when the first message is an event, HIDDEN when the socket closes with 4404."""
    try:
        async with websockets.connect(url, additional_headers=headers) as socket:
            await asyncio.wait_for(socket.recv(), patience(30))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4404, closed
        return HIDDEN
    return OK


# --- the admin ---------------------------------------------------------------------------

#: Admin models whose rows belong to a team: staff outside it must not reach them.
TEAM_ROWS = {
    "filesync_team": "team",
    "filesync_project": "project",
    "filesync_file": "file",
    "filesync_mediaobject": "media",
    "filesync_snapshot": "snapshot",
    "filesync_blob": "sha256",
    "exports_exportjob": "export",
    "exports_importjob": "import_job",
}


def admin_urls(ids: dict, *, unknown: bool = False) -> dict[str, str]:
    """Every named admin route with its arguments filled in: object pages of team rows
    get that row's id (or an id nobody has), the others an id of nothing."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif (prefix + str(pattern.pattern)).startswith("admin/") and pattern.name:
                yield pattern.name, prefix + str(pattern.pattern)

    urls = {}
    for name, route in walk(get_resolver().url_patterns):
        if "(?P<" in route or name == "view_on_site":
            continue
        model = next((m for m in TEAM_ROWS if name.startswith(m + "_")), None)
        row = str(ids[TEAM_ROWS[model]]) if model and not unknown else str(uuid4())
        path = route.replace("<path:object_id>", row).replace("<id>", "0")
        urls[name] = "/" + path.replace("<uuid:project_id>", str(ids["project"]))
    return urls


def test_the_admin_asks_who_is_there_on_every_route(world):
    """Anonymous callers and users without staff status are sent to the login page from
    every admin route; staff in no team reach no team's rows, and those rows answer them
    exactly as rows that do not exist; a superuser gets no server error anywhere."""
    urls = admin_urls(world.ids)
    for role in ("anonymous", "viewer"):
        client = Client()
        if world.users[role]:
            client.force_login(world.users[role])
        for name, url in urls.items():
            response = client.get(url)
            if name in ("login", "logout"):
                continue
            assert response.status_code == 302, (role, url)
            assert response["Location"].startswith("/admin/login/"), (role, url)

    staff, root = Client(), Client()
    staff.force_login(world.users["staff"])
    root.force_login(world.users["superuser"])
    unknown = admin_urls(world.ids, unknown=True)
    for name, url in urls.items():
        assert root.get(url).status_code < 500, url
        if any(name.startswith(model + "_") for model in TEAM_ROWS) and "<" not in url:
            mine, nobodys = staff.get(url), staff.get(unknown[name])
            assert mine.status_code != 200 or "changelist" in name or name.endswith("_add"), url
            assert (mine.status_code, mine.get("Location")) == (
                nobodys.status_code,
                nobodys.get("Location"),
            ), url
    listed = staff.get("/admin/filesync/file/").content.decode()
    assert "Landing page" not in listed
