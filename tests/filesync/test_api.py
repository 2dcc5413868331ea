import hashlib
import io
import uuid

import pytest

from filesync import services
from filesync.models import Change, ChangeKind, Snapshot, Team
from filesync.selectors import get_file
from tests.downloads import download, served_by_s3
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db


def results(response):
    assert response.status_code == 200, response.content
    return response.json()["results"]


def anonymous_writes(design) -> list[tuple[str, str, dict]]:
    """One write of each kind, to the files API and to the sync protocol."""
    data = b"bytes nobody may store"
    sha = hashlib.sha256(data).hexdigest()
    tus = {"HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_LENGTH": "3", "format": "json"}
    return [
        ("post", "/api/files/", {"data": {"project": str(design.project_id)}, "format": "json"}),
        ("post", f"/api/files/{design.id}/pages/", {"data": {"name": "p"}, "format": "json"}),
        ("delete", f"/api/files/{design.id}/", {}),
        ("put", f"/api/sync/blobs/{sha}", {"data": data, "content_type": "application/x"}),
        ("post", "/api/sync/uploads/", tus),
        ("post", "/api/sync/replicas", {"data": {"name": "laptop"}, "format": "json"}),
        ("post", "/api/teams/", {"data": {"name": "Mine"}, "format": "json"}),
    ]


@pytest.mark.parametrize("token", [None, "not-a-real-key"], ids=["no-credentials", "bad-token"])
def test_requests_without_valid_credentials_are_401_and_write_nothing(design, token):
    from rest_framework.test import APIClient

    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/files/").status_code == 401
    before = store_state()
    for method, url, extra in anonymous_writes(design):
        response = getattr(client, method)(url, **extra)
        assert response.status_code == 401, (method, url, response.status_code)
    assert store_state() == before


def test_team_members_see_files_and_outsiders_get_404(api_for, viewer, outsider, design, library):
    listed = results(api_for(viewer).get("/api/files/"))
    assert {f["id"] for f in listed} == {str(design.id), str(library.id)}
    assert results(api_for(outsider).get("/api/files/")) == []
    for path in (
        f"/api/files/{design.id}/",
        f"/api/files/{design.id}/pages/",
        f"/api/files/{design.id}/media/",
        f"/api/files/{design.id}/snapshots/",
        f"/api/projects/{design.project_id}/",
        f"/api/teams/{design.project.team_id}/",
    ):
        assert api_for(outsider).get(path).status_code == 404, path
        assert api_for(viewer).get(path).status_code == 200, path


def test_unknown_and_malformed_ids_answer_404(api_for, viewer, design):
    client = api_for(viewer)
    assert client.get(f"/api/files/{uuid.uuid4()}/").status_code == 404
    assert client.get("/api/files/not-a-uuid/").status_code == 404
    assert client.get(f"/api/files/{design.id}/media/{uuid.uuid4()}/download/").status_code == 404


def test_create_team_makes_the_creator_its_owner(api_for, outsider):
    response = api_for(outsider).post("/api/teams/", {"name": "Mine"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["role"] == "owner"
    assert Team.objects.get(pk=response.json()["id"]).memberships.get().user == outsider


def test_editor_creates_a_file_and_a_page(api_for, editor, project):
    client = api_for(editor)
    response = client.post(
        "/api/files/",
        {"project": str(project.id), "name": "New", "features": ["components/v2"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    file_id = response.json()["id"]
    page = client.post(
        f"/api/files/{file_id}/pages/",
        {"name": "Cover", "objects": {"o": {"type": "text", "content": "hi"}}},
        format="json",
    )
    assert page.status_code == 201, page.content
    assert page.json()["index"] == 0
    assert client.get(f"/api/files/{file_id}/").json()["revision"] == 2


def test_viewer_may_read_but_not_write(api_for, viewer, project, design):
    client = api_for(viewer)
    before = store_state()
    response = client.post("/api/files/", {"project": str(project.id), "name": "x"}, format="json")
    assert response.status_code == 403
    assert client.delete(f"/api/files/{design.id}/").status_code == 403
    assert client.patch(f"/api/files/{design.id}/", {"name": "y"}, format="json").status_code == 403
    assert client.post(f"/api/files/{design.id}/pages/", {"name": "p"}).status_code == 403
    assert store_state() == before


@pytest.fixture
def elsewhere(outsider) -> dict:
    """Ids of rows that exist, in a team the requester is not in."""
    team = services.create_team(name="Elsewhere", owner=outsider)
    project = services.create_project(team=team, name="Theirs")
    library = services.create_file(project=project, name="Their library", is_library=True)
    snapshot = services.create_snapshot(file=library, label="theirs")
    return {"team": team.id, "project": project.id, "file": library.id, "snapshot": snapshot.id}


#: Every create route that names another row in its body: the route, the body around the
#: id, and which kind of row the id is.
BODY_IDS = [
    ("/api/projects/", lambda id: {"team": id, "name": "x"}, "team"),
    ("/api/files/", lambda id: {"project": id, "name": "x"}, "project"),
    ("/api/files/{design}/libraries/", lambda id: {"library": id}, "file"),
    ("/api/files/{design}/duplicate/", lambda id: {"project": id}, "project"),
    ("/api/exports/", lambda id: {"files": [id]}, "file"),
    ("/api/exports/", lambda id: {"project": id}, "project"),
    ("/api/exports/", lambda id: {"snapshot": id}, "snapshot"),
    ("/api/imports/", lambda id: {"project": id, "blob": "0" * 64}, "project"),
]


@pytest.mark.parametrize("route, body, kind", BODY_IDS, ids=[f"{r}-{k}" for r, _, k in BODY_IDS])
def test_a_body_id_in_another_team_answers_like_one_that_exists_nowhere(
    api_for, editor, design, elsewhere, route, body, kind
):
    client = api_for(editor)
    url = route.format(design=design.id)
    before = store_state()
    foreign = client.post(url, body(str(elsewhere[kind])), format="json")
    nowhere = client.post(url, body(str(uuid.uuid4())), format="json")
    assert foreign.status_code == nowhere.status_code == 404, (foreign.content, nowhere.content)
    assert foreign.json() == nowhere.json()
    assert store_state() == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x"}, "project"),
        ({"project": "not-a-uuid", "name": "x"}, "project"),
        ({"name": ""}, "name"),
        ({"features": ["warp-drive"]}, "features"),
        ({"assets": {"fonts": {}}}, "assets"),
        ({"assets": {"colors": []}}, "assets"),
    ],
)
def test_bad_file_input_answers_400_with_field_errors(api_for, editor, project, body, field):
    payload = {"project": str(project.id), "name": "x", **body}
    if "project" not in body and field == "project":
        payload.pop("project")
    client = api_for(editor)
    before = store_state()
    response = client.post("/api/files/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert store_state() == before


def test_malformed_page_objects_answer_400_and_write_nothing(api_for, editor, design):
    client = api_for(editor)
    before = store_state()
    response = client.post(
        f"/api/files/{design.id}/pages/",
        {"name": "p", "objects": {"x": {"type": "rect", "fill_color_ref": "red"}}},
        format="json",
    )
    assert response.status_code == 400
    assert "fill_color_ref" in response.json()["objects"][0]
    assert store_state() == before


def test_rename_then_soft_delete_then_restore(api_for, editor, design):
    client = api_for(editor)
    renamed = client.patch(f"/api/files/{design.id}/", {"name": "Renamed"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"
    assert client.delete(f"/api/files/{design.id}/").status_code == 204
    assert results(client.get("/api/files/")) == []
    trash = results(client.get("/api/files/?deleted=true"))
    assert [f["id"] for f in trash] == [str(design.id)]
    assert trash[0]["purge_after"] is not None
    before = store_state()
    blocked = client.post(f"/api/files/{design.id}/pages/", {"name": "p"}, format="json")
    assert blocked.status_code == 409
    assert store_state() == before
    restored = client.post(f"/api/files/{design.id}/restore/")
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert [f["id"] for f in results(client.get("/api/files/"))] == [str(design.id)]


def test_link_library_checks_kind_and_access(api_for, editor, outsider, design, library, make_user):
    client = api_for(editor)
    response = client.post(
        f"/api/files/{design.id}/libraries/", {"library": str(library.id)}, format="json"
    )
    assert response.status_code == 201, response.content
    assert [link["library"] for link in response.json()] == [str(library.id)]

    foreign_team = services.create_team(name="Other", owner=outsider)
    foreign_project = services.create_project(team=foreign_team, name="P")
    foreign_lib = services.create_file(project=foreign_project, name="L", is_library=True)
    before = store_state()
    not_a_library = client.post(
        f"/api/files/{library.id}/libraries/", {"library": str(design.id)}, format="json"
    )
    assert not_a_library.status_code == 400
    assert "library" in not_a_library.json()
    foreign = client.post(
        f"/api/files/{design.id}/libraries/", {"library": str(foreign_lib.id)}, format="json"
    )
    assert foreign.status_code == 404
    assert store_state() == before


def test_unlink_library(api_for, editor, viewer, outsider, design, library):
    services.link_library(file=design, library=library)
    url = f"/api/files/{design.id}/libraries/{library.id}/"
    clients = {user: api_for(user) for user in (viewer, outsider, editor)}

    before = store_state()
    assert clients[viewer].delete(url).status_code == 403
    assert clients[outsider].delete(url).status_code == 404
    assert store_state() == before
    assert clients[editor].delete(url).status_code == 204

    assert not design.library_links.exists()
    assert Change.objects.filter(file_id=design.id, kind=ChangeKind.LIBRARY_UNLINKED).exists()
    before = store_state()
    assert clients[editor].delete(url).status_code == 404
    assert store_state() == before


def test_media_upload_and_download_round_trip(api_for, editor, viewer, design, png_bytes):
    """On either storage: the filesystem serves the bytes and ranges itself, S3's presigned
    URL does; both as an attachment."""
    upload = api_for(editor).post(
        f"/api/files/{design.id}/media/",
        {"upload": io.BytesIO(png_bytes), "width": 10, "height": 12},
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    body = upload.json()
    assert body["blob"]["sha256"] == hashlib.sha256(png_bytes).hexdigest()
    client, url = api_for(viewer), f"/api/files/{design.id}/media/{body['id']}/download/"
    whole = download(client, url)
    assert whole.status == 200 and whole.body == png_bytes
    assert whole.redirected == served_by_s3()
    assert whole.headers["content-disposition"].startswith("attachment")
    part = download(client, url, HTTP_RANGE="bytes=100-1099")
    assert part.status == 206 and part.body == png_bytes[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(png_bytes)}"
    assert download(client, url, HTTP_RANGE=f"bytes={len(png_bytes)}-").status == 416


def test_media_upload_without_a_file_is_400_and_stores_nothing(api_for, editor, design):
    client = api_for(editor)
    before = store_state()
    response = client.post(f"/api/files/{design.id}/media/", {"name": "x"}, format="multipart")
    assert response.status_code == 400
    assert "upload" in response.json()
    assert store_state() == before


def test_media_upload_by_a_viewer_is_403_and_stores_nothing(api_for, viewer, design, png_bytes):
    client = api_for(viewer)
    before = store_state()
    response = client.post(
        f"/api/files/{design.id}/media/", {"upload": io.BytesIO(png_bytes)}, format="multipart"
    )
    assert response.status_code == 403
    assert store_state() == before


def test_snapshots_create_list_and_restore(api_for, editor, viewer, design):
    services.add_page(file=design, name="Home")
    client = api_for(editor)
    created = client.post(f"/api/files/{design.id}/snapshots/", {"label": "v1"}, format="json")
    assert created.status_code == 201, created.content
    services.add_page(file=design, name="Extra")
    reader = api_for(viewer)
    listed = results(reader.get(f"/api/files/{design.id}/snapshots/"))
    assert [s["label"] for s in listed] == ["v1"]
    before = store_state()
    restore = f"/api/files/{design.id}/snapshots/{listed[0]['id']}/restore/"
    assert reader.post(restore).status_code == 403
    assert reader.post(f"/api/files/{design.id}/snapshots/", {"label": "v2"}).status_code == 403
    assert store_state() == before
    restored = client.post(f"/api/files/{design.id}/snapshots/{listed[0]['id']}/restore/")
    assert restored.status_code == 200
    assert [p.name for p in design.pages.all()] == ["Home"]
    before = Snapshot.objects.exclude(label="v1").get()
    assert before.label == "Before restoring v1"
    assert [p.name for p in get_file(design.id, snapshot=before).pages()] == ["Home", "Extra"]


def test_restoring_another_files_snapshot_is_404(api_for, editor, design, library):
    snapshot = services.create_snapshot(file=library)
    client = api_for(editor)
    before = store_state()
    response = client.post(f"/api/files/{design.id}/snapshots/{snapshot.id}/restore/")
    assert response.status_code == 404
    assert store_state() == before


def test_lists_are_paginated(api_for, viewer, project):
    for n in range(55):
        services.create_file(project=project, name=f"f{n:02d}")
    first = api_for(viewer).get("/api/files/").json()
    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"]


def test_schema_and_docs_are_served_from_local_assets(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/files/{id}/restore/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html
