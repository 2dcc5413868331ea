"""The admin, driven through HTTP like a browser would."""

import io
import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client

from filesync import services
from filesync.models import File, FileLibrary, Project, Role, Snapshot
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db

FILES = "/admin/filesync/file/"


@pytest.fixture
def other_team(make_user):
    return services.create_team(name="Elsewhere", owner=make_user("ophelia"))


@pytest.fixture
def foreign_file(other_team):
    project = services.create_project(team=other_team, name="Secret project")
    return services.create_file(project=project, name="Foreign plans")


@pytest.fixture
def staff_editor(editor):
    """A member of `team` who is staff (not superuser) with the filesync view/change perms."""
    editor.is_staff = True
    editor.save()
    editor.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="filesync", codename__regex=r"^(view|change)_"
        )
    )
    return editor


def run_action(client, url, action, *objects, follow=True):
    return client.post(
        url,
        {"action": action, "_selected_action": [str(o.pk) for o in objects]},
        follow=follow,
    )


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def result_rows(response):
    """The changelist rows, as the objects the admin rendered."""
    return list(response.context["cl"].result_list)


# --- login and CSRF -------------------------------------------------------------------------


def test_superuser_logs_in_through_the_form_with_csrf_enforced(admin_user):
    client = Client(enforce_csrf_checks=True)
    form = client.get("/admin/login/")
    assert form.status_code == 200
    token = client.cookies["csrftoken"].value
    before = store_state()

    refused = client.post("/admin/login/", {"username": "root", "password": "pw-root"})
    assert refused.status_code == 403
    assert client.get("/admin/").status_code == 302  # still anonymous
    assert store_state() == before

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "pw-root", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    index = client.get("/admin/")
    assert index.status_code == 200
    assert index.context["user"] == admin_user
    assert b"Site administration" in index.content


def test_wrong_password_does_not_log_in(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    before = store_state()
    response = client.post(
        "/admin/login/",
        {
            "username": "root",
            "password": "nope",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 200  # the form again, with an error
    assert response.context["form"].errors
    assert client.get("/admin/").status_code == 302
    assert store_state() == before


def test_action_post_without_csrf_token_is_refused_and_changes_nothing(admin_user, design):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get(FILES)  # sets the csrftoken cookie, which is not enough on its own
    before = store_state()

    response = run_action(client, FILES, "soft_delete", design, follow=False)

    assert response.status_code == 403
    assert store_state() == before


def test_action_post_with_csrf_token_is_accepted(admin_user, design):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get(FILES)
    response = client.post(
        FILES,
        {
            "action": "soft_delete",
            "_selected_action": [str(design.pk)],
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 302
    design.refresh_from_db()
    assert design.deleted_at is not None


# --- File changelist ------------------------------------------------------------------------


def test_file_changelist_shows_name_project_revision_pages_and_state(admin_client, design, library):
    services.add_page(file=design, name="One")
    services.add_page(file=design, name="Two")
    services.soft_delete_file(file=library)
    design.refresh_from_db()
    library.refresh_from_db()

    response = admin_client.get(FILES)

    assert response.status_code == 200
    rows = {f.name: f for f in result_rows(response)}
    assert set(rows) == {"Landing page", "Brand library"}
    assert rows["Landing page"].page_total == 2
    assert rows["Brand library"].page_total == 0

    html = response.content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    for column in ("name", "project", "revision", "page_count", "deletion_state"):
        assert column in headers

    design_row = _row_html(html, design)
    assert "Website" in design_row
    assert f'<td class="field-revision">{design.revision}</td>' in design_row
    assert '<td class="field-page_count">2</td>' in design_row
    assert ">active</span>" in design_row

    purge = library.purge_after.strftime("%Y-%m-%d %H:%M")
    library_row = _row_html(html, library)
    assert ">deleted</span> · purge after " + purge in library_row
    assert '<td class="field-page_count">0</td>' in library_row


def _row_html(html: str, file: File) -> str:
    """The <tr> of the changelist that links to this file's change page."""
    rows = re.findall(r"<tr>.*?</tr>", html, flags=re.S)
    matches = [row for row in rows if f"/admin/filesync/file/{file.pk}/change/" in row]
    assert len(matches) == 1, matches
    return matches[0]


def test_deletion_state_filter(admin_client, design, library):
    services.soft_delete_file(file=library)

    deleted = admin_client.get(FILES, {"state": "deleted"})
    active = admin_client.get(FILES, {"state": "active"})
    everything = admin_client.get(FILES)

    assert [f.pk for f in result_rows(deleted)] == [library.pk]
    assert [f.pk for f in result_rows(active)] == [design.pk]
    assert {f.pk for f in result_rows(everything)} == {design.pk, library.pk}
    assert "Deleted (awaiting purge)" in everything.content.decode()


def test_search_by_name(admin_client, design, library):
    response = admin_client.get(FILES, {"q": "landing"})
    assert [f.pk for f in result_rows(response)] == [design.pk]

    nothing = admin_client.get(FILES, {"q": "no such file"})
    assert result_rows(nothing) == []


# --- File change page -----------------------------------------------------------------------


def test_file_change_page_renders_the_inlines(admin_client, admin_user, design, library, media):
    services.add_page(file=design, name="Hero section", objects={"a": {"type": "rect"}})
    services.link_library(file=design, library=library)
    services.create_snapshot(file=design, label="before launch", user=admin_user)

    response = admin_client.get(f"{FILES}{design.pk}/change/")

    assert response.status_code == 200
    inlines = {
        formset.opts.verbose_name_plural: formset
        for formset in response.context["inline_admin_formsets"]
    }
    assert set(inlines) == {"libraries used", "pages", "media objects", "snapshots"}
    assert [f.instance.library for f in inlines["libraries used"].formset.forms] == [library]
    assert [f.instance.name for f in inlines["pages"].formset.forms] == ["Hero section"]
    assert [f.instance for f in inlines["media objects"].formset.forms] == [media]
    assert [f.instance.label for f in inlines["snapshots"].formset.forms] == ["before launch"]

    html = response.content.decode()
    for text in ("Libraries used", "Brand library", "Hero section", "hero.png", "before launch"):
        assert text in html
    # The page inline shows how many objects the page holds.
    assert re.search(r'<td class="field-object_count">\s*<p>1</p>', html)


# --- File actions ---------------------------------------------------------------------------


def test_soft_delete_action_moves_files_to_the_trash(admin_client, design, library):
    response = run_action(admin_client, FILES, "soft_delete", design, library)

    assert response.status_code == 200
    assert "2 files moved to the trash." in messages_of(response)
    for file in (design, library):
        file.refresh_from_db()
        assert file.deleted_at is not None
        assert file.purge_after > file.deleted_at


def test_restore_action_brings_files_back(admin_client, design):
    services.soft_delete_file(file=design)

    response = run_action(admin_client, FILES, "restore", design)

    assert "1 file restored." in messages_of(response)
    design.refresh_from_db()
    assert design.deleted_at is None and design.purge_after is None


def test_snapshot_action_records_who_took_it(admin_client, admin_user, design):
    services.add_page(file=design, name="One")
    design.refresh_from_db()

    response = run_action(admin_client, FILES, "snapshot", design)

    assert "1 snapshot taken." in messages_of(response)
    snapshot = Snapshot.objects.get(file=design)
    assert snapshot.created_by == admin_user
    assert snapshot.label == "from admin"
    assert snapshot.revision == design.revision
    assert [p.name for p in snapshot.pages.all()] == ["One"]


# --- Snapshot admin -------------------------------------------------------------------------


def test_snapshot_restore_action_makes_a_new_revision_and_keeps_the_snapshot(admin_client, design):
    services.add_page(file=design, name="Kept")
    snapshot = services.create_snapshot(file=design, label="good state")
    services.add_page(file=design, name="Regretted")
    design.refresh_from_db()
    revision_before = design.revision

    response = run_action(admin_client, "/admin/filesync/snapshot/", "restore", snapshot)

    assert "1 snapshot(s) restored." in messages_of(response)
    design.refresh_from_db()
    assert design.revision == revision_before + 1
    assert [p.name for p in design.pages.all()] == ["Kept"]
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()


# --- Staff who are not superusers -----------------------------------------------------------


def test_staff_see_only_files_of_their_teams(staff_editor, design, foreign_file):
    client = Client()
    client.force_login(staff_editor)

    response = client.get(FILES)

    assert response.status_code == 200
    assert [f.pk for f in result_rows(response)] == [design.pk]
    assert "Foreign plans" not in response.content.decode()
    # Search does not reach past the scope either.
    assert result_rows(client.get(FILES, {"q": "Foreign"})) == []


def test_staff_can_open_their_own_files(staff_editor, design):
    client = Client()
    client.force_login(staff_editor)
    response = client.get(f"{FILES}{design.pk}/change/")
    assert response.status_code == 200
    assert response.context["original"] == design


def test_staff_are_sent_away_from_files_outside_their_teams(staff_editor, foreign_file):
    client = Client()
    client.force_login(staff_editor)

    response = client.get(f"{FILES}{foreign_file.pk}/change/")

    # Django admin treats an object outside get_queryset as missing: back to the index.
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    followed = client.get(response["Location"])
    assert any("doesn’t exist" in m for m in messages_of(followed))
    assert "Foreign plans" not in followed.content.decode()


def test_staff_actions_cannot_touch_files_outside_their_teams(staff_editor, foreign_file):
    client = Client()
    client.force_login(staff_editor)
    before = store_state()

    run_action(client, FILES, "soft_delete", foreign_file)
    run_action(client, FILES, "snapshot", foreign_file)
    run_action(client, FILES, "duplicate", foreign_file)

    assert store_state() == before


def test_staff_cannot_move_a_file_into_another_teams_project(staff_editor, design, foreign_file):
    client = Client()
    client.force_login(staff_editor)
    url = f"{FILES}{design.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in ("name", "features", "assets")}
    data.update(
        {
            "project": str(foreign_file.project_id),
            "is_library": "",
            **_empty_inline_management(client.get(url)),
        }
    )
    before = store_state()

    response = client.post(url, data)

    assert response.status_code == 200  # the form again, with an error
    assert "project" in response.context["adminform"].form.errors
    assert store_state() == before


def _empty_inline_management(response) -> dict:
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        prefix = inline.formset.prefix
        data[f"{prefix}-TOTAL_FORMS"] = "0"
        data[f"{prefix}-INITIAL_FORMS"] = "0"
    return data


def test_staff_filter_sidebar_lists_only_their_teams(
    staff_editor, owner, team, design, foreign_file
):
    second = services.create_team(name="Second studio", owner=owner)
    services.set_membership(team=second, user=staff_editor, role=Role.EDITOR)
    services.create_file(project=services.create_project(team=second, name="Blog"), name="Post")
    client = Client()
    client.force_login(staff_editor)

    html = client.get(FILES).content.decode()

    assert "By team" in html
    assert f">{team.name}</a>" in html
    assert ">Second studio</a>" in html
    assert "Elsewhere" not in html


def test_staff_see_only_projects_of_their_teams(staff_editor, owner, project, foreign_file):
    second = services.create_team(name="Second studio", owner=owner)
    services.set_membership(team=second, user=staff_editor, role=Role.EDITOR)
    blog = services.create_project(team=second, name="Blog")
    client = Client()
    client.force_login(staff_editor)

    response = client.get("/admin/filesync/project/")

    assert {p.pk for p in result_rows(response)} == {project.pk, blog.pk}
    html = response.content.decode()
    assert ">Second studio</a>" in html  # the team filter
    assert "Elsewhere" not in html and "Secret project" not in html


def test_superuser_filter_sidebar_lists_every_team_with_files(admin_client, design, foreign_file):
    html = admin_client.get(FILES).content.decode()
    assert ">Studio</a>" in html
    assert ">Elsewhere</a>" in html


def test_staff_cannot_link_a_library_of_another_team(staff_editor, design, other_team):
    foreign_library = services.create_file(
        project=services.create_project(team=other_team, name="Shared"),
        name="Their library",
        is_library=True,
    )
    staff_editor.user_permissions.add(Permission.objects.get(codename="add_filelibrary"))
    client = Client()
    client.force_login(staff_editor)
    url = f"{FILES}{design.pk}/change/"
    page = client.get(url)
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in ("name", "features", "assets")}
    data.update({"project": str(design.project_id), **_empty_inline_management(page)})
    data.update({"library_links-TOTAL_FORMS": "1", "library_links-0-library": foreign_library.pk})
    before = store_state()

    response = client.post(url, data)

    assert response.status_code == 200  # the form again, with an error
    assert store_state() == before
    # A library of their own team links fine through the same form.
    own = services.create_file(project=design.project, name="Our library", is_library=True)
    data["library_links-0-library"] = own.pk
    assert client.post(url, data).status_code == 302
    assert list(FileLibrary.objects.filter(file=design).values_list("library", flat=True)) == [
        own.pk
    ]


def test_project_autocomplete_for_staff_is_scoped(staff_editor, project, foreign_file):
    client = Client()
    client.force_login(staff_editor)
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "filesync", "model_name": "file", "field_name": "project", "term": ""},
    )
    assert response.status_code == 200
    ids = {r["id"] for r in response.json()["results"]}
    assert ids == {str(project.pk)}
    assert not Project.objects.filter(pk__in=ids, team__name="Elsewhere").exists()


# --- team roles and the other team-owned models ---------------------------------------------


def test_staff_with_only_the_viewer_role_cannot_change_files(staff_editor, viewer, design):
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.set(staff_editor.user_permissions.all())
    client = Client()
    client.force_login(viewer)
    assert client.get(FILES).status_code == 200
    before = store_state()
    response = run_action(client, FILES, "soft_delete", design, follow=False)
    assert response.status_code == 403
    assert store_state() == before


@pytest.mark.parametrize(
    "url", ["/admin/filesync/snapshot/", "/admin/filesync/page/", "/admin/filesync/mediaobject/"]
)
def test_staff_see_only_their_teams_snapshots_pages_and_media(
    staff_editor, design, foreign_file, png_bytes, url
):
    import io

    for file in (design, foreign_file):
        services.add_page(file=file, name=f"page of {file.name}")
        services.add_media(
            file=file, name=f"m-{file.name}", stream=io.BytesIO(png_bytes), content_type="image/png"
        )
        services.create_snapshot(file=file, label=f"snap of {file.name}")
    client = Client()
    client.force_login(staff_editor)
    rows = result_rows(client.get(url))
    assert len(rows) == 1
    assert rows[0].file_id == design.id


def test_staff_cannot_restore_another_teams_snapshot(staff_editor, foreign_file):
    services.add_page(file=foreign_file, name="kept")
    snapshot = services.create_snapshot(file=foreign_file)
    client = Client()
    client.force_login(staff_editor)
    before = store_state()
    run_action(client, "/admin/filesync/snapshot/", "restore", snapshot)
    run_action(client, "/admin/filesync/snapshot/", "restore_as_new_file", snapshot)
    assert store_state() == before


def test_staff_see_the_blobs_the_api_would_serve_them(staff_editor, media, make_user):
    """The team's media blob is listed; bytes another user sent alone are not, and their
    page answers like a blob that does not exist."""
    other = services.store_blob(stream=io.BytesIO(b"someone else's"), user=make_user("zed"))
    client = Client()
    client.force_login(staff_editor)
    listed = client.get("/admin/filesync/blob/").content.decode()
    assert media.blob_id in listed and other.sha256 not in listed
    hidden = client.get(f"/admin/filesync/blob/{other.sha256}/change/")
    missing = client.get(f"/admin/filesync/blob/{'0' * 64}/change/")
    assert (hidden.status_code, hidden["Location"]) == (missing.status_code, missing["Location"])


def test_linking_a_library_in_the_admin_goes_through_the_service(admin_client, design, library):
    page = admin_client.get(f"{FILES}{design.pk}/change/")
    data = _empty_inline_management(page)
    data.update(
        {
            "project": str(design.project_id),
            "name": design.name,
            "features": "[]",
            "assets": '{"components": {}, "colors": {}, "typographies": {}}',
            "library_links-TOTAL_FORMS": "1",
            "library_links-0-library": str(library.pk),
            "library_links-0-file": str(design.pk),
        }
    )
    response = admin_client.post(f"{FILES}{design.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    design.refresh_from_db()
    assert list(design.library_links.values_list("library_id", flat=True)) == [library.pk]
    assert design.revision == 1  # a link is not content


def test_content_past_the_limits_is_refused_by_the_admin_forms(admin_client, design, settings):
    """The admin writes rows directly: the models' clean() holds the services' rules."""
    settings.MAX_JSON_DEPTH = 3
    page = services.add_page(file=design, name="p", objects={"r": {"type": "rect"}})
    too_deep = '{"g": {"type": "group", "children": [[1]]}}'
    file_form = _empty_inline_management(admin_client.get(f"{FILES}{design.pk}/change/"))
    file_form.update(
        {
            "project": str(design.project_id),
            "name": design.name,
            "features": "[]",
            "assets": '{"components": ' + too_deep + "}",
        }
    )
    page_form = {
        "file": str(design.pk),
        "page_id": str(page.page_id),
        "index": "0",
        "name": "p",
        "object_map": too_deep,
    }
    before = store_state()
    file_answer = admin_client.post(f"{FILES}{design.pk}/change/", file_form)
    page_answer = admin_client.post(f"/admin/filesync/page/{page.pk}/change/", page_form)
    assert file_answer.status_code == page_answer.status_code == 200
    assert "Nested deeper than 3" in file_answer.context["adminform"].form.errors["assets"][0]
    assert "Nested deeper than 3" in page_answer.context["adminform"].form.errors["object_map"][0]
    assert store_state() == before
