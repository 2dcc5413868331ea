"""Duplicating files and projects, and restoring a snapshot into a new file or over the
current one: through the services, the HTTP API and the admin."""

import io
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.test import Client

from filesync import services
from filesync.models import (
    Change,
    ChangeKind,
    File,
    FileLibrary,
    MediaObject,
    Project,
    Role,
    Snapshot,
)
from filesync.selectors import get_file
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def other_team(make_user):
    return services.create_team(name="Elsewhere", owner=make_user("ophelia"))


@pytest.fixture
def foreign_library(other_team):
    """A library of another team: nobody in `team` can read it."""
    project = services.create_project(team=other_team, name="Their brand")
    return services.create_file(
        project=project,
        name="Their library",
        is_library=True,
        assets={"components": {"card": {"name": "Card"}}, "colors": {"blue": {"c": "#00f"}}},
    )


def objects_using(*, own: uuid.UUID, library: File, foreign: File, image: MediaObject) -> dict:
    """Objects holding every kind of reference: to the file itself, to a readable library,
    to an unreadable one, and to a media object."""
    return {
        "own": {"type": "component-instance", "component_file": str(own), "component_id": "me"},
        "lib": {"type": "rect", "fill_color_ref": {"file": str(library.id), "id": "red"}},
        "typo": {"type": "text", "typography_ref": {"file": str(library.id), "id": "h1"}},
        "far": {
            "type": "component-instance",
            "component_file": str(foreign.id),
            "component_id": "card",
        },
        "farc": {"type": "rect", "fill_color_ref": {"file": str(foreign.id), "id": "blue"}},
        "pic": {"type": "image", "image": str(image.id)},
        "plain": {"type": "ellipse"},
    }


@pytest.fixture
def rich_design(design, media, library, foreign_library):
    """`design` with its own component, two pages of references, media, and two links."""
    services.update_file(
        file=design,
        assets={"components": {"me": {"name": "Own card"}}, "colors": {"g": {"c": "#0f0"}}},
    )
    refs = objects_using(own=design.id, library=library, foreign=foreign_library, image=media)
    services.add_page(file=design, name="Home", objects=refs)
    services.add_page(file=design, name="About", objects={"pic": refs["pic"]})
    services.link_library(file=design, library=library)
    services.link_library(file=design, library=foreign_library)
    design.refresh_from_db()
    return design


def content(file: File, snapshot: Snapshot | None = None) -> dict:
    state = get_file(file.id, snapshot=snapshot, include_deleted=True)
    return {
        "assets": state.assets,
        "features": state.features,
        "pages": [(p.id, p.index, p.name, p.objects) for p in state.pages()],
        "media": sorted((m.name, m.blob_id, m.mtype, m.width, m.height) for m in state.media()),
    }


def media_ids_by_name(file: File) -> dict[str, str]:
    return {m.name: str(m.id) for m in MediaObject.objects.filter(file=file)}


def library_ids(file: File) -> set:
    return set(FileLibrary.objects.filter(file=file).values_list("library_id", flat=True))


def results(response):
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- services: duplicate --------------------------------------------------------------------


def test_a_copy_equals_the_original_up_to_the_id_mapping(
    rich_design, media, library, foreign_library, editor
):
    before = content(rich_design)

    copy = services.duplicate_file(file=rich_design, user=editor)

    assert copy.id != rich_design.id
    assert (copy.name, copy.project_id, copy.is_library) == (
        "Landing page (copy)",
        rich_design.project_id,
        False,
    )
    copied = content(copy)
    assert copied["assets"] == before["assets"]
    assert copied["features"] == before["features"]
    assert copied["media"] == before["media"]  # same blobs, names, types, sizes
    new_media = media_ids_by_name(copy)
    assert new_media["hero.png"] != str(media.id)
    assert MediaObject.objects.get(pk=new_media["hero.png"]).blob_id == media.blob_id
    # Pages keep their ids, index and names; objects are relinked.
    assert [p[:3] for p in copied["pages"]] == [p[:3] for p in before["pages"]]
    home = copied["pages"][0][3]
    assert home["own"] == {  # its own component: the copy's
        "type": "component-instance",
        "component_file": str(copy.id),
        "component_id": "me",
    }
    assert home["lib"] == before["pages"][0][3]["lib"]  # a readable library: kept
    assert home["typo"] == before["pages"][0][3]["typo"]
    assert home["far"] == {"type": "component-instance"}  # unreadable library: detached
    assert home["farc"] == {"type": "rect"}
    assert home["pic"] == {"type": "image", "image": new_media["hero.png"]}
    assert home["plain"] == {"type": "ellipse"}
    assert copied["pages"][1][3] == {"pic": {"type": "image", "image": new_media["hero.png"]}}
    assert library_ids(copy) == {library.id}
    # The original is untouched.
    assert content(rich_design) == before
    assert library_ids(rich_design) == {library.id, foreign_library.id}


def test_a_copy_by_the_system_keeps_every_live_reference(rich_design, foreign_library):
    copy = services.duplicate_file(file=rich_design)
    home = content(copy)["pages"][0][3]
    assert home["far"]["component_file"] == str(foreign_library.id)
    assert home["farc"]["fill_color_ref"]["file"] == str(foreign_library.id)
    assert foreign_library.id in library_ids(copy)


def test_references_to_a_library_in_the_trash_are_detached(rich_design, library, owner):
    services.soft_delete_file(file=library)
    copy = services.duplicate_file(file=rich_design, user=owner)
    home = content(copy)["pages"][0][3]
    assert home["lib"] == {"type": "rect"}
    assert home["typo"] == {"type": "text"}
    assert library_ids(copy) == set()


def test_a_copy_goes_to_another_project_when_asked(rich_design, team, editor):
    elsewhere = services.create_project(team=team, name="Archive")
    copy = services.duplicate_file(file=rich_design, project=elsewhere, user=editor)
    assert copy.project == elsewhere
    assert content(copy)["pages"][0][3]["own"]["component_file"] == str(copy.id)


def test_files_copied_together_point_at_each_other(project, library, editor):
    design = services.create_file(project=project, name="Uses the library")
    services.link_library(file=design, library=library)
    services.add_page(
        file=design,
        name="P",
        objects={"c": {"type": "rect", "fill_color_ref": {"file": str(library.id), "id": "red"}}},
    )

    design_copy, library_copy = services.duplicate_files(
        files=[design, library, design], project=project, user=editor
    )

    assert (design_copy.name, library_copy.name) == (
        "Uses the library (copy)",
        "Brand library (copy)",
    )
    assert library_copy.is_library
    assert library_copy.assets == library.assets
    ref = content(design_copy)["pages"][0][3]["c"]["fill_color_ref"]
    assert ref == {"file": str(library_copy.id), "id": "red"}
    assert library_ids(design_copy) == {library_copy.id}
    assert library_ids(design) == {library.id}


def test_duplicating_a_project_relinks_references_between_its_files(
    team, project, library, editor, png_bytes
):
    shared_project = services.create_project(team=team, name="Shared")
    shared = services.create_file(
        project=shared_project, name="Team library", is_library=True, assets={"colors": {"x": {}}}
    )
    design = services.create_file(project=project, name="Design")
    picture = services.add_media(
        file=design, name="p.png", stream=io.BytesIO(png_bytes), content_type="image/png"
    )
    services.link_library(file=design, library=library)
    services.link_library(file=design, library=shared)
    services.add_page(
        file=design,
        name="P",
        objects={
            "a": {
                "type": "component-instance",
                "component_file": str(library.id),
                "component_id": "btn",
            },
            "b": {"type": "rect", "fill_color_ref": {"file": str(shared.id), "id": "x"}},
            "i": {"type": "image", "image": str(picture.id)},
        },
    )
    gone = services.create_file(project=project, name="In the trash")
    services.soft_delete_file(file=gone)

    copy = services.duplicate_project(project=project, user=editor)

    assert (copy.name, copy.team_id) == ("Website (copy)", team.id)
    files = {f.name: f for f in copy.files.all()}
    assert set(files) == {"Brand library", "Design"}  # live files only, names kept
    objects = content(files["Design"])["pages"][0][3]
    assert objects["a"]["component_file"] == str(files["Brand library"].id)
    assert objects["b"]["fill_color_ref"]["file"] == str(shared.id)  # outside, readable: kept
    assert objects["i"]["image"] == media_ids_by_name(files["Design"])["p.png"]
    assert library_ids(files["Design"]) == {files["Brand library"].id, shared.id}
    assert library_ids(design) == {library.id, shared.id}
    assert project.files.count() == 3

    named = services.duplicate_project(project=project, user=editor, name="Website v2")
    assert named.name == "Website v2"


def test_pending_media_refuses_and_writes_nothing(rich_design, project, editor):
    services.add_pending_media(
        file=rich_design, name="later.png", sha256="ab" * 32, content_type="image/png", user=editor
    )
    before = store_state()

    with pytest.raises(ValidationError) as refused:
        services.duplicate_file(file=rich_design)
    assert "media" in refused.value.message_dict
    with pytest.raises(ValidationError):
        services.duplicate_project(project=project)

    assert store_state() == before


def test_a_file_in_the_trash_is_not_copied(design):
    services.soft_delete_file(file=design)
    before = store_state()
    with pytest.raises(ValidationError):
        services.duplicate_file(file=design)
    assert store_state() == before


def test_the_feed_records_the_copies(rich_design, library, editor):
    last = Change.objects.order_by("-seq").values_list("seq", flat=True).first()

    copy = services.duplicate_file(file=rich_design, user=editor)

    new = list(Change.objects.filter(seq__gt=last).values_list("kind", "file_id", "payload"))
    assert new == [
        (ChangeKind.FILE_CREATED, copy.id, {}),
        (ChangeKind.LIBRARY_LINKED, copy.id, {"library": str(library.id)}),
    ]


# --- services: restore ----------------------------------------------------------------------


def test_restore_a_snapshot_as_a_new_file(rich_design, media, library, editor, png_bytes):
    snapshot = services.create_snapshot(file=rich_design, label="v1", user=editor)
    frozen = content(rich_design, snapshot)
    services.add_page(file=rich_design, name="Later")
    services.update_file(file=rich_design, name="Renamed")
    MediaObject.objects.filter(pk=media.pk).delete()
    rich_design.refresh_from_db()
    now = content(rich_design)
    revision = rich_design.revision

    copy = services.restore_snapshot_as_new_file(snapshot=snapshot, user=editor)

    assert (copy.name, copy.project_id) == ("Landing page (v1)", rich_design.project_id)
    restored = content(copy)
    assert restored["media"] == frozen["media"]
    assert [p[:3] for p in restored["pages"]] == [p[:3] for p in frozen["pages"]]
    home = restored["pages"][0][3]
    assert home["own"]["component_file"] == str(copy.id)
    assert home["lib"]["fill_color_ref"]["file"] == str(library.id)
    assert "component_file" not in home["far"]
    assert home["pic"]["image"] == media_ids_by_name(copy)["hero.png"] != str(media.id)
    assert library_ids(copy) == {library.id}
    # The file and its snapshots stay as they were.
    rich_design.refresh_from_db()
    assert (rich_design.revision, content(rich_design)) == (revision, now)
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [snapshot.pk]
    assert Change.objects.filter(kind=ChangeKind.FILE_CREATED, file_id=copy.id).exists()


def test_restore_over_the_file_keeps_what_it_replaces_in_a_snapshot(design, editor):
    services.add_page(file=design, name="Kept")
    snapshot = services.create_snapshot(file=design, label="good state")
    services.add_page(file=design, name="Regretted")
    design.refresh_from_db()
    replaced = content(design)

    restored = services.restore_snapshot(snapshot=snapshot, user=editor)

    assert [p[2] for p in content(design)["pages"]] == ["Kept"]
    before = Snapshot.objects.exclude(pk=snapshot.pk).get()
    assert before.label == "Before restoring good state"
    assert before.created_by == editor
    assert before.revision == design.revision == restored.revision - 1
    assert content(design, before) == replaced
    # ... so the restore can be undone.
    services.restore_snapshot(snapshot=before)
    assert [p[2] for p in content(design)["pages"]] == ["Kept", "Regretted"]


def test_restore_over_the_file_names_an_unlabelled_snapshot_by_id(design):
    snapshot = services.create_snapshot(file=design)
    services.restore_snapshot(snapshot=snapshot)
    assert Snapshot.objects.filter(label=f"Before restoring {snapshot.pk}").exists()


def test_restore_over_a_file_with_pending_media_refuses(design, editor):
    snapshot = services.create_snapshot(file=design)
    services.add_pending_media(
        file=design, name="x", sha256="cd" * 32, content_type="image/png", user=editor
    )
    before = store_state()
    with pytest.raises(ValidationError):
        services.restore_snapshot(snapshot=snapshot)
    assert store_state() == before


# --- HTTP API -------------------------------------------------------------------------------


def test_api_duplicates_a_file(api_for, editor, rich_design, library):
    response = api_for(editor).post(f"/api/files/{rich_design.id}/duplicate/")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Landing page (copy)"
    assert body["project"] == str(rich_design.project_id)
    assert body["libraries"] == [str(library.id)]
    copy = File.objects.get(pk=body["id"])
    assert content(copy)["pages"][0][3]["own"]["component_file"] == str(copy.id)
    assert "component_file" not in content(copy)["pages"][0][3]["far"]


def test_api_duplicates_into_a_project_the_user_edits(
    api_for, editor, design, other_team, make_user
):
    theirs = services.create_project(team=other_team, name="Theirs")
    client = api_for(editor)
    before = store_state()

    assert (
        client.post(
            f"/api/files/{design.id}/duplicate/", {"project": str(theirs.id)}, format="json"
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/files/{design.id}/duplicate/", {"project": str(uuid.uuid4())}, format="json"
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/files/{design.id}/duplicate/", {"project": "nope"}, format="json"
        ).status_code
        == 400
    )
    assert store_state() == before
    services.set_membership(team=other_team, user=editor, role=Role.VIEWER)
    before = store_state()
    assert (
        client.post(
            f"/api/files/{design.id}/duplicate/", {"project": str(theirs.id)}, format="json"
        ).status_code
        == 403
    )
    assert store_state() == before

    services.set_membership(team=other_team, user=editor, role=Role.EDITOR)
    response = client.post(
        f"/api/files/{design.id}/duplicate/", {"project": str(theirs.id)}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["project"] == str(theirs.id)


def test_a_viewer_may_copy_a_file_into_a_project_they_edit(api_for, viewer, design):
    mine = services.create_team(name="Mine", owner=viewer)
    target = services.create_project(team=mine, name="Scratch")
    client = api_for(viewer)
    before = store_state()
    assert client.post(f"/api/files/{design.id}/duplicate/").status_code == 403
    assert store_state() == before
    response = client.post(
        f"/api/files/{design.id}/duplicate/", {"project": str(target.id)}, format="json"
    )
    assert response.status_code == 201, response.content


def test_api_refuses_viewers_and_hides_from_outsiders(
    api_for, owner, viewer, outsider, rich_design, project
):
    snapshot = services.create_snapshot(file=rich_design)
    clients = {user: api_for(user) for user in (owner, viewer, outsider)}
    before = store_state()
    calls = [
        (f"/api/files/{rich_design.id}/duplicate/", {}),
        (f"/api/projects/{project.id}/duplicate/", {}),
        (f"/api/files/{rich_design.id}/snapshots/{snapshot.id}/restore/", {"as_new_file": True}),
        (f"/api/files/{rich_design.id}/snapshots/{snapshot.id}/restore/", {}),
    ]
    for user, status in ((viewer, 403), (outsider, 404)):
        for url, body in calls:
            assert clients[user].post(url, body, format="json").status_code == status, url
    for url in (
        f"/api/files/{uuid.uuid4()}/duplicate/",
        f"/api/projects/{uuid.uuid4()}/duplicate/",
        f"/api/files/{rich_design.id}/snapshots/{uuid.uuid4()}/restore/",
    ):
        assert clients[owner].post(url).status_code == 404
    assert store_state() == before


def test_api_duplicating_a_file_in_the_trash_is_409(api_for, editor, design):
    services.soft_delete_file(file=design)
    client = api_for(editor)
    before = store_state()
    response = client.post(f"/api/files/{design.id}/duplicate/")
    assert response.status_code == 409
    assert store_state() == before


def test_api_duplicating_with_pending_media_is_400(api_for, editor, design):
    services.add_pending_media(
        file=design, name="x", sha256="ef" * 32, content_type="image/png", user=editor
    )
    client = api_for(editor)
    before = store_state()
    response = client.post(f"/api/files/{design.id}/duplicate/")
    assert response.status_code == 400
    assert "media" in response.json()
    assert client.post(f"/api/projects/{design.project_id}/duplicate/").status_code == 400
    assert store_state() == before


def test_api_duplicates_a_project(api_for, editor, project, rich_design, library):
    response = api_for(editor).post(
        f"/api/projects/{project.id}/duplicate/", {"name": "Website 2"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["team"]) == ("Website 2", str(project.team_id))
    files = results(api_for(editor).get("/api/files/", {"project": body["id"]}))
    by_name = {f["name"]: f for f in files}
    assert set(by_name) == {"Brand library", "Landing page"}
    assert by_name["Landing page"]["libraries"] == [by_name["Brand library"]["id"]]

    default = api_for(editor).post(f"/api/projects/{project.id}/duplicate/")
    assert default.status_code == 201
    assert default.json()["name"] == "Website (copy)"


def test_api_restores_a_snapshot_as_a_new_file_or_over_the_file(api_for, editor, design):
    services.add_page(file=design, name="Kept")
    snapshot = services.create_snapshot(file=design, label="v1")
    services.add_page(file=design, name="Regretted")
    url = f"/api/files/{design.id}/snapshots/{snapshot.id}/restore/"
    client = api_for(editor)

    as_new = client.post(url, {"as_new_file": True}, format="json")
    assert as_new.status_code == 201, as_new.content
    assert as_new.json()["name"] == "Landing page (v1)"
    copy = File.objects.get(pk=as_new.json()["id"])
    assert [p.name for p in copy.pages.all()] == ["Kept"]
    assert [p.name for p in design.pages.all()] == ["Kept", "Regretted"]
    assert Snapshot.objects.count() == 1

    over = client.post(url, {"as_new_file": False}, format="json")
    assert over.status_code == 200, over.content
    assert over.json()["id"] == str(design.id)
    assert [p.name for p in design.pages.all()] == ["Kept"]
    before = Snapshot.objects.get(label="Before restoring v1")
    assert [p.name for p in before.pages.all()] == ["Kept", "Regretted"]
    listed = results(client.get(f"/api/files/{design.id}/snapshots/"))
    assert {s["label"] for s in listed} == {"v1", "Before restoring v1"}


def test_api_restore_into_a_file_in_the_trash_is_409(api_for, editor, design):
    snapshot = services.create_snapshot(file=design)
    services.soft_delete_file(file=design)
    url = f"/api/files/{design.id}/snapshots/{snapshot.id}/restore/"
    client = api_for(editor)
    before = store_state()
    assert client.post(url, {"as_new_file": True}, format="json").status_code == 409
    assert client.post(url, {"as_new_file": False}, format="json").status_code == 409
    assert store_state() == before


def test_schema_lists_the_new_endpoints(client):
    schema = client.get("/api/schema/").content
    for path in (
        b"/api/files/{id}/duplicate/",
        b"/api/projects/{id}/duplicate/",
        b"/api/files/{file_id}/snapshots/{id}/restore/",
        b"as_new_file",
    ):
        assert path in schema


# --- admin ----------------------------------------------------------------------------------


@pytest.fixture
def staff(editor):
    """The team's editor as staff with the filesync view/change permissions."""
    editor.is_staff = True
    editor.save()
    editor.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="filesync", codename__regex=r"^(view|change)_"
        )
    )
    client = Client()
    client.force_login(editor)
    return client


def run_action(client, url, action, *objects, follow=True):
    return client.post(
        url, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=follow
    )


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_admin_duplicates_files(staff, rich_design, library):
    trashed = services.create_file(project=rich_design.project, name="Old")
    services.soft_delete_file(file=trashed)

    response = run_action(staff, "/admin/filesync/file/", "duplicate", rich_design, trashed)

    assert "1 file duplicated." in messages_of(response)
    assert "1 file in the trash was not duplicated." in messages_of(response)
    copy = File.objects.get(name="Landing page (copy)")
    assert content(copy)["pages"][0][3]["own"]["component_file"] == str(copy.id)
    assert library_ids(copy) == {library.id}
    assert not File.objects.filter(name="Old (copy)").exists()


def test_admin_duplicate_reports_pending_media(staff, design, editor):
    services.add_pending_media(
        file=design, name="x", sha256="12" * 32, content_type="image/png", user=editor
    )
    before = store_state()
    response = run_action(staff, "/admin/filesync/file/", "duplicate", design)
    assert any("still uploading" in m for m in messages_of(response))
    assert store_state() == before


def test_admin_duplicates_projects(staff, project, rich_design):
    response = run_action(staff, "/admin/filesync/project/", "duplicate", project)
    assert "1 project duplicated." in messages_of(response)
    copy = Project.objects.get(name="Website (copy)")
    assert sorted(copy.files.values_list("name", flat=True)) == ["Brand library", "Landing page"]


def test_admin_restores_a_snapshot_as_a_new_file(staff, design):
    services.add_page(file=design, name="Kept")
    snapshot = services.create_snapshot(file=design, label="v1")
    services.add_page(file=design, name="Later")

    response = run_action(staff, "/admin/filesync/snapshot/", "restore_as_new_file", snapshot)

    assert "Restored as a new file: “Landing page (v1)”." in messages_of(response)
    copy = File.objects.get(name="Landing page (v1)")
    assert [p.name for p in copy.pages.all()] == ["Kept"]
    assert [p.name for p in design.pages.all()] == ["Kept", "Later"]


def test_admin_restore_over_the_file_keeps_a_snapshot_of_what_it_replaced(staff, editor, design):
    services.add_page(file=design, name="Kept")
    snapshot = services.create_snapshot(file=design, label="v1")
    services.add_page(file=design, name="Later")

    response = run_action(staff, "/admin/filesync/snapshot/", "restore", snapshot)

    assert "1 snapshot(s) restored." in messages_of(response)
    before = Snapshot.objects.get(label="Before restoring v1")
    assert before.created_by == editor
    assert [p.name for p in before.pages.all()] == ["Kept", "Later"]
    assert [p.name for p in design.pages.all()] == ["Kept"]


def test_admin_copy_actions_need_the_editor_role(staff, editor, team, project, design):
    services.set_membership(team=team, user=editor, role=Role.VIEWER)
    snapshot = services.create_snapshot(file=design)
    before = store_state()
    for url, action, obj in (
        ("/admin/filesync/file/", "duplicate", design),
        ("/admin/filesync/project/", "duplicate", project),
        ("/admin/filesync/snapshot/", "restore_as_new_file", snapshot),
        ("/admin/filesync/snapshot/", "restore", snapshot),
    ):
        assert run_action(staff, url, action, obj, follow=False).status_code == 403, action
    assert store_state() == before


def test_admin_copy_actions_do_not_reach_other_teams(staff, foreign_library):
    snapshot = services.create_snapshot(file=foreign_library)
    before = store_state()
    run_action(staff, "/admin/filesync/file/", "duplicate", foreign_library)
    run_action(staff, "/admin/filesync/project/", "duplicate", foreign_library.project)
    run_action(staff, "/admin/filesync/snapshot/", "restore_as_new_file", snapshot)
    run_action(staff, "/admin/filesync/snapshot/", "restore", snapshot)
    assert store_state() == before
